//! The admin API on the proxy's port: listing, purging and warming over HTTP, from loopback without
//! client authentication, and only with a user when `PROXY_HTPASSWD` is set. (Refusing clients
//! that are not on loopback is the pure decision `listener::admin::allowed`, unit-tested there.)

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;

use crate::access::{basic, htpasswd};
use crate::fake::Fake;
use crate::harness::{FAKE_HOST, TestProxy, send};
use crate::images::publish;

/// A request with a body to the plain listener; status and JSON body (`null` if not JSON).
pub(crate) async fn call(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = auth {
        headers.push(("authorization", auth));
    }
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let response = send(
        proxy.addr,
        method,
        path,
        &headers,
        registry_proxy::body::full(bytes),
    )
    .await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `POST /admin/warm` with `request` (a list of images, or `{"images": …, "platform": …}`).
async fn warm(
    proxy: &TestProxy,
    request: serde_json::Value,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    call(proxy, "POST", "/admin/warm", Some(request), auth).await
}

/// Polls `GET /admin/warm` until job `id` is done; the job.
async fn wait_for_job(proxy: &TestProxy, id: u64, auth: Option<&str>) -> serde_json::Value {
    for _ in 0..400 {
        let (status, body) = call(proxy, "GET", "/admin/warm", None, auth).await;
        assert_eq!(status, 200, "{body}");
        let job = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .cloned()
            .unwrap();
        if job["status"] == "done" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("warm job {id} did not finish");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_from_loopback() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, 300);
    let proxy = TestProxy::start(&fake, &[("CACHE_MIN_FREE", "0")]).await;

    // Warm in the background, one platform.
    let (status, started) = warm(
        &proxy,
        serde_json::json!({"images": [fx.multi.reference()], "platform": "linux/arm64"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["images"][0], fx.multi.reference());
    let job = wait_for_job(&proxy, started["id"].as_u64().unwrap(), None).await;
    assert_eq!(job["failed"], 0, "{job}");
    assert_eq!(job["platform"], "linux/arm64");
    let image = &job["images"][0];
    assert_eq!(image["status"], "done", "{job}");
    assert_eq!(image["summary"]["blobs_fetched"], 3, "{job}");
    assert_eq!(image["blobs_done"], 3);
    assert_eq!(image["bytes_done"], image["bytes"]);

    // A plain list is accepted too.
    let (status, started) = warm(&proxy, serde_json::json!([fx.single.reference()]), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let job = wait_for_job(&proxy, started["id"].as_u64().unwrap(), None).await;
    assert_eq!(job["images"][0]["summary"]["blobs_cached"], 1, "{job}");

    // The listing is `cache ls --json`.
    let (status, catalog) = call(&proxy, "GET", "/admin/cache", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(catalog["schema"], "registry-proxy.cache-ls.v1");
    assert_eq!(catalog["totals"]["images"], 2);
    let repos = &catalog["registries"][0]["repositories"];
    assert_eq!(repos[0]["name"], "lib/multi");
    assert_eq!(repos[0]["images"][0]["platforms"][1]["cached"], true);
    assert_eq!(repos[0]["images"][0]["platforms"][0]["cached"], false);

    // Purge: a dry run, then for real.
    let glob = serde_json::json!({"glob": format!("{FAKE_HOST}/lib/m*"), "dry_run": true});
    let (status, report) = call(&proxy, "POST", "/admin/cache/purge", Some(glob), None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["images"].as_array().unwrap().len(), 1);
    assert!(proxy.has_blob(&fx.multi.own_blobs[3].digest));
    let (status, report) = call(
        &proxy,
        "POST",
        "/admin/cache/purge",
        Some(serde_json::json!({"image": fx.multi.reference()})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["removed_objects"].as_array().unwrap().len(), 2 + 2);
    assert!(!proxy.has_blob(&fx.multi.own_blobs[3].digest));
    assert!(proxy.has_blob(&fx.shared.digest), "lib/single uses it");

    // The proxy forgot what it held in memory: the purged platform manifest goes upstream again.
    let arm = &fx.multi.children[1];
    let before = fake.hits("GET", &format!("/v2/lib/multi/manifests/{}", arm.digest));
    let (status, headers, _) = proxy
        .request(
            "GET",
            &format!("/v2/{FAKE_HOST}/lib/multi/manifests/{}", arm.digest),
            &[("accept", registry_proxy::warm::ACCEPT)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-registry-proxy-cache"], "MISS");
    assert_eq!(
        fake.hits("GET", &format!("/v2/lib/multi/manifests/{}", arm.digest)),
        before + 1
    );

    // Mistakes are answered, not acted on.
    for (method, path, body, want) in [
        (
            "POST",
            "/admin/cache/purge",
            Some(serde_json::json!({})),
            400,
        ),
        (
            "POST",
            "/admin/cache/purge",
            Some(serde_json::json!({"image": "a", "glob": "b*"})),
            400,
        ),
        (
            "POST",
            "/admin/cache/purge",
            Some(serde_json::json!({"image": format!("{FAKE_HOST}/lib/nothing:v1")})),
            404,
        ),
        (
            "POST",
            "/admin/cache/purge",
            Some(serde_json::json!({"olderthan": "1d"})),
            400,
        ),
        ("POST", "/admin/warm", Some(serde_json::json!([])), 400),
        (
            "POST",
            "/admin/warm",
            Some(serde_json::json!(["Not An Image"])),
            400,
        ),
        ("PUT", "/admin/cache", None, 405),
        ("GET", "/admin/nothing", None, 404),
    ] {
        let (status, body) = call(&proxy, method, path, body, None).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {body}");
        assert!(body["errors"][0]["message"].is_string(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_needs_a_user_when_client_auth_is_on() {
    let fake = Fake::start(&[FAKE_HOST]).await;
    let fx = publish(&fake, 310);
    let dir = tempfile::tempdir().unwrap();
    let users = htpasswd(dir.path(), &[("ops", "ops-pw")]);
    let proxy = TestProxy::start(
        &fake,
        &[("CACHE_MIN_FREE", "0"), ("PROXY_HTPASSWD", &users)],
    )
    .await;
    let good = basic("ops", "ops-pw");
    let wrong = basic("ops", "nope");

    for auth in [None, Some(wrong.as_str())] {
        let (status, _) = call(&proxy, "GET", "/admin/cache", None, auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        let (status, _) = warm(&proxy, serde_json::json!([fx.single.reference()]), auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        fake.hits_containing("/v2/lib/single/"),
        0,
        "nothing was warmed"
    );

    let (status, catalog) = call(&proxy, "GET", "/admin/cache", None, Some(&good)).await;
    assert_eq!(status, 200);
    assert_eq!(catalog["totals"]["images"], 0);

    // The job logs in to the proxy as the user who asked (the registry token flow).
    let (status, started) = warm(
        &proxy,
        serde_json::json!([fx.single.reference()]),
        Some(&good),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let job = wait_for_job(&proxy, started["id"].as_u64().unwrap(), Some(&good)).await;
    assert_eq!(job["failed"], 0, "{job}");
    assert_eq!(job["images"][0]["summary"]["blobs_fetched"], 3, "{job}");
    assert!(proxy.has_blob(&fx.single.own_blobs[1].digest));

    let (status, report) = call(
        &proxy,
        "POST",
        "/admin/cache/purge",
        Some(serde_json::json!({"glob": format!("{FAKE_HOST}/*")})),
        Some(&good),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["removed_objects"].as_array().unwrap().len(), 4);
}
