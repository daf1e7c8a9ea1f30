//! The operator's view: `/metrics` passes `promtool check metrics` and has every series the Grafana
//! dashboard queries; the status page works in headless Chromium (a download in progress, no
//! console message); `/` gives curl a text summary and `/status.json` the page's data.
//!
//! `promtool` (Debian `prometheus`) and `chromium` are installed by `scripts/test`; run locally
//! without them, those tests print `SKIPPED` and pass.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fake::{Behavior, Fake};
use crate::harness::{RawClient, TestProxy, read_head, serve_random_blob, serve_slow_blob};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs `cmd` on a blocking thread (the proxy under test keeps running) with `input` on its stdin;
/// kills it (by its PID) if it takes longer than `limit`.
async fn run(mut cmd: Command, input: Vec<u8>, limit: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let reader = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = reader(Box::new(child.stdout.take().unwrap()));
        let stderr = reader(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmd:?} did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = writer.join();
        Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// A loopback TCP service that echoes what it reads.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// `CONNECT target`; the stream and the status line.
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    let head = String::from_utf8(head).unwrap();
    (s, head.lines().next().unwrap_or("").to_owned())
}

/// A proxy that has served a miss, a hit, a manifest with Docker Hub's rate-limit headers, a blind
/// tunnel and refusals; its `/metrics` text.
async fn busy_metrics() -> String {
    let fake = Fake::start(&["fake.test"]).await;
    let (data, digest) = serve_random_blob(&fake, "lib/app", 50_000, 80);
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    fake.route(
        "/v2/lib/app/manifests/v1",
        Behavior::WithHeaders(
            Box::new(Behavior::Manifest {
                bytes: bytes::Bytes::from_static(b"{\"schemaVersion\":2}"),
                media_type: media_type.into(),
            }),
            vec![
                ("ratelimit-limit", "100;w=21600".into()),
                ("ratelimit-remaining", "76;w=21600".into()),
            ],
        ),
    );
    let echo = echo_server().await;
    let allow = format!("127.0.0.1:{}", echo.port());
    let proxy = TestProxy::start(&fake, &[("TUNNEL_ALLOW", &allow)]).await;
    let blob = format!("/v2/fake.test/lib/app/blobs/{digest}");
    for _ in 0..2 {
        let (status, _, body) = proxy.get(&blob).await;
        assert_eq!((status.as_u16(), body), (200, data.clone()));
    }
    let (status, _, _) = proxy
        .request(
            "GET",
            "/v2/fake.test/lib/app/manifests/v1",
            &[("accept", media_type)],
        )
        .await;
    assert_eq!(status, 200);
    // A blind tunnel, used and closed.
    let (mut tunnel, status_line) = connect(proxy.addr, &allow).await;
    assert!(status_line.contains(" 200"), "{status_line}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tunnel.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    drop(tunnel);
    // Refusals: a tunnel the policy does not allow, a registry that is not configured.
    let (_, status_line) = connect(proxy.addr, "127.0.0.1:1").await;
    assert!(status_line.contains(" 403"), "{status_line}");
    let (status, _, _) = proxy.get("/v2/unknown.example/x/manifests/1").await;
    assert_eq!(status, 403);

    let (status, headers, body) = proxy.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    String::from_utf8(body.to_vec()).unwrap()
}

/// The metric families of an exposition (`# TYPE` lines), with their types.
fn families(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

#[tokio::test]
async fn metrics_answer_operators_questions() {
    let text = busy_metrics().await;
    for line in [
        r#"registry_proxy_requests_total{registry="fake.test",verdict="HIT"} 1"#,
        r#"registry_proxy_requests_total{registry="fake.test",verdict="MISS"} 2"#,
        r#"registry_proxy_sent_bytes_total{registry="fake.test",verdict="HIT"} 50000"#,
        r#"registry_proxy_upstream_blob_fetches_total{registry="fake.test"} 1"#,
        r#"registry_proxy_upstream_ratelimit_remaining{registry="fake.test"} 76"#,
        r#"registry_proxy_upstream_ratelimit_limit{registry="fake.test"} 100"#,
        r#"registry_proxy_time_to_first_byte_seconds_count{registry="fake.test",verdict="HIT"} 1"#,
        "registry_proxy_tunnels_total 1",
        r#"registry_proxy_refusals_total{reason="tunnel_policy",status="403"} 1"#,
        r#"registry_proxy_refusals_total{reason="not_configured",status="403"} 1"#,
        "registry_proxy_cache_entries 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // Upstream GETs: the blob and the manifest (and nothing for the hit).
    assert!(
        text.contains(
            r#"registry_proxy_upstream_requests_total{registry="fake.test",method="GET"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"registry_proxy_downloads_in_flight{registry="fake.test"} "#),
        "{text}"
    );
    // A client cannot create series: the unconfigured registry has none of its own.
    assert!(!text.contains("unknown.example"), "{text}");
    let names: BTreeSet<String> = families(&text).into_iter().map(|(n, _)| n).collect();
    assert!(names.len() >= 25, "{names:?}");
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let text = busy_metrics().await;
    if !on_path("promtool") {
        println!("SKIPPED: promtool is not installed (Debian package prometheus)");
        return;
    }
    let mut promtool = Command::new("promtool");
    promtool.args(["check", "metrics"]);
    let out = run(promtool, text.clone().into_bytes(), Duration::from_secs(60)).await;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics:\n{report}\n{text}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
}

/// Metric names used in a PromQL expression: identifiers starting with `registry_proxy_`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("registry_proxy_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn grafana_dashboard_queries_only_exported_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/registry-proxy.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dashboard["title"].is_string());
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let text = busy_metrics().await;
    let exported = families(&text);
    let mut queried = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            // Template variables ask for label values of a metric too.
            let family = exported.iter().find(|(family, kind)| {
                *family == name
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| name == format!("{family}{suffix}")))
            });
            assert!(
                family.is_some(),
                "the dashboard queries {name}, which /metrics does not export ({expr})"
            );
            queried.insert(name);
        }
    }
    // The questions the dashboard must answer.
    for needed in [
        "registry_proxy_requests_total",
        "registry_proxy_sent_bytes_total",
        "registry_proxy_upstream_requests_total",
        "registry_proxy_downloads_in_flight",
        "registry_proxy_time_to_first_byte_seconds_bucket",
        "registry_proxy_fill_duration_seconds_bucket",
        "registry_proxy_refusals_total",
        "registry_proxy_upstream_ratelimit_remaining",
        "registry_proxy_cache_bytes",
        "registry_proxy_cache_max_bytes",
    ] {
        assert!(
            queried.contains(needed),
            "the dashboard has no panel on {needed}"
        );
    }
}

