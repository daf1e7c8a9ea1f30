use std::io::Write;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::UnixTime;

use super::*;

// `htpasswd -Bbn USER PASSWORD` (cost 5).
const ALICE: &str = "alice:$2y$05$ot2yBkQ1mShpCZWpts1jN.22t4R8gJXF5TCSA1lP0O/jFrCWkqIyq"; // wonderland
const BOB: &str = "bob:$2y$05$/cOXSfSED1DKn9szgwyfU.g9sWBIAVXXrgOIRQ8ZBqIIYQQJmqxdK"; // "b:o:b pass"
/// alice with password `c` (carol's hash).
const ALICE_NEW: &str = "alice:$2y$05$pGyUm5soW0kG9Wow5ASG8eDmNsD4cDT5cy1XIE0ALgaNsZb1cmNVu";

fn user(name: &str) -> Option<Identity> {
    Some(Identity::User(name.to_owned()))
}

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// Replaces the file's content through a new inode (as editors and Kubernetes do).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// How many bcrypt verifications the users database has started.
fn bcrypt_runs(users: &Users) -> u64 {
    users.bcrypt_runs.load(Ordering::Relaxed)
}

#[test]
fn identity_names() {
    assert_eq!(Identity::Anonymous.name(), "anonymous");
    assert_eq!(Identity::User("alice".into()).name(), "alice");
}

#[tokio::test]
async fn checks_passwords_and_remembers_successes() {
    let file = file_with(&format!("{ALICE}\n{BOB}\n"));
    let users = Users::load(file.path()).unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users.check("alice", "wonderland").await, user("alice"));
    assert_eq!(bcrypt_runs(&users), 1);
    // Remembered: no second bcrypt run.
    for _ in 0..3 {
        assert_eq!(users.check("alice", "wonderland").await, user("alice"));
    }
    assert_eq!(bcrypt_runs(&users), 1);
    assert_eq!(users.check("bob", "b:o:b pass").await, user("bob"));
    assert_eq!(bcrypt_runs(&users), 2);
    // A wrong password is not let in by alice's remembered success.
    assert_eq!(users.check("alice", "wonderlan").await, None);
    assert_eq!(users.check("alice", "wonderland ").await, None);
    assert_eq!(users.check("bob", "wonderland").await, None);
    assert_eq!(users.check("alicewonderland", "").await, None);
    // Unknown users cost a bcrypt run too.
    let before = bcrypt_runs(&users);
    assert_eq!(users.check("mallory", "wonderland").await, None);
    assert_eq!(bcrypt_runs(&users), before + 1);
    // Absurd input is refused without bcrypt.
    let before = bcrypt_runs(&users);
    assert_eq!(users.check("", "wonderland").await, None);
    assert_eq!(users.check("alice", &"x".repeat(5000)).await, None);
    assert_eq!(users.check(&"a".repeat(300), "x").await, None);
    assert_eq!(bcrypt_runs(&users), before);
}

#[tokio::test]
async fn failures_are_remembered_briefly() {
    let file = file_with(ALICE);
    let users = Users::load(file.path()).unwrap();
    assert_eq!(users.check("alice", "guess").await, None);
    assert_eq!(users.check("alice", "guess").await, None);
    assert_eq!(bcrypt_runs(&users), 1);
    tokio::time::sleep(FAILURE_TTL + Duration::from_millis(100)).await;
    assert_eq!(users.check("alice", "guess").await, None);
    assert_eq!(bcrypt_runs(&users), 2);
}

