//! Issue 9: real clients through several replicas sharing one bucket. Three `registry-proxy`
//! processes with `STORAGE=s3://…` on one `moto_server` (started here, stopped by PID),
//! `PEERS`/`PEER_LISTEN`/`PEER_SECRET` and one CA (as a deployment gives them), in front of the
//! environment's Debian registry. skopeo pulls an image through replica 1 (CONNECT), ctr pulls it
//! through replica 2; the upstream's own access log shows each blob fetched exactly once across
//! both. Then replicas 1 and 2 stop and replica 3, started on an empty disk, serves the same image
//! from the bucket alone: no upstream GET at all, byte-identical content.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use registry_proxy::peer::owner_among;
use registry_proxy::registry::digest::Digest;

use crate::harness::{
    self, Env, Proxy, Reaped, RepoLog, Via, Watch, assert_same_dirs, verify_content_store,
    verify_skopeo_dir,
};

const BUCKET: &str = "proxy-cache";
const SECRET: &str = "e2e-replicas-share-this";
const HOST: &str = "registry.test";
/// A repository only this test pulls (a copy of `test/small:v1`, same digests), so that the
/// upstream's log lines for it are this test's.
const REPO: &str = "test/replicas";

/// A `moto_server` on a free loopback port with the bucket created; killed (by PID) on drop.
struct Moto {
    _child: Reaped,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind a free port")
            .local_addr()
            .expect("local address")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto_server (pip install 'moto[server]', as scripts/test does) must be installed",
            );
        let moto = Moto {
            _child: Reaped(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // moto checks no signature: a plain PUT creates the bucket
        while moto.status("PUT", &format!("/{BUCKET}")) != 200 {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// The status and body of one unsigned request to the server (status 0 when it did not
    /// answer).
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--noproxy", "*"])
            .args(["--max-time", "10", "-X", method])
            .arg(format!("{}{path}", self.endpoint))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn status(&self, method: &str, path: &str) -> u16 {
        self.request(method, path).0
    }

    /// Every key in the bucket under `prefix/` (moto lists without a signature; one page of up to
    /// 1000 keys is plenty here).
    fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) =
            self.request("GET", &format!("/{BUCKET}?list-type=2&prefix={prefix}/"));
        assert_eq!(status, 200, "listing the bucket: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>"))
            .map(|(k, _)| {
                k.strip_prefix(&format!("{prefix}/"))
                    .unwrap_or(k)
                    .to_owned()
            })
            .collect()
    }

    /// Waits until every object `keys` (paths under `prefix`) is in the bucket (uploads run in
    /// the background after a fill).
    fn wait_for_objects(&self, prefix: &str, keys: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = self.keys(prefix);
            let missing: Vec<&String> = keys.iter().filter(|k| !listed.contains(k)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not uploaded to the bucket within 60 s: {missing:?}; the bucket holds {listed:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `blobs/sha256/ab/<hex>` (and `manifests/…`): where the store puts a digest in the bucket.
fn content_key(kind: &str, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    format!("{kind}/sha256/{}/{hex}", &hex[..2])
}

/// A peer address nothing else uses: a port the kernel just had free on a loopback address of its
/// own (the environment's upstreams are on 127.0.0.2-8, proxies on 127.0.0.1).
fn peer_addr() -> String {
    let mut seed = [0u8; 3];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).expect("random");
    let ip = Ipv4Addr::new(127, seed[0].clamp(1, 254), seed[1], seed[2].clamp(2, 254));
    TcpListener::bind((ip, 0))
        .expect("bind a free peer port")
        .local_addr()
        .expect("local address")
        .to_string()
}

/// Peer addresses for three replicas such that, while the first two are the healthy ones, each
/// of them owns at least one of `blobs` (owners come from rendezvous hashing of the digest over the
/// addresses): then the pulls through replica 1 certainly go through its peer, replica 2.
fn peer_addrs(blobs: &[String]) -> [String; 3] {
    let digests: Vec<Digest> = blobs
        .iter()
        .map(|d| Digest::parse(d).expect("a digest"))
        .collect();
    for _ in 0..200 {
        let pair = [peer_addr(), peer_addr()];
        let sockets: Vec<SocketAddr> = pair
            .iter()
            .map(|a| a.parse().expect("a socket address"))
            .collect();
        let owned_by_first = digests
            .iter()
            .filter(|d| owner_among(&sockets, d) == Some(sockets[0]))
            .count();
        if owned_by_first > 0 && owned_by_first < digests.len() {
            let [a, b] = pair;
            return [a, b, peer_addr()];
        }
    }
    panic!("no pair of peer addresses splits the blobs' ownership");
}

/// The digests of `blobs` whose owner, among the replicas at `healthy`, is `addr`.
fn owned_by(addr: &str, healthy: &[String], blobs: &[String]) -> Vec<String> {
    let sockets: Vec<SocketAddr> = healthy
        .iter()
        .map(|a| a.parse().expect("a socket address"))
        .collect();
    let me: SocketAddr = addr.parse().expect("a socket address");
    blobs
        .iter()
        .filter(|d| owner_among(&sockets, &Digest::parse(d).expect("a digest")) == Some(me))
        .cloned()
        .collect()
}

/// Starts one replica: the standard test settings plus the bucket, the peers and the shared CA.
fn replica(env: &Env, moto: &Moto, prefix: &str, peers: &str, me: &str, ca_dir: &Path) -> Proxy {
    let storage = format!("s3://{BUCKET}/{prefix}");
    let ca_dir = ca_dir.to_string_lossy().into_owned();
    Proxy::start(
        env,
        &[
            ("STORAGE", &storage),
            ("S3_ENDPOINT", &moto.endpoint),
            ("S3_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("PEERS", peers),
            ("PEER_LISTEN", me),
            ("PEER_SECRET", SECRET),
            ("CA_DIR", &ca_dir),
        ],
    )
}

/// `GET /peer/status` on a replica's peer port: `(me, healthy)`.
fn peer_status(addr: &str) -> Option<(String, Vec<String>)> {
    let out = Command::new("curl")
        .args(["-fsS", "--noproxy", "*", "--max-time", "5", "-H"])
        .arg(format!("Authorization: Bearer {SECRET}"))
        .arg(format!("http://{addr}/peer/status"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let me = v["me"].as_str()?.to_owned();
    let mut healthy: Vec<String> = v["healthy"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    healthy.sort();
    Some((me, healthy))
}

/// Waits until each replica in `up` has found itself and sees exactly `up` as healthy.
fn wait_for_membership(up: &[&str]) {
    let mut want: Vec<String> = up.iter().map(|a| (*a).to_owned()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let settled = up
            .iter()
            .all(|a| peer_status(a).is_some_and(|(me, healthy)| me == *a && healthy == want));
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas {up:?} did not find each other within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// skopeo through replica 1 and ctr through replica 2 fetch each blob from upstream once in all;
/// replica 3 on an empty disk then serves the image from the bucket alone.
#[test]
fn skopeo_and_ctr_through_different_replicas_then_an_empty_replica_serves_from_the_bucket() {
    let Some(env) = harness::env() else { return };
    let small = env.image("SMALL");
    let blobs = small.blobs();
    let _claim = harness::claim(&[(HOST, REPO)]);
    harness::push_copy(&format!("{}:v1", small.repo), &format!("{REPO}:v1"));
    let image = format!("{HOST}/{REPO}:v1");

    let moto = Moto::start();
    let prefix = format!("e2e-{}", std::process::id());
    // the CA every replica shares (a Secret in a deployment)
    let ca = tempfile::Builder::new()
        .prefix("rpe2e-ca-")
        .tempdir()
        .expect("tempdir");
    let keep = tempfile::Builder::new()
        .prefix("rpe2e-keep-")
        .tempdir()
        .expect("tempdir");
    let addrs = peer_addrs(&blobs);
    let peers = addrs.join(" ");
    let mut one = Some(replica(env, &moto, &prefix, &peers, &addrs[0], ca.path()));
    let mut two = Some(replica(env, &moto, &prefix, &peers, &addrs[1], ca.path()));
    wait_for_membership(&[&addrs[0], &addrs[1]]);

    let watch = Watch::new(env, HOST, REPO, &blobs);
    let r1 = one.as_ref().expect("replica 1");
    let pulled = r1.skopeo(env, Via::Connect, &image, &[]);
    verify_skopeo_dir(&pulled, &small.digest, &blobs);
    // kept beyond replica 1's directory, which goes when it stops
    let first = keep.path().join("first-pull");
    std::fs::rename(&pulled, &first).expect("keep the first pull");
    let r2 = two.as_ref().expect("replica 2");
    let store = r2.ctr(env, Via::Connect, &image, &[]);
    verify_content_store(&store, &blobs);
    if let Some(root) = store.ancestors().nth(3) {
        std::fs::remove_dir_all(root).ok();
    }
    // each blob (config and layers) came from upstream exactly once, across both replicas
    let delta = watch.delta();
    let wrong: Vec<String> = delta
        .iter()
        .filter(|(_, (gets, _))| *gets != 1)
        .map(|(d, (gets, heads))| format!("{d}: {gets} GET, {heads} HEAD"))
        .collect();
    assert!(
        wrong.is_empty(),
        "expected exactly one upstream GET per blob across replicas 1 and 2:\n{}",
        wrong.join("\n")
    );
    r2.assert_blobs_served(0, HOST, REPO, &blobs);
    // replica 1 forwarded the misses of the blobs replica 2 owns to it and relayed its download
    let owned = owned_by(&addrs[1], &addrs[..2], &blobs);
    let log = r2.log_text();
    let not_forwarded: Vec<&String> = owned
        .iter()
        .filter(|d| {
            !log.lines()
                .any(|l| l.contains("PEER blob") && l.contains(&format!("digest={d}")))
        })
        .collect();
    assert!(
        not_forwarded.is_empty(),
        "replica 2 owns {owned:?} but served none of {not_forwarded:?} to its peer"
    );

    // Everything reaches the bucket; then only the bucket is left: replicas 1 and 2 stop.
    let mut keys: Vec<String> = blobs.iter().map(|d| content_key("blobs", d)).collect();
    keys.push(content_key("manifests", &small.digest));
    moto.wait_for_objects(&prefix, &keys);
    drop(one.take());
    drop(two.take());

    let three = replica(env, &moto, &prefix, &peers, &addrs[2], ca.path());
    wait_for_membership(&[&addrs[2]]);
    let repo_log = RepoLog::new(env, HOST, REPO);
    let again = three.skopeo(env, Via::Connect, &image, &[]);
    verify_skopeo_dir(&again, &small.digest, &blobs);
    assert_same_dirs(&first, &again);
    // no content from upstream: the tag may be revalidated with a HEAD, nothing is fetched
    repo_log.assert_no_get("replica 3 on an empty disk", true);
    three.assert_blobs_served(0, HOST, REPO, &blobs);
    let cache = three.dir.path().join("cache");
    for d in &blobs {
        let hex = d.strip_prefix("sha256:").expect("sha256 digest");
        let local = cache.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        assert!(
            local.exists(),
            "replica 3 kept no local copy of {d} ({})",
            local.display()
        );
    }
}