#[tokio::test]
async fn curl_gets_text_and_the_page_gets_json() {
    let fake = Fake::start(&["fake.test"]).await;
    let (_, digest) = serve_random_blob(&fake, "lib/app", 10_000, 81);
    let proxy = TestProxy::start(&fake, &[]).await;
    let blob = format!("/v2/fake.test/lib/app/blobs/{digest}");
    for _ in 0..3 {
        assert_eq!(proxy.get(&blob).await.0, 200);
    }
    let (status, headers, body) = proxy.request("GET", "/", &[("accept", "*/*")]).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let summary = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        summary.contains("requests: 2 from cache, 1 from upstream (hit ratio 66.7%)"),
        "{summary}"
    );
    assert!(summary.contains("downloads in flight: 0"), "{summary}");
    assert!(summary.contains("fake.test/lib/app"), "{summary}");

    let (status, _, body) = proxy.get("/status.json").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["totals"]["hits"], 2);
    assert_eq!(json["totals"]["misses"], 1);
    assert_eq!(json["totals"]["saved_bytes"], 20_000);
    assert_eq!(json["cache"]["entries"], 1);
    assert_eq!(json["largest"][0]["image"], "fake.test/lib/app");
    assert_eq!(json["largest"][0]["bytes"], 10_000);
    assert_eq!(json["most_used"][0]["image"], "fake.test/lib/app");
    let history = json["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last["hits"].as_u64(), last["misses"].as_u64()),
        (Some(2), Some(1))
    );
    let registry = json["registries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["registry"] == "fake.test")
        .unwrap();
    assert!(registry["last_ok_ms"].as_u64().is_some(), "{registry}");

    // A browser gets the page, with a nonce the CSP allows and nothing else.
    let (status, headers, body) = proxy
        .request("GET", "/", &[("accept", "text/html,*/*;q=0.8")])
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split_once('\''))
        .unwrap()
        .0;
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(page.matches(&format!("nonce=\"{nonce}\"")).count(), 2);
    // Another response, another nonce.
    let (_, again, _) = proxy.request("GET", "/", &[("accept", "text/html")]).await;
    assert_ne!(
        again["content-security-policy"],
        headers["content-security-policy"]
    );
}