#[tokio::test]
async fn successes_expire() {
    let file = file_with(ALICE);
    let users = Users::load(file.path())
        .unwrap()
        .with_cache_ttl(Duration::from_millis(300));
    assert_eq!(users.check("alice", "wonderland").await, user("alice"));
    assert_eq!(users.check("alice", "wonderland").await, user("alice"));
    assert_eq!(bcrypt_runs(&users), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(users.check("alice", "wonderland").await, user("alice"));
    assert_eq!(bcrypt_runs(&users), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_one_bcrypt_run() {
    let file = file_with(ALICE);
    let users = Users::load(file.path()).unwrap();
    let checks = (0..8).map(|_| users.check("alice", "wonderland"));
    let results = futures_util::future::join_all(checks).await;
    assert!(results.iter().all(|r| *r == user("alice")), "{results:?}");
    assert_eq!(bcrypt_runs(&users), 1);
    assert!(lock(&users.inflight).is_empty());
}

#[tokio::test]
async fn dropped_checks_leave_nothing_behind() {
    let file = file_with(ALICE);
    let users = Users::load(file.path()).unwrap();
    for i in 0..50 {
        let password = format!("guess{i}");
        // Polled once (so it registers), then dropped.
        let mut check = std::pin::pin!(users.check("alice", &password));
        let _ = check
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    }
    assert!(lock(&users.inflight).is_empty());
}

#[tokio::test]
async fn reload_applies_changes_at_once() {
    let file = file_with(&format!("{ALICE}\n{BOB}\n"));
    let users = Users::load(file.path()).unwrap();
    assert_eq!(users.check("alice", "wonderland").await, user("alice"));
    assert_eq!(users.check("bob", "b:o:b pass").await, user("bob"));
    assert_eq!(bcrypt_runs(&users), 2);

    // Unchanged content: the remembered checks stay.
    std::fs::write(file.path(), format!("# same users\n{ALICE}\n{BOB}\n")).unwrap();
    assert_eq!(users.reload().unwrap(), 2);
    assert_eq!(users.check("alice", "wonderland").await, user("alice"));
    assert_eq!(bcrypt_runs(&users), 2);

    // alice's password changed and bob removed: both stop working at once despite the memory.
    std::fs::write(file.path(), format!("{ALICE_NEW}\n")).unwrap();
    assert_eq!(users.reload().unwrap(), 1);
    assert_eq!(users.len(), 1);
    assert_eq!(users.check("alice", "wonderland").await, None);
    assert_eq!(users.check("bob", "b:o:b pass").await, None);
    assert_eq!(users.check("alice", "c").await, user("alice"));

    // A broken file keeps the users in force.
    std::fs::write(file.path(), "alice:$apr1$xDw3lK5a$SfQjmUAe4DiU/Ebk4O/Qj1\n").unwrap();
    let e = users.reload().unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("MD5"), "{e}");
    assert_eq!(users.len(), 1);
    assert_eq!(users.check("alice", "c").await, user("alice"));
    std::fs::remove_file(file.path()).unwrap();
    assert!(matches!(users.reload(), Err(HtpasswdError::Io { .. })));
    assert_eq!(users.check("alice", "c").await, user("alice"));
}

#[tokio::test]
async fn a_check_racing_a_reload_is_not_remembered() {
    let file = file_with(ALICE);
    let users = Users::load(file.path()).unwrap();
    // A success verified against generation 0, recorded after the reload bumped it.
    let key = cache_key("alice", "wonderland");
    std::fs::write(file.path(), ALICE_NEW).unwrap();
    users.reload().unwrap();
    write(&users.successes).insert(key, 0, Instant::now(), MAX_SUCCESSES);
    assert_eq!(users.check("alice", "wonderland").await, None);
}

#[test]
fn load_errors() {
    let e = Users::load(Path::new("/nonexistent/htpasswd")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/htpasswd"), "{e}");
    let file = file_with("alice:{SHA}EfatjsUqKYSrqv18O1FlA3hcIHI=\n");
    let e = Users::load(file.path()).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("\"alice\""), "{e}");
    assert!(!e.contains("EfatjsUq"), "{e}");
    let file = file_with("");
    std::fs::write(file.path(), b"alice:\xff\n").unwrap();
    assert!(matches!(
        Users::load(file.path()),
        Err(HtpasswdError::NotUtf8)
    ));
}

#[test]
fn memories_are_bounded() {
    let now = Instant::now();
    let mut remembered = Remembered::default();
    for i in 0u32..10_000 {
        let key = cache_key("u", &i.to_string());
        remembered.insert(key, 0, now, 100);
        assert!(remembered.len() <= 100);
        assert!(remembered.order.len() <= 200);
    }
    // The newest stay, the oldest went.
    assert!(remembered.fresh(&cache_key("u", "9999"), 0, Duration::from_secs(1), now));
    assert!(remembered.fresh(&cache_key("u", "9900"), 0, Duration::from_secs(1), now));
    assert!(!remembered.fresh(&cache_key("u", "9899"), 0, Duration::from_secs(1), now));
    assert!(!remembered.fresh(&cache_key("u", "0"), 0, Duration::from_secs(1), now));
    // The same key over and over does not grow the order queue either.
    let mut remembered = Remembered::default();
    for _ in 0..10_000 {
        remembered.insert(cache_key("u", "p"), 0, now, 100);
        assert!(remembered.order.len() <= 200);
    }
    assert_eq!(remembered.len(), 1);
    // Generations and ages.
    assert!(remembered.fresh(&cache_key("u", "p"), 0, Duration::from_secs(1), now));
    assert!(!remembered.fresh(&cache_key("u", "p"), 1, Duration::from_secs(1), now));
    let later = now + Duration::from_secs(2);
    assert!(!remembered.fresh(&cache_key("u", "p"), 0, Duration::from_secs(1), later));
}

#[test]
fn cache_keys_separate_user_and_password() {
    assert_ne!(cache_key("ab", "c"), cache_key("a", "bc"));
    assert_ne!(cache_key("a", "b"), cache_key("b", "a"));
    assert_eq!(cache_key("a", "b"), cache_key("a", "b"));
}

/// Waits up to 10 s for `cond`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn reloader_follows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, ALICE).unwrap();
    let users = Arc::new(Users::load(&path).unwrap());
    let task = users.clone().spawn_reloader_with(Duration::from_millis(50));
    assert_eq!(users.check("alice", "wonderland").await, user("alice"));

    replace(&path, &format!("{ALICE}\n{BOB}\n"));
    eventually("bob added", || users.len() == 2).await;
    assert_eq!(users.check("bob", "b:o:b pass").await, user("bob"));

    // A broken file is ignored; the next good one is picked up.
    replace(&path, "garbage");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(users.len(), 2);
    replace(&path, ALICE_NEW);
    eventually("bob removed", || users.len() == 1).await;
    assert_eq!(users.check("alice", "wonderland").await, None);
    task.abort();
}

#[tokio::test]
async fn reloader_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, ALICE).unwrap();
    let users = Arc::new(Users::load(&path).unwrap());
    // Polling practically never: only SIGHUP can cause the reload.
    let task = users.clone().spawn_reloader_with(Duration::from_secs(3600));
    // Let the interval's immediate first tick pass before the file changes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    replace(&path, &format!("{ALICE}\n{BOB}\n"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(users.len(), 1, "reloaded without a signal");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP reload", || users.len() == 2).await;
    task.abort();
}

