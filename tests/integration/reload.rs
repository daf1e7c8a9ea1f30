//! SIGHUP re-reads the settings that can change without a restart (access rules, central
//! credentials) in the real binary, keeps serving, and survives a configuration that no longer
//! loads.

use std::time::Duration;

use crate::cache_crash::{BinProxy, bin_env, get};
use crate::fake::Fake;
use crate::harness::serve_random_blob;

fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls `path` until it answers `want` (a bounded wait for the reload to be applied).
async fn wait_for_status(proxy: &BinProxy, path: &str, want: u16) -> u16 {
    let mut last = 0;
    for _ in 0..100 {
        last = get(proxy.addr, path).await.0.as_u16();
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test]
async fn sighup_reloads_access_rules_and_keeps_serving() {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 20_000, 91);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let deny = "[[access]]\nmatch = \"fake.test/lib/*\"\npull = []\n";
    let allow = "[[access]]\nmatch = \"fake.test/lib/*\"\nfetch = [\"anonymous\"]\n";
    std::fs::write(&config, deny).unwrap();
    let mut env = bin_env(dir.path(), &fake);
    env.push(("CONFIG".into(), config.display().to_string()));
    let mut proxy = BinProxy::start(&env).await;
    let path = format!("/v2/fake.test/lib/app/blobs/{digest}");
    // Denied (an anonymous client of a `verify` registry is asked to log in).
    assert_eq!(get(proxy.addr, &path).await.0, 401);

    // A new rule takes effect on SIGHUP, without a restart.
    std::fs::write(&config, allow).unwrap();
    hangup(proxy.pid());
    assert_eq!(wait_for_status(&proxy, &path, 200).await, 200);
    let (_, body) = get(proxy.addr, &path).await;
    assert_eq!(body.unwrap(), data);

    // A file that no longer loads is refused; the running rules stay.
    std::fs::write(
        &config,
        "[[access]]\nmatch = \"fake.test/lib/*\"\npull = [\"@nogroup\"]\n",
    )
    .unwrap();
    hangup(proxy.pid());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(proxy.running(), "SIGHUP does not end the proxy");
    assert_eq!(get(proxy.addr, &path).await.0, 200);

    // And back to denying.
    std::fs::write(&config, deny).unwrap();
    hangup(proxy.pid());
    assert_eq!(wait_for_status(&proxy, &path, 401).await, 401);
    assert!(proxy.running());
}
