//! TLS: the proxy's certificate authority (created once in `CA_DIR`, reused after), leaf
//! certificates minted on demand per intercepted host (by its lower-case name) and cached until
//! shortly before they expire — at most [`LEAF_CACHE_SIZE`] of them, least recently used out first —
//! and the rustls configurations built from them (server side for clients, client side for upstreams).
//! An existing `ca.key` may be encrypted as the seed's is (see [`ca_key`]).

pub mod ca_key;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::secret::Secret;

/// Lifetime of a minted leaf certificate.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// A cached leaf is re-minted once less than this is left.
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Lifetime of a newly created CA.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf certificates kept in memory, at most.
pub const LEAF_CACHE_SIZE: usize = 1024;
/// Backdating of `notBefore`, for clients whose clocks are a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Errors of the TLS layer; all are configuration or internal faults.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "CA directory {dir} holds only one of ca.crt and ca.key; restore the other or remove both"
    )]
    HalfCa { dir: PathBuf },
    #[error("{path} is not a usable CA: {reason}")]
    BadCa { path: PathBuf, reason: String },
    /// `ca.key` cannot be read or opened (e.g. a wrong passphrase).
    #[error("CA key {path} {source}")]
    CaKey {
        path: PathBuf,
        source: ca_key::KeyError,
    },
    #[error("cannot mint a certificate for {host:?}: {reason}")]
    Mint { host: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
}

/// The rustls crypto provider used everywhere in the proxy.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Leaf {
    config: Arc<ServerConfig>,
    not_after: OffsetDateTime,
    /// When it was last used, in [`LeafCache::clock`] ticks; its key in [`LeafCache::by_use`].
    used: u64,
}

/// Leaves by host name, bounded, least recently used evicted first.
struct LeafCache {
    /// Invariant: `leaves.len() <= capacity`, and `by_use` holds exactly one `(leaf.used, host)`
    /// per entry of `leaves`.
    leaves: HashMap<String, Leaf>,
    by_use: BTreeMap<u64, String>,
    clock: u64,
    capacity: usize,
}

impl LeafCache {
    fn new(capacity: usize) -> LeafCache {
        LeafCache {
            leaves: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            capacity: capacity.max(1),
        }
    }

    /// The leaf for `host` if it is still good at `now`, marked used.
    fn get(&mut self, host: &str, now: OffsetDateTime) -> Option<Arc<ServerConfig>> {
        self.clock += 1;
        let leaf = self.leaves.get_mut(host)?;
        if leaf.not_after - now <= LEAF_RENEW_BEFORE {
            return None;
        }
        self.by_use.remove(&leaf.used);
        leaf.used = self.clock;
        self.by_use.insert(leaf.used, host.to_owned());
        Some(leaf.config.clone())
    }

    fn insert(&mut self, host: String, config: Arc<ServerConfig>, not_after: OffsetDateTime) {
        self.clock += 1;
        if let Some(old) = self.leaves.remove(&host) {
            self.by_use.remove(&old.used);
        }
        while self.leaves.len() >= self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.leaves.remove(&oldest);
        }
        self.by_use.insert(self.clock, host.clone());
        self.leaves.insert(
            host,
            Leaf {
                config,
                not_after,
                used: self.clock,
            },
        );
    }

    fn len(&self) -> usize {
        self.leaves.len()
    }
}