#[tokio::test]
async fn status_page_in_chromium_shows_a_download_in_progress() {
    if !on_path("chromium") {
        println!("SKIPPED: chromium is not installed (Debian package chromium)");
        return;
    }
    let fake = Fake::start(&["fake.test"]).await;
    let (_, digest) = serve_slow_blob(&fake, "lib/slow", (2 << 20, 82), 200, 100);
    let (_, small_digest) = serve_random_blob(&fake, "lib/app", 300_000, 83);
    let proxy = TestProxy::start(&fake, &[]).await;
    // Some history: a miss and a hit.
    for _ in 0..2 {
        let (status, _, _) = proxy
            .get(&format!("/v2/fake.test/lib/app/blobs/{small_digest}"))
            .await;
        assert_eq!(status, 200);
    }
    let client = RawClient(proxy.addr);
    let path = format!("/v2/fake.test/lib/slow/blobs/{digest}");
    let download = tokio::spawn(async move { client.get(&path, &[]).await });
    // Wait until the download shows progress.
    let mut started = false;
    for _ in 0..400 {
        let (_, _, body) = proxy.get("/status.json").await;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if json["downloads"][0]["bytes"].as_u64().unwrap_or(0) > 0 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started, "the download never started");

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", proxy.addr);
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--no-proxy-server".into(),
        format!("--user-data-dir={}", profile.path().display()),
        "--enable-logging=stderr".into(),
        "--v=0".into(),
        "--virtual-time-budget=3000".into(),
    ];
    if let Some(shot) = std::env::var_os("REGISTRY_PROXY_STATUS_SCREENSHOT") {
        // For a human to look at: the same page as a picture.
        let mut shot_args = args.clone();
        shot_args.push(format!("--screenshot={}", shot.to_string_lossy()));
        shot_args.push("--window-size=1280,1100".into());
        shot_args.push(url.clone());
        let mut chromium = Command::new("chromium");
        chromium.args(&shot_args);
        run(chromium, Vec::new(), Duration::from_secs(120)).await;
    }
    args.push("--dump-dom".into());
    args.push(url);
    let mut chromium = Command::new("chromium");
    chromium.args(&args);
    let out = run(chromium, Vec::new(), Duration::from_secs(120)).await;
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed:\n{log}");
    // Chromium reports every console message (errors, CSP violations, uncaught exceptions) as a
    // `CONSOLE` line on stderr; the page writes none of its own.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console messages:\n{}",
        console.join("\n")
    );
    // The script ran, fetched the status, and drew the download with its progress.
    assert!(dom.contains("id=\"live\" class=\"ok\""), "{dom}");
    assert!(
        dom.contains("<div class=\"big\" id=\"hit-ratio\">50.0%</div>"),
        "{dom}"
    );
    let row = dom
        .split(&format!("data-digest=\"{digest}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no row for the download in\n{dom}"));
    let row = row.split("</tr>").next().unwrap();
    assert!(row.contains("fake.test/lib/slow"), "{row}");
    assert!(
        row.contains("<progress") && row.contains("max=\"2097152\""),
        "{row}"
    );
    assert!(row.contains(" of 2.00 MiB ("), "{row}");
    download.abort();
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn refusals_and_verify_checks_are_counted() {
    // Client authentication on: a CONNECT without Proxy-Authorization (407), an admin page
    // without a user (401), a registry request that must log in first (401).
    let fake = Fake::start(&["fake.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&htpasswd, format!("ops:{hash}\n")).unwrap();
    let proxy = TestProxy::start(&fake, &[("PROXY_HTPASSWD", htpasswd.to_str().unwrap())]).await;
    let (_, status_line) = connect(proxy.addr, "fake.test:443").await;
    assert!(status_line.contains(" 407"), "{status_line}");
    assert_eq!(proxy.get("/metrics").await.0, 401);
    assert_eq!(proxy.get("/v2/").await.0, 401);
    let (status, _, body) = proxy.get_as("/metrics", &basic("ops", "pw")).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        r#"registry_proxy_refusals_total{reason="proxy_auth",status="407"} 1"#,
        r#"registry_proxy_refusals_total{reason="admin_auth",status="401"} 1"#,
        r#"registry_proxy_refusals_total{reason="login",status="401"} 1"#,
    ] {
        assert!(has_line(&text, line), "no {line:?} in\n{text}");
    }

    // verify mode (no central credentials for a private upstream): the upstream is asked about
    // each credential before a cached byte goes out.
    let fake = Fake::start(&["fake.test"]).await;
    fake.require_basic("alice", "alice-pw");
    let (_, digest) = serve_random_blob(&fake, "team/app", 30_000, 84);
    let proxy = TestProxy::start(&fake, &[]).await;
    let path = format!("/v2/fake.test/team/app/blobs/{digest}");
    let alice = basic("alice", "alice-pw");
    assert_eq!(proxy.get_as(&path, &alice).await.0, 200);
    // Anonymous: upstream refuses the anonymous probe, the client is asked to log in.
    assert_eq!(proxy.get(&path).await.0, 401);
    // A wrong password: upstream refuses it.
    let mallory = basic("alice", "guess");
    assert_eq!(proxy.get_as(&path, &mallory).await.0, 401);
    // alice again: answered from what upstream said before.
    assert_eq!(proxy.get_as(&path, &alice).await.0, 200);
    let (_, _, body) = proxy.get("/metrics").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        r#"registry_proxy_refusals_total{reason="verify",status="401"} 2"#,
        r#"registry_proxy_verify_checks_total{registry="fake.test",result="remembered"} 1"#,
    ] {
        assert!(has_line(&text, line), "no {line:?} in\n{text}");
    }
    let refused = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"registry_proxy_verify_checks_total{registry="fake.test",result="refused"} "#,
            )
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(refused >= 2, "{text}");
}
