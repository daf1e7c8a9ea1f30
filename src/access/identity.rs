//! Who a client is: [`Identity`], the reloadable `PROXY_HTPASSWD` user database ([`Users`]) with its
//! verification cache, and client certificates on the TLS listener (`TLS_CLIENT_CA_FILE`, user =
//! subject CN).
//!
//! bcrypt costs 50–100 ms per check at cost 10, so [`Users::check`] runs it on the blocking pool, at
//! most one per CPU at a time, coalesces concurrent checks of the same credential, and remembers
//! successes (5 minutes by default) and failures (1 second) keyed by a SHA-256 of the credential: a
//! remembered success costs one SHA-256 and one hash-map lookup. Both memories are bounded; the
//! oldest entries go first. A reload that changes the file forgets everything at once.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::htpasswd::{Htpasswd, HtpasswdError};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No credentials (or client authentication is off).
    Anonymous,
    /// An authenticated user: an htpasswd user name or a client certificate's subject CN.
    User(String),
}

impl Identity {
    /// The name for logs: the user name, or `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::User(name) => name,
        }
    }
}

/// How long a successful password check is remembered by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a failed password check is remembered (blunts a client retrying a wrong password).
const FAILURE_TTL: Duration = Duration::from_secs(1);
/// Remembered successes; the oldest is forgotten first.
const MAX_SUCCESSES: usize = 4096;
/// Remembered failures, kept apart so a flood of wrong passwords cannot push out successes.
const MAX_FAILURES: usize = 4096;
/// How often [`Users::spawn_reloader`] looks at the file.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Longest user name and password checked at all; longer ones fail without bcrypt.
const MAX_USER_LEN: usize = 255;
const MAX_PASSWORD_LEN: usize = 4096;

/// SHA-256 over (user, password).
type Key = [u8; 32];