/// A CA and a client certificate it signed for `cn`.
fn client_pki(cn: Option<&str>) -> (String, Vec<u8>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "test client CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::OrganizationName, "builders");
    if let Some(cn) = cn {
        leaf.distinguished_name.push(DnType::CommonName, cn);
    }
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.der().to_vec())
}

#[test]
fn certificate_user_is_the_subject_cn() {
    let (_, der) = client_pki(Some("builder1"));
    assert_eq!(cert_user(&der).as_deref(), Some("builder1"));
    let (_, der) = client_pki(Some("jürgen"));
    assert_eq!(cert_user(&der).as_deref(), Some("jürgen"));
    let (_, der) = client_pki(None);
    assert_eq!(cert_user(&der), None);
    let (_, der) = client_pki(Some("bad\nname"));
    assert_eq!(cert_user(&der), None);
    let (_, der) = client_pki(Some(""));
    assert_eq!(cert_user(&der), None);
    assert_eq!(cert_user(b""), None);
    assert_eq!(cert_user(b"\x30\x82\xff\xff garbage"), None);
    let (_, der) = client_pki(Some("builder1"));
    for cut in [1, 10, der.len() / 2, der.len() - 1] {
        assert_eq!(cert_user(&der[..cut]), None, "cut at {cut}");
    }
}

#[test]
fn client_verifier_from_a_pem_bundle() {
    let (ca_pem, der) = client_pki(Some("builder1"));
    let (other_ca, other_der) = client_pki(Some("intruder"));
    let file = file_with(&format!("# our CAs\n{ca_pem}"));
    let verifier = client_verifier(file.path()).unwrap();
    assert!(verifier.offer_client_auth());
    assert!(
        !verifier.client_auth_mandatory(),
        "password users need no certificate"
    );
    let now = UnixTime::now();
    assert!(
        verifier
            .verify_client_cert(&CertificateDer::from(der), &[], now)
            .is_ok()
    );
    assert!(
        verifier
            .verify_client_cert(&CertificateDer::from(other_der), &[], now)
            .is_err(),
        "a certificate from another CA is refused"
    );
    // Both CAs in one bundle.
    let both = file_with(&format!("{ca_pem}{other_ca}"));
    assert!(client_verifier(both.path()).is_ok());

    let e = client_verifier(Path::new("/nonexistent/ca.pem")).unwrap_err();
    assert!(matches!(e, IdentityError::Io { .. }), "{e}");
    let empty = file_with("no certificates here\n");
    let e = client_verifier(empty.path()).unwrap_err();
    assert!(e.to_string().contains("no certificate found"), "{e}");
    let broken = file_with("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    assert!(client_verifier(broken.path()).is_err());
    let not_a_cert = file_with("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert!(client_verifier(not_a_cert.path()).is_err());
}
