//! The bucket's collector (`S3_MAX_SIZE`, `CACHE_INACTIVE` on the bucket) against the real S3
//! server of `bucket.rs` (`moto_server`): the start-up probe, the lease (one holder; a dead
//! holder's lease taken over once expired), the cap (least recently used first, access records
//! count as use), the grace window, and a store that ignores conditional writes (a thin wrapper
//! that drops the precondition: the fault fake).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use registry_proxy::cache::gc::{
    self, Collected, GcSettings, Lease, Mode, Policy, collect, conditional_writes, used_path,
};
use registry_proxy::cache::key::{ContentKind, LinkKind};
use registry_proxy::cache::store::{
    ByteStream, Condition, Listed, Object, ObjectMeta, ObjectWrite, Record, Records, S3Store,
    SharedStore, StoreError, Written,
};
use registry_proxy::cache::{ObjectKey, Store};
use registry_proxy::registry::digest::Digest;
use registry_proxy::registry::host::RegistryHost;
use registry_proxy::registry::name::RepoName;

use crate::bucket::S3Server;
use crate::harness::random_bytes;

const DAY: Duration = Duration::from_secs(86_400);

/// The S3 client of `bucket.rs` with every write's precondition dropped, as Garage 2.x does.
struct Unconditional(S3Store);

impl Store for Unconditional {
    fn name(&self) -> &'static str {
        "unconditional"
    }
    fn head<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, StoreError>> {
        self.0.head(key)
    }
    fn read(&self, key: &ObjectKey, start: u64, end: u64) -> ByteStream {
        self.0.read(key, start, end)
    }
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Object>, StoreError>> {
        self.0.get(key)
    }
    fn begin_write<'a>(
        &'a self,
        key: &'a ObjectKey,
        media_type: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWrite>, StoreError>> {
        self.0.begin_write(key, media_type)
    }
    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.delete(key)
    }
    fn list(&self, kind: ContentKind) -> BoxFuture<'_, Result<Vec<Listed>, StoreError>> {
        self.0.list(kind)
    }
}

impl Records for Unconditional {
    fn read_record<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        self.0.read_record(path)
    }
    fn write_record<'a>(
        &'a self,
        path: &'a str,
        bytes: Bytes,
        _condition: Condition,
    ) -> BoxFuture<'a, Result<Written, StoreError>> {
        self.0.write_record(path, bytes, Condition::Any)
    }
    fn delete_record<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.delete_record(path)
    }
    fn list_records<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, ObjectMeta)>, StoreError>> {
        self.0.list_records(dir)
    }
}

/// Puts a blob of `len` random bytes into the bucket; its key.
async fn put_blob(store: &S3Store, len: usize, seed: u64) -> ObjectKey {
    let bytes = random_bytes(len, seed);
    let key = ObjectKey::blob(&Digest::sha256_of(&bytes));
    store
        .put(
            &key,
            Object {
                bytes,
                media_type: None,
            },
        )
        .await
        .unwrap();
    key
}

async fn present(store: &S3Store, key: &ObjectKey) -> bool {
    store.head(key).await.unwrap().is_some()
}