fn cache_key(user: &str, password: &str) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    ctx.update(&(user.len() as u64).to_be_bytes());
    ctx.update(user.as_bytes());
    ctx.update(password.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// A bounded memory of verification outcomes.
#[derive(Default)]
struct Remembered {
    /// When each key was verified, and against which table generation.
    entries: HashMap<Key, (Instant, u64, u64)>,
    /// Keys in insertion order with their insertion number; stale pairs are skipped on eviction.
    /// Invariant: `order.len() <= 2 * cap` after every insert.
    order: VecDeque<(Key, u64)>,
    next: u64,
}

impl Remembered {
    fn fresh(&self, key: &Key, generation: u64, max_age: Duration, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|(at, g, _)| {
            *g == generation && now.saturating_duration_since(*at) < max_age
        })
    }

    fn insert(&mut self, key: Key, generation: u64, now: Instant, cap: usize) {
        self.next += 1;
        self.entries.insert(key, (now, generation, self.next));
        self.order.push_back((key, self.next));
        while self.entries.len() > cap || self.order.len() > 2 * cap {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|(_, _, s)| *s == seq) {
                self.entries.remove(&old);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The users table in force and its generation (bumped by each reload that changes it).
struct Table {
    htpasswd: Arc<Htpasswd>,
    generation: u64,
}

/// What identifies a version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }
}

/// One check in progress: concurrent checks of the same credential wait for it.
type Inflight = Arc<OnceCell<(bool, u64)>>;

/// The `PROXY_HTPASSWD` users, reloadable while the proxy runs.
pub struct Users {
    path: PathBuf,
    table: RwLock<Table>,
    /// Mirrors `table.generation` for the lock-free check of remembered outcomes.
    generation: AtomicU64,
    successes: RwLock<Remembered>,
    failures: Mutex<Remembered>,
    inflight: Mutex<HashMap<Key, Inflight>>,
    /// One permit per bcrypt run allowed at once.
    bcrypt_slots: Arc<Semaphore>,
    /// bcrypt runs started (for tests and metrics).
    bcrypt_runs: AtomicU64,
    /// The file as last read (or tried).
    stamp: Mutex<Option<FileStamp>>,
    success_ttl: Duration,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("path", &self.path)
            .field("users", &self.len())
            .finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads and parses the file; also returns its stamp as seen just before reading (so a change
/// during the read is seen by the next poll).
fn read_file(path: &Path) -> (Option<FileStamp>, Result<Htpasswd, HtpasswdError>) {
    let stamp = std::fs::metadata(path).ok().map(|m| FileStamp::of(&m));
    (stamp, Htpasswd::load(path))
}

impl Users {
    /// Reads and parses the htpasswd file at `path`.
    pub fn load(path: &Path) -> Result<Users, HtpasswdError> {
        let (stamp, parsed) = read_file(path);
        let htpasswd = parsed?;
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Users {
            path: path.to_owned(),
            table: RwLock::new(Table {
                htpasswd: Arc::new(htpasswd),
                generation: 0,
            }),
            generation: AtomicU64::new(0),
            successes: RwLock::default(),
            failures: Mutex::default(),
            inflight: Mutex::default(),
            bcrypt_slots: Arc::new(Semaphore::new(slots)),
            bcrypt_runs: AtomicU64::new(0),
            stamp: Mutex::new(stamp),
            success_ttl: DEFAULT_CACHE_TTL,
        })
    }

    /// Remembers successful checks for `ttl` instead of [`DEFAULT_CACHE_TTL`] (zero: never).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Users {
        self.success_ttl = ttl;
        self
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of users in force.
    pub fn len(&self) -> usize {
        read(&self.table).htpasswd.len()
    }

    /// True if no user can log in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the file. On success the new users are in force at once — remembered checks are
    /// forgotten if anything changed — and their number is returned; on error the previous users
    /// stay in force and the error is returned.
    pub fn reload(&self) -> Result<usize, HtpasswdError> {
        let (stamp, parsed) = read_file(&self.path);
        // Recorded on failure too, so a broken file is reported once, not at every poll.
        *lock(&self.stamp) = stamp;
        let htpasswd = parsed?;
        let count = htpasswd.len();
        let mut table = write(&self.table);
        if *table.htpasswd == htpasswd {
            return Ok(count);
        }
        table.htpasswd = Arc::new(htpasswd);
        table.generation += 1;
        self.generation.store(table.generation, Ordering::Release);
        drop(table);
        write(&self.successes).clear();
        lock(&self.failures).clear();
        Ok(count)
    }

    /// The identity for a `user`/`password` pair, or `None` if the pair is wrong.
    pub async fn check(&self, user: &str, password: &str) -> Option<Identity> {
        if user.is_empty() || user.len() > MAX_USER_LEN || password.len() > MAX_PASSWORD_LEN {
            return None;
        }
        let key = cache_key(user, password);
        let generation = self.generation.load(Ordering::Acquire);
        let now = Instant::now();
        if read(&self.successes).fresh(&key, generation, self.success_ttl, now) {
            return Some(Identity::User(user.to_owned()));
        }
        if lock(&self.failures).fresh(&key, generation, FAILURE_TTL, now) {
            return None;
        }
        let (ok, verified_generation) = self.verify_once(key, user, password).await;
        let now = Instant::now();
        if ok {
            write(&self.successes).insert(key, verified_generation, now, MAX_SUCCESSES);
            Some(Identity::User(user.to_owned()))
        } else {
            lock(&self.failures).insert(key, verified_generation, now, MAX_FAILURES);
            None
        }
    }

    /// Runs bcrypt once for all concurrent checks of the same credential.
    async fn verify_once(&self, key: Key, user: &str, password: &str) -> (bool, u64) {
        let cell = lock(&self.inflight).entry(key).or_default().clone();
        // Removes the entry however this future ends (also when it is dropped), so the map holds
        // only checks somebody is waiting for.
        let _guard = InflightGuard {
            users: self,
            key,
            cell: cell.clone(),
        };
        *cell
            .get_or_init(|| self.verify_blocking(user, password))
            .await
    }

    async fn verify_blocking(&self, user: &str, password: &str) -> (bool, u64) {
        let Ok(permit) = self.bcrypt_slots.clone().acquire_owned().await else {
            return (false, u64::MAX);
        };
        let (htpasswd, generation) = {
            let table = read(&self.table);
            (table.htpasswd.clone(), table.generation)
        };
        let (user, password) = (user.to_owned(), password.to_owned());
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            htpasswd.verify(&user, &password)
        })
        .await
        .unwrap_or(false);
        (ok, generation)
    }

    /// Reloads the file on `SIGHUP` and whenever it changes on disk (modification time, size or
    /// inode, looked at every 2 seconds), logging the outcome. From this call on, `SIGHUP` no longer
    /// ends the process. Must be called inside a Tokio runtime.
    pub fn spawn_reloader(self: Arc<Self>) {
        // Dropping the handle detaches the task; it runs as long as the runtime.
        drop(self.spawn_reloader_with(POLL_EVERY));
    }

    /// [`Users::spawn_reloader`] looking at the file every `poll`; the task ends when the handle is
    /// aborted.
    pub fn spawn_reloader_with(self: Arc<Self>, poll: Duration) -> tokio::task::JoinHandle<()> {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed before returning, so a SIGHUP right after this call is already handled.
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; PROXY_HTPASSWD is still reloaded when it changes");
                None
            }
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let reason = tokio::select! {
                    () = next_signal(&mut hangup) => "SIGHUP",
                    _ = tick.tick() => {
                        if !self.changed_on_disk().await {
                            continue;
                        }
                        "file changed"
                    }
                };
                let users = self.clone();
                let outcome = tokio::task::spawn_blocking(move || users.reload()).await;
                let path = self.path.display();
                match outcome {
                    Ok(Ok(count)) => {
                        tracing::info!(path = %path, users = count, reason, "PROXY_HTPASSWD reloaded");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(path = %path, error = %e, reason, "PROXY_HTPASSWD not reloaded; the previous users stay in force");
                    }
                    Err(e) => {
                        tracing::warn!(path = %path, error = %e, reason, "PROXY_HTPASSWD reload failed");
                    }
                }
            }
        })
    }

    async fn changed_on_disk(&self) -> bool {
        let now = tokio::fs::metadata(&self.path)
            .await
            .ok()
            .map(|m| FileStamp::of(&m));
        *lock(&self.stamp) != now
    }
}