/// The proxy's CA and its cache of leaf certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    provider: Arc<CryptoProvider>,
    /// Server configurations per lower-case host name, each holding a leaf valid for that name.
    leaves: Mutex<LeafCache>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Loads `ca.crt` and `ca.key` from `dir`, or creates them (key mode 0600) if neither exists.
    /// An encrypted `ca.key` is opened with the seed's passphrase.
    pub fn load_or_create(dir: &Path) -> Result<CertAuthority, TlsError> {
        CertAuthority::load_or_create_with(dir, None)
    }

    /// [`CertAuthority::load_or_create`], an encrypted `ca.key` opened with `passphrase`
    /// (`CA_KEY_PASSPHRASE`), or the seed's when `None`.
    pub fn load_or_create_with(
        dir: &Path,
        passphrase: Option<&Secret>,
    ) -> Result<CertAuthority, TlsError> {
        let crt_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        match (crt_path.exists(), key_path.exists()) {
            (true, true) => {
                let ca_pem = fs::read_to_string(&crt_path).map_err(io(&crt_path))?;
                let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
                let der =
                    ca_key::pkcs8_der(&key_pem, passphrase).map_err(|source| TlsError::CaKey {
                        path: key_path.clone(),
                        source,
                    })?;
                let key = KeyPair::try_from(&PrivatePkcs8KeyDer::from(der)).map_err(|e| {
                    TlsError::BadCa {
                        path: key_path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let issuer =
                    Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| TlsError::BadCa {
                        path: crt_path.clone(),
                        reason: e.to_string(),
                    })?;
                restrict_permissions(&key_path)?;
                Ok(CertAuthority::new(issuer, ca_pem))
            }
            (false, false) => {
                fs::create_dir_all(dir).map_err(io(dir))?;
                let key = KeyPair::generate().map_err(|e| TlsError::BadCa {
                    path: key_path.clone(),
                    reason: e.to_string(),
                })?;
                let params = ca_params();
                let cert = params.self_signed(&key).map_err(|e| TlsError::BadCa {
                    path: crt_path.clone(),
                    reason: e.to_string(),
                })?;
                write_private(&key_path, key.serialize_pem().as_bytes())?;
                let ca_pem = cert.pem();
                fs::write(&crt_path, &ca_pem).map_err(io(&crt_path))?;
                tracing::info!(dir = %dir.display(), "created a new CA; clients must trust {}", crt_path.display());
                Ok(CertAuthority::new(Issuer::new(params, key), ca_pem))
            }
            _ => Err(TlsError::HalfCa {
                dir: dir.to_path_buf(),
            }),
        }
    }

    fn new(issuer: Issuer<'static, KeyPair>, ca_pem: String) -> CertAuthority {
        CertAuthority {
            issuer,
            ca_pem,
            provider: provider(),
            leaves: Mutex::new(LeafCache::new(LEAF_CACHE_SIZE)),
        }
    }

    /// The CA certificate, PEM, as served at `GET /ca.crt`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server configuration presenting a leaf for `host` (a DNS name or an IP literal; case does
    /// not matter), minted on first use and re-minted shortly before it expires.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let host = host.to_ascii_lowercase();
        let now = OffsetDateTime::now_utc();
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = leaves.get(&host, now) {
            return Ok(config);
        }
        let (certified, not_after) = self.mint(std::slice::from_ref(&host))?;
        let config = self.server_config_from(certified)?;
        leaves.insert(host, config.clone(), not_after);
        Ok(config)
    }

    /// Leaves currently cached.
    pub fn cached_leaves(&self) -> usize {
        self.leaves.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Mints a leaf for `names` (the first is the common name); returns it and its expiry.
    pub fn mint(&self, names: &[String]) -> Result<(Arc<CertifiedKey>, OffsetDateTime), TlsError> {
        let first = names.first().cloned().unwrap_or_default();
        let err = |reason: String| TlsError::Mint {
            host: first.clone(),
            reason,
        };
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| err(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        let not_after = now + LEAF_VALIDITY;
        params.not_after = not_after;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, first.clone());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| err(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = self.provider.key_provider.load_private_key(key_der)?;
        Ok((
            Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)),
            not_after,
        ))
    }

    /// A server configuration (HTTP/1.1 only) presenting `certified`.
    pub fn server_config_from(
        &self,
        certified: Arc<CertifiedKey>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        self.listener_config(certified, None)
    }

    /// A server configuration for `certified`, asking clients for certificates checked by
    /// `clients` when given (`TLS_CLIENT_CA_FILE`; clients without one may still connect).
    pub fn listener_config(
        &self,
        certified: Arc<CertifiedKey>,
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match clients {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(FixedCert(certified)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Loads a certificate chain and key from PEM files (for `TLS_CERT_FILE`/`TLS_KEY_FILE`).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls_pki_types::pem::Error| TlsError::Pem {
            path,
            reason: e.to_string(),
        }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            reason: "no certificate found".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let signing_key = provider().key_provider.load_private_key(key_der)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

/// Presents one certificate whatever the client hello says.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "registry-proxy CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "registry-proxy");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params
}

fn random_serial() -> rcgen::SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // A failing system RNG would also fail key generation right after; a zero serial is harmless.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

fn restrict_permissions(path: &Path) -> Result<(), TlsError> {
    restrict_key_permissions(path, "CA key").map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Narrows a private key file (`what`: "CA key", "token key") to mode 0600 when its group or others
/// may read it. A file whose mode cannot be changed — on a read-only mount such as a Kubernetes
/// Secret volume (root-owned, mode 0440 for the pod's `fsGroup`), or owned by another user — is used
/// as it is, with a warning: whoever provides it chose its permissions.
pub(crate) fn restrict_key_permissions(path: &Path, what: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            match fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
                Ok(()) => tracing::warn!(
                    path = %path.display(),
                    "{what} was readable by group or others; set its mode to 0600"
                ),
                Err(e) if mode_cannot_change(&e) => tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:04o}"),
                    error = %e,
                    "{what} is readable by group or others and its mode cannot be changed (a read-only mount?); using it as it is"
                ),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `chmod` failed because the file's mode is not the proxy's to change (EROFS, EPERM), rather than
/// because something is wrong with the file.
fn mode_cannot_change(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = CertAuthority::load_or_create(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = CertAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert!(first.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn a_key_mode_that_is_not_ours_to_change_is_tolerated() {
        use std::io::{Error, ErrorKind};
        // what chmod returns on a read-only mount (a Secret volume) and on a file of another user
        assert!(mode_cannot_change(&Error::from_raw_os_error(30))); // EROFS
        assert!(mode_cannot_change(&Error::from_raw_os_error(1))); // EPERM
        assert!(!mode_cannot_change(&Error::from_raw_os_error(2))); // ENOENT
        assert!(!mode_cannot_change(&Error::from_raw_os_error(5))); // EIO
        assert!(!mode_cannot_change(&Error::from(ErrorKind::NotFound)));
    }

    #[test]
    fn a_readable_key_is_narrowed_to_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        CertAuthority::load_or_create(dir.path()).unwrap();
        let key = dir.path().join("ca.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        CertAuthority::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.crt"), "x").unwrap();
        assert!(matches!(
            CertAuthority::load_or_create(dir.path()),
            Err(TlsError::HalfCa { .. })
        ));
    }

    #[test]
    fn certificate_files_load_for_the_tls_listener() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["mirror.example".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        fs::write(&cert_path, format!("{}{}", cert.pem(), ca.ca_pem())).unwrap();
        fs::write(&key_path, key.serialize_pem()).unwrap();
        let certified = load_certified_key(&cert_path, &key_path).unwrap();
        assert_eq!(certified.cert.len(), 2, "leaf and chain");
        assert!(ca.server_config_from(certified).is_ok());
        fs::write(&cert_path, "not a certificate").unwrap();
        assert!(matches!(
            load_certified_key(&cert_path, &key_path),
            Err(TlsError::Pem { .. })
        ));
    }

    #[test]
    fn case_variants_share_one_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        let name = "registry.example";
        let letters: Vec<usize> = (0..name.len())
            .filter(|i| name.as_bytes()[*i].is_ascii_alphabetic())
            .collect();
        let first = ca.server_config(name).unwrap();
        for variant in 0..3000u32 {
            let mut bytes = name.as_bytes().to_vec();
            for (bit, i) in letters.iter().enumerate() {
                if variant & (1 << bit) != 0 {
                    bytes[*i] = bytes[*i].to_ascii_uppercase();
                }
            }
            let host = String::from_utf8(bytes).unwrap();
            let config = ca.server_config(&host).unwrap();
            assert!(Arc::ptr_eq(&first, &config), "{host}");
        }
        assert_eq!(ca.cached_leaves(), 1);
    }

    #[test]
    fn the_leaf_cache_is_bounded_and_keeps_recent_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertAuthority::load_or_create(dir.path()).unwrap();
        ca.leaves = Mutex::new(LeafCache::new(8));
        let kept = ca.server_config("kept.test").unwrap();
        for i in 0..20 {
            ca.server_config(&format!("host{i}.test")).unwrap();
            // Used all along, so never the least recently used.
            assert!(Arc::ptr_eq(&kept, &ca.server_config("KEPT.test").unwrap()));
            assert!(ca.cached_leaves() <= 8);
        }
        assert_eq!(ca.cached_leaves(), 8);
        // The oldest names were evicted: asking again mints a new leaf.
        let host0 = ca.server_config("host0.test").unwrap();
        assert!(!Arc::ptr_eq(
            &host0,
            &ca.server_config("host1.test").unwrap()
        ));
        assert_eq!(ca.cached_leaves(), 8);
    }

    #[test]
    fn more_names_than_the_bound_keep_the_cache_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        for i in 0..(LEAF_CACHE_SIZE + 50) {
            ca.server_config(&format!("h{i}.test")).unwrap();
        }
        assert_eq!(ca.cached_leaves(), LEAF_CACHE_SIZE);
    }

    #[test]
    fn leaf_cache_evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        let config = ca.server_config("x.test").unwrap();
        let later = OffsetDateTime::now_utc() + LEAF_VALIDITY;
        let now = OffsetDateTime::now_utc();
        let mut cache = LeafCache::new(3);
        for host in ["a", "b", "c"] {
            cache.insert(host.into(), config.clone(), later);
        }
        assert!(cache.get("a", now).is_some());
        cache.insert("d".into(), config.clone(), later);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("b", now).is_none(), "b was least recently used");
        assert!(cache.get("a", now).is_some() && cache.get("c", now).is_some());
        // Re-inserting a present name does not evict another.
        cache.insert("a".into(), config.clone(), later);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("d", now).is_some());
        // A leaf close to expiry is not served.
        cache.insert("old".into(), config, now + LEAF_RENEW_BEFORE);
        assert!(cache.get("old", now).is_none());
        assert_eq!(cache.by_use.len(), cache.leaves.len());
    }

    #[test]
    fn leaves_are_cached_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        let a = ca.server_config("registry.test").unwrap();
        let b = ca.server_config("registry.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = ca.server_config("127.0.0.1").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