/// S3 keeps last-modified times to the second: the next write must be seen as later.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_tells_a_store_that_honours_conditional_writes_from_one_that_does_not() {
    let server = S3Server::start().await;
    let store = server.store("gc-probe");
    assert!(conditional_writes(&store).await.unwrap());
    let unconditional = Unconditional(server.store("gc-probe"));
    assert!(!conditional_writes(&unconditional).await.unwrap());
    // The probe leaves nothing behind.
    assert!(store.list_records("gc/").await.unwrap().is_empty());

    // Without conditional writes only the replica S3_GC_LEADER names collects (without a lease).
    let settings = |leader: Option<&str>| GcSettings {
        policy: Policy {
            max_size: None,
            inactive: DAY,
            grace: Duration::ZERO,
        },
        every: Duration::from_millis(50),
        lease_term: Duration::from_secs(1),
        name: "proxy-1".into(),
        leader: leader.map(str::to_owned),
    };
    assert_eq!(Mode::decide(true, &settings(None)), Mode::Lease);
    assert_eq!(Mode::decide(false, &settings(Some("proxy-1"))), Mode::Alone);
    assert_eq!(
        Mode::decide(false, &settings(Some("proxy-0"))),
        Mode::NotHere
    );
    assert_eq!(Mode::decide(false, &settings(None)), Mode::NotHere);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_never_both_hold_the_lease() {
    let server = S3Server::start().await;
    let store: Arc<dyn Records> = Arc::new(server.store("gc-lease"));
    let term = Duration::from_secs(60);
    for round in 0..5 {
        let prefix = format!("gc-lease-{round}");
        let store: Arc<dyn Records> = Arc::new(server.store(&prefix));
        let mut a = Lease::new(store.clone(), "a".into(), term);
        let mut b = Lease::new(store.clone(), "b".into(), term);
        // Both race for the free lease: exactly one wins.
        let (got_a, got_b) = tokio::join!(a.acquire(), b.acquire());
        assert!(got_a.unwrap() ^ got_b.unwrap(), "round {round}: one holder");
        assert!(a.held() ^ b.held());
        let (holder, other) = if a.held() {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        // The holder renews; the other is refused while the term runs.
        assert!(holder.acquire().await.unwrap());
        assert!(!other.acquire().await.unwrap());
        assert!(holder.held() && !other.held());
    }
    // The holder's lease is what the bucket says.
    let mut a = Lease::new(store.clone(), "a".into(), term);
    assert!(a.acquire().await.unwrap());
    let record = store.read_record(gc::LEASE).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&record.bytes).contains("\"holder\":\"a\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_whose_holder_died_is_taken_over_once_expired() {
    let server = S3Server::start().await;
    let store: Arc<dyn Records> = Arc::new(server.store("gc-takeover"));
    let term = Duration::from_secs(2);
    let mut dead = Lease::new(store.clone(), "dead".into(), term);
    assert!(dead.acquire().await.unwrap());
    let mut heir = Lease::new(store.clone(), "heir".into(), term);
    assert!(
        !heir.acquire().await.unwrap(),
        "refused while the term runs"
    );
    // The holder stops renewing (it died); the heir asks until the term has passed.
    let mut tries = 0;
    while !heir.acquire().await.unwrap() {
        tries += 1;
        assert!(tries < 100, "the expired lease was never taken over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(heir.held());
    // The old holder no longer believes it holds it, and cannot take it back while the heir's
    // term runs: its conditional renewal names a version that is gone.
    assert!(!dead.held());
    assert!(!dead.acquire().await.unwrap());
    assert!(heir.acquire().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cap_goes_least_recently_used_first_and_spares_the_grace_window() {
    let server = S3Server::start().await;
    let store = server.store("gc-cap");
    let mut keys = Vec::new();
    for seed in 0..4 {
        keys.push(put_blob(&store, 1000, 900 + seed).await);
        next_second().await;
    }
    let (a, b, c, d) = (&keys[0], &keys[1], &keys[2], &keys[3]);
    // The oldest one is used (by some replica): its access record is the newest write.
    store
        .write_record(&used_path(a), Bytes::new(), Condition::Any)
        .await
        .unwrap();
    // A link to a blob that will go, and one to a blob that stays.
    let registry = RegistryHost::parse("registry.test:5000").unwrap();
    let name = RepoName::parse("team/app").unwrap();
    let digest_of = |key: &ObjectKey| key.content().unwrap().1.clone();
    let link_b = ObjectKey::link(&registry, &name, LinkKind::Blob, &digest_of(b));
    let link_d = ObjectKey::link(&registry, &name, LinkKind::Blob, &digest_of(d));
    for link in [&link_b, &link_d] {
        store.put(link, Object::default()).await.unwrap();
    }

    let policy = Policy {
        max_size: Some(2500),
        inactive: 60 * DAY,
        grace: Duration::from_secs(3600),
    };
    // Everything is younger than the grace window: nothing goes, over the cap or not.
    let report = collect(&store, &policy, SystemTime::now(), None)
        .await
        .unwrap();
    assert_eq!((report.objects, report.records), (0, 0));
    for key in &keys {
        assert!(present(&store, key).await);
    }

    // Two hours later: over the cap by 1500 bytes, so the two least recently used go.
    let later = SystemTime::now() + Duration::from_secs(7200);
    let report = collect(&store, &policy, later, None).await.unwrap();
    assert_eq!((report.objects, report.bytes), (2, 2000));
    assert!(present(&store, a).await, "used most recently: kept");
    assert!(!present(&store, b).await, "least recently used: collected");
    assert!(!present(&store, c).await);
    assert!(present(&store, d).await);
    // The link to the collected blob went with it; the other stays.
    assert_eq!(store.head(&link_b).await.unwrap(), None);
    assert!(store.head(&link_d).await.unwrap().is_some());
    // Under the cap now: a second pass removes nothing.
    let report = collect(&store, &policy, later, None).await.unwrap();
    assert_eq!(report.objects, 0);

    // CACHE_INACTIVE applies to the bucket too, whatever its size.
    let policy = Policy {
        max_size: None,
        inactive: Duration::from_secs(3600),
        grace: Duration::from_secs(3600),
    };
    let report = collect(&store, &policy, later, None).await.unwrap();
    assert_eq!(report.objects, 2);
    assert!(store.list(ContentKind::Blob).await.unwrap().is_empty());
    // Their access records went too.
    assert!(store.list_records("gc/used/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_stops_when_its_lease_is_lost() {
    let server = S3Server::start().await;
    let store = server.store("gc-lost");
    let key = put_blob(&store, 100, 950).await;
    let records: Arc<dyn Records> = Arc::new(server.store("gc-lost"));
    let mut lease = Lease::new(records.clone(), "a".into(), Duration::from_secs(60));
    assert!(lease.acquire().await.unwrap());
    // Another replica's term overwrote it (a clock far off, a store that lost the condition):
    // the version this one renews is gone.
    records
        .write_record(
            gc::LEASE,
            Bytes::from_static(br#"{"holder":"b","expires_ms":99999999999999,"nonce":"x"}"#),
            Condition::Any,
        )
        .await
        .unwrap();
    let policy = Policy {
        max_size: Some(1),
        inactive: DAY,
        grace: Duration::ZERO,
    };
    // Its next renewal finds out; the pass then removes nothing.
    assert!(!lease.acquire().await.unwrap());
    let report = collect(&store, &policy, SystemTime::now(), Some(&mut lease))
        .await
        .unwrap();
    assert!(report.interrupted);
    assert_eq!(report.objects, 0);
    assert!(present(&store, &key).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_conditional_writes_the_named_leader_collects_alone() {
    let server = S3Server::start().await;
    let store = server.store("gc-leader");
    let key = put_blob(&store, 1000, 960).await;
    let shared: Arc<dyn SharedStore> = Arc::new(Unconditional(server.store("gc-leader")));
    let settings = GcSettings {
        policy: Policy {
            max_size: Some(10),
            inactive: DAY,
            grace: Duration::ZERO,
        },
        every: Duration::from_millis(100),
        lease_term: Duration::from_secs(1),
        name: "proxy-0".into(),
        leader: Some("proxy-0".into()),
    };
    let collected = Arc::new(Collected::default());
    let task = tokio::spawn(gc::run(shared, settings, Arc::downgrade(&collected)));
    let mut tries = 0;
    while present(&store, &key).await {
        tries += 1;
        assert!(tries < 200, "the leader never collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        collected.objects.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // No lease was written: there is no point in one where the store ignores conditions.
    assert!(store.read_record(gc::LEASE).await.unwrap().is_none());
    drop(collected);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_collectors_on_one_bucket_take_turns_through_the_lease() {
    let server = S3Server::start().await;
    let store = server.store("gc-turns");
    let mut keys = Vec::new();
    for seed in 0..3 {
        keys.push(put_blob(&store, 1000, 970 + seed).await);
    }
    let settings = |name: &str| GcSettings {
        policy: Policy {
            max_size: Some(1500),
            inactive: DAY,
            grace: Duration::ZERO,
        },
        every: Duration::from_millis(100),
        lease_term: Duration::from_secs(30),
        name: name.into(),
        leader: None,
    };
    let totals: Vec<Arc<Collected>> = (0..2).map(|_| Arc::new(Collected::default())).collect();
    let tasks: Vec<_> = ["proxy-0", "proxy-1"]
        .iter()
        .zip(&totals)
        .map(|(name, collected)| {
            let shared: Arc<dyn SharedStore> = Arc::new(server.store("gc-turns"));
            tokio::spawn(gc::run(shared, settings(name), Arc::downgrade(collected)))
        })
        .collect();
    let mut tries = 0;
    loop {
        let left = store.list(ContentKind::Blob).await.unwrap().len();
        if left == 1 {
            break;
        }
        tries += 1;
        assert!(
            tries < 200,
            "the cap was never enforced ({left} blobs left)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One of them holds the lease, and only the holder removed anything.
    let lease = store.read_record(gc::LEASE).await.unwrap().unwrap();
    let lease = String::from_utf8_lossy(&lease.bytes).to_string();
    let removed: Vec<u64> = totals
        .iter()
        .map(|t| t.objects.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert_eq!(removed.iter().sum::<u64>(), 2, "{removed:?}");
    let holder = if lease.contains("\"holder\":\"proxy-0/") {
        0
    } else {
        assert!(lease.contains("\"holder\":\"proxy-1/"), "{lease}");
        1
    };
    assert_eq!(removed[holder], 2, "{removed:?} {lease}");
    for task in tasks {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_record_what_they_use_in_the_bucket() {
    use crate::bucket::{env_pairs, pull, wait_for};
    use crate::bucket_purge::{MEDIA_TYPE, image};
    use crate::fake::Fake;
    use crate::harness::{FAKE_HOST, TestProxy};

    let server = S3Server::start().await;
    let fake = Fake::start(&[FAKE_HOST]).await;
    let (manifest, blobs) = image(
        &fake,
        "team/app",
        &random_bytes(30_000, 980),
        &random_bytes(1_000, 981),
    );
    let env = server.env("gc-used");
    let first = TestProxy::start(&fake, &env_pairs(&env)).await;
    let digests: Vec<&str> = blobs.iter().map(String::as_str).collect();
    pull(&first, &manifest, &digests, MEDIA_TYPE).await;
    let store = server.store("gc-used");
    let content: Vec<ObjectKey> = blobs
        .iter()
        .map(|d| ObjectKey::blob(&Digest::parse(d).unwrap()))
        .chain([ObjectKey::manifest(&Digest::parse(&manifest).unwrap())])
        .collect();
    wait_for(&store, &content).await;
    // A replica on an empty disk reads everything from the bucket: each read is recorded there,
    // where the collector (on whichever replica) finds it.
    let second = TestProxy::start(&fake, &env_pairs(&env)).await;
    pull(&second, &manifest, &digests, MEDIA_TYPE).await;
    let mut tries = 0;
    loop {
        let recorded: Vec<String> = store
            .list_records(gc::USED_DIR)
            .await
            .unwrap()
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        if content.iter().all(|key| recorded.contains(&used_path(key))) {
            break;
        }
        tries += 1;
        assert!(tries < 200, "uses not recorded: {recorded:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