/// Waits for the next signal; forever if there is no handler or it closed.
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(s) = signal
        && s.recv().await.is_some()
    {
        return;
    }
    std::future::pending::<()>().await;
}

struct InflightGuard<'a> {
    users: &'a Users,
    key: Key,
    cell: Inflight,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = lock(&self.users.inflight);
        if inflight
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            inflight.remove(&self.key);
        }
    }
}

/// Why the client CA bundle (`TLS_CLIENT_CA_FILE`) is unusable.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: no certificate found (expected PEM `BEGIN CERTIFICATE` blocks)", .path.display())]
    NoCertificates { path: PathBuf },
    #[error("{}: {reason}", .path.display())]
    Verifier { path: PathBuf, reason: String },
}

/// Longest certificate user name accepted, in bytes.
const MAX_CN_LEN: usize = 255;

/// The subject common name of a (DER) client certificate, if it has a usable one: the first CN, a
/// string without control characters, 1 to 255 bytes. The certificate's chain is not checked here:
/// only call this for certificates the TLS handshake verified ([`client_verifier`]).
pub fn cert_user(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    let valid = !cn.is_empty()
        && cn.len() <= MAX_CN_LEN
        && !cn.chars().any(char::is_control)
        && cn.trim() == cn;
    valid.then(|| cn.to_owned())
}

/// A verifier for client certificates signed by the CAs in the PEM bundle `ca_file`. Clients
/// without a certificate are still let through the handshake (they may log in with a password);
/// a client presenting a certificate that does not verify is refused.
pub fn client_verifier(ca_file: &Path) -> Result<Arc<dyn ClientCertVerifier>, IdentityError> {
    let bytes = std::fs::read(ca_file).map_err(|source| IdentityError::Io {
        path: ca_file.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| IdentityError::Pem {
            path: ca_file.to_owned(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| IdentityError::Pem {
            path: ca_file.to_owned(),
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(IdentityError::NoCertificates {
            path: ca_file.to_owned(),
        });
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| IdentityError::Verifier {
            path: ca_file.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests;
