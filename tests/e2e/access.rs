//! Issue 7: who may use the proxy. Client authentication (`PROXY_HTPASSWD`) on CONNECT and in
//! mirror mode, `verify` mode for private registries without central credentials, and the access
//! rules of the config file. Every denial is proved from the client's side (exit status, HTTP
//! status, no byte of the object) and from the upstream registry's own access log (what the proxy
//! fetched for whom); every success from the content's digests.

use std::process::{Command, Stdio};

use crate::harness::{
    self, Env, HUB, Image, Login, Opts, Proxy, Pull, Relay, RepoLog, Response, Via, Watch, Way,
    assert_same_dirs, token_of, verify_content_store, verify_skopeo_dir,
};

/// `Accept` of a registry client asking for a manifest of any kind.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

fn skopeo_pull<'a>(image: &'a str, args: &'a [&'a str]) -> Pull<'a> {
    Pull {
        wrapper: "skopeo_pull.sh",
        image,
        args,
        envs: &[],
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `podman pull -q` prints the image ID, the config digest's hex: podman verified every blob.
fn assert_podman_image(out: &str, image: &Image) {
    let id = out.lines().last().unwrap_or("").trim();
    assert_eq!(
        Some(id),
        image.config.strip_prefix("sha256:"),
        "podman pulled another image (output {out:?})"
    );
}

/// The proxy's answer to a request it must refuse: `401` with its own Bearer challenge naming
/// `realm`, or `403` with the registry error `DENIED` — and none of `digest`'s bytes.
fn assert_refused(r: &Response, realm: &str, digest: &str, what: &str) {
    match r.status {
        401 => {
            let challenge = r.header("www-authenticate").unwrap_or("");
            let params = harness::parse_challenge(challenge);
            assert!(
                challenge.to_ascii_lowercase().starts_with("bearer ")
                    && params.get("realm").map(String::as_str) == Some(realm)
                    && params.get("service").map(String::as_str) == Some("registry-proxy"),
                "{what}: 401 without the proxy's challenge (realm {realm}): {}",
                r.summary()
            );
        }
        403 => assert_eq!(
            r.error_code().as_deref(),
            Some("DENIED"),
            "{what}: 403 without the registry error DENIED: {}",
            r.summary()
        ),
        _ => panic!("{what}: expected 401 or 403, got {}", r.summary()),
    }
    assert_body_is_not(r, digest, what);
}

/// A refused request's body is an error, not the object.
fn assert_body_is_not(r: &Response, digest: &str, what: &str) {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    assert!(
        r.body.len() < 4096 && sha256_hex(&r.body) != hex,
        "{what}: the body of a refused request holds {} bytes (object {digest}): {}",
        r.body.len(),
        r.summary()
    );
}

/// A registry client's whole attempt (request, token, request with the token) ends refused: the
/// first answer is the proxy's challenge or a denial; if a token was issued, the request with it
/// is refused too. A token request with credentials may itself be refused (then the client has
/// nothing to use); an anonymous one gets an anonymous token.
fn assert_login_refused(login: &Login, creds: Option<&str>, realm: &str, digest: &str, what: &str) {
    assert_refused(
        &login.first,
        realm,
        digest,
        &format!("{what} (no credentials yet)"),
    );
    let Some(token) = &login.token else {
        return; // a 403: nothing to log in to
    };
    if token_of(token).is_some() {
        assert_refused(
            &login.last,
            realm,
            digest,
            &format!("{what} (with its token)"),
        );
    } else {
        assert!(
            creds.is_some(),
            "{what}: an anonymous token request got no token: {}",
            token.summary()
        );
        assert!(
            !(200..300).contains(&token.status),
            "{what}: the token endpoint answered {} without a token",
            token.summary()
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 1. CONNECT with proxy authentication

/// `PROXY_HTPASSWD` on the CONNECT path: without `Proxy-Authorization` or with a wrong password,
/// CONNECT and absolute-form requests get `407` + `Proxy-Authenticate: Basic realm="registry-proxy"`,
/// skopeo, podman and ctr fail (cold and warm) and the registry sees no request at all; with
/// `HTTPS_PROXY=http://alice:pw@127.0.0.1:PORT` all three pull (the first a miss, then hits).
#[test]
fn connect_proxy_auth_skopeo_podman_ctr() {
    let Some(env) = harness::env() else { return };
    let (host, repo) = ("registry.test", "access/connect");
    let small = env.image("SMALL");
    harness::push_copy(&format!("{}:v1", small.repo), &format!("{repo}:v1"));
    let image = format!("{host}/{repo}:v1");
    let _claim = harness::claim(&[(host, repo)]);
    let proxy = Proxy::start_with(
        env,
        &Opts {
            users: &[("alice", "proxy-pw-alice")],
            ..Opts::default()
        },
    );
    let log = RepoLog::new(env, host, repo);

    let blob_url = format!("https://{host}/v2/{repo}/blobs/{}", small.layers[0].0);
    for (way, what) in [
        (Way::Connect(None), "CONNECT without Proxy-Authorization"),
        (
            Way::Connect(Some("alice:wrong")),
            "CONNECT with a wrong password",
        ),
        (
            Way::Connect(Some("mallory:proxy-pw-alice")),
            "CONNECT as an unknown user",
        ),
    ] {
        let r = proxy.curl(way, &blob_url, &[]);
        assert_asks_for_proxy_credentials(r.connect_status, &r, what);
    }
    let absolute = format!("http://{host}/v2/{repo}/manifests/v1");
    for (way, what) in [
        (
            Way::Forward(None),
            "absolute-form without Proxy-Authorization",
        ),
        (
            Way::Forward(Some("alice:wrong")),
            "absolute-form with a wrong password",
        ),
    ] {
        let r = proxy.curl(way, &absolute, &[]);
        assert_asks_for_proxy_credentials(r.status, &r, what);
    }

    // cold: every client refused before anything reaches the registry
    for (wrapper, via) in [
        ("skopeo_pull.sh", Via::ConnectAs("alice:wrong")),
        ("podman_pull.sh", Via::Connect),
        ("ctr_pull.sh", Via::ConnectAs("alice:wrong")),
    ] {
        let run = proxy.pull_fails(
            env,
            via,
            &Pull {
                wrapper,
                image: &image,
                args: &[],
                envs: &[],
            },
        );
        assert!(
            run.stderr.contains("407") || run.stderr.contains("Proxy Authentication Required"),
            "{wrapper} failed for another reason than the 407: {}",
            run.describe()
        );
    }
    let since = log.since();
    assert!(
        since.is_empty(),
        "refused clients reached {host}: {since:#?}"
    );

    // with the proxy user: skopeo (miss), podman and ctr (hits)
    let mut watch = Watch::new(env, host, repo, &small.blobs());
    let ok = Via::ConnectAs("alice:proxy-pw-alice");
    let dir = proxy.skopeo(env, ok, &image, &[]);
    watch.assert_fetched(&small.layer_digests(), "skopeo with proxy credentials");
    verify_skopeo_dir(&dir, &small.digest, &small.blobs());
    watch.reset();
    let mark = proxy.mark();
    let (_, out) = proxy.pull(
        env,
        ok,
        &Pull {
            wrapper: "podman_pull.sh",
            image: &image,
            args: &[],
            envs: &[],
        },
    );
    assert_podman_image(&out, &small);
    let store = proxy.ctr(env, ok, &image, &[]);
    verify_content_store(&store, &small.blobs());
    watch.assert_no_blob_requests("podman and ctr after skopeo", false);
    proxy.assert_blob_hits(mark, host, repo, &small.blobs());

    // warm: still nothing without the right password
    let log = RepoLog::new(env, host, repo);
    proxy.pull_fails(
        env,
        Via::ConnectAs("alice:wrong"),
        &skopeo_pull(&image, &[]),
    );
    for way in [Way::Connect(None), Way::Connect(Some("alice:wrong"))] {
        let r = proxy.curl(way, &blob_url, &[]);
        assert_eq!(r.connect_status, 407, "warm {way:?}: {}", r.summary());
        assert_body_is_not(&r, &small.layers[0].0, "warm CONNECT refused");
    }
    let since = log.since();
    assert!(
        since.is_empty(),
        "refused clients reached {host}: {since:#?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 2. Mirror mode login

/// `PROXY_HTPASSWD` in mirror mode: `/v2/` challenges with the proxy's own token endpoint, which
/// issues tokens for proxy users (`GET` with Basic, `POST` password and refresh grants) and
/// anonymous tokens that open nothing. skopeo (`--src-creds`, path prefix), podman (`podman login`
/// to the mirror, `registries.conf` from `registry-proxy setup podman`) and dockerd
/// (`registry-mirrors`, credentials for docker.io in the CLI's config.json, which dockerd offers to
/// the mirror) pull after logging in, and fail without (or with wrong) credentials while the
/// registries see no request.
#[test]
fn mirror_login_skopeo_podman_dockerd() {
    let Some(env) = harness::env() else { return };
    let small = env.image("SMALL");
    let (host, repo) = ("registry.test", "access/mirror");
    let hub_repo = "access/hub";
    harness::push_copy(&format!("{}:v1", small.repo), &format!("{repo}:v1"));
    harness::push_copy(&format!("{}:v1", small.repo), &format!("{hub_repo}:v1"));
    let _claim = harness::claim(&[(host, repo), (HUB, hub_repo)]);
    let proxy = Proxy::start_with(
        env,
        &Opts {
            users: &[("mia", "mirror-pw-mia")],
            ..Opts::default()
        },
    );
    let realm = format!("http://{}/token", proxy.addr);
    let manifest_url = format!("{}/v2/{host}/{repo}/manifests/v1", proxy.url());

    // the login flow itself
    let r = proxy.curl(Way::Mirror, &format!("{}/v2/", proxy.url()), &[]);
    assert_eq!(r.status, 401, "/v2/ without credentials: {}", r.summary());
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Bearer realm=\"{realm}\",service=\"registry-proxy\"").as_str()),
        "/v2/ challenge"
    );
    let scope = format!("repository:{host}/{repo}:pull");
    let token_url = format!("{realm}?service=registry-proxy&scope={scope}");
    let anonymous = proxy.curl(Way::Mirror, &token_url, &[]);
    let anonymous = token_of(&anonymous)
        .unwrap_or_else(|| panic!("anonymous GET /token: {}", anonymous.summary()));
    let r = proxy.curl(
        Way::Mirror,
        &manifest_url,
        &[
            "-H",
            &format!("Accept: {MANIFEST_TYPES}"),
            "-H",
            &format!("Authorization: Bearer {anonymous}"),
        ],
    );
    assert_refused(
        &r,
        &realm,
        &small.digest,
        "manifest with an anonymous token",
    );
    let got = proxy.curl(Way::Mirror, &token_url, &["-u", "mia:mirror-pw-mia"]);
    let token = token_of(&got).unwrap_or_else(|| panic!("GET /token as mia: {}", got.summary()));
    let r = proxy.curl(
        Way::Mirror,
        &format!("{}/v2/", proxy.url()),
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert_eq!(r.status, 200, "/v2/ with mia's token: {}", r.summary());
    let form = format!(
        "grant_type=password&service=registry-proxy&scope={scope}&client_id=e2e&username=mia&password=mirror-pw-mia"
    );
    let posted = proxy.curl(Way::Mirror, &realm, &["--data", &form]);
    assert!(
        token_of(&posted).is_some(),
        "POST /token password grant: {}",
        posted.summary()
    );
    let posted_json: serde_json::Value =
        serde_json::from_slice(&posted.body).expect("token response is JSON");
    if let Some(refresh) = posted_json["refresh_token"].as_str() {
        let form = format!(
            "grant_type=refresh_token&service=registry-proxy&scope={scope}&client_id=e2e&refresh_token={refresh}"
        );
        let r = proxy.curl(Way::Mirror, &realm, &["--data", &form]);
        assert!(
            token_of(&r).is_some(),
            "POST /token refresh grant: {}",
            r.summary()
        );
    }
    for (creds, what) in [(None, "anonymous"), (Some("mia:wrong"), "wrong password")] {
        let login = proxy.registry_get(Way::Mirror, &manifest_url, MANIFEST_TYPES, creds);
        assert_login_refused(
            &login,
            creds,
            &realm,
            &small.digest,
            &format!("mirror manifest, {what}"),
        );
    }

    // clients without (or with wrong) credentials
    let log = RepoLog::new(env, host, repo);
    let hub_log = RepoLog::new(env, HUB, hub_repo);
    let prefixed = format!("docker://{}/{host}/{repo}:v1", proxy.addr);
    proxy.pull_fails(
        env,
        Via::Mirror,
        &skopeo_pull(&prefixed, &["--src-tls-verify=false"]),
    );
    proxy.pull_fails(
        env,
        Via::Mirror,
        &skopeo_pull(
            &prefixed,
            &["--src-tls-verify=false", "--src-creds", "mia:wrong"],
        ),
    );
    let setup = proxy.setup("podman", &["--registries", host]);
    let conf = setup
        .join("etc/containers/registries.conf.d/50-registry-proxy.conf")
        .display()
        .to_string();
    let image = format!("{host}/{repo}:v1");
    let podman_without = [("PODMAN_REGISTRIES_CONF", conf.as_str())];
    proxy.pull_fails(
        env,
        Via::Mirror,
        &Pull {
            wrapper: "podman_pull.sh",
            image: &image,
            args: &[],
            envs: &podman_without,
        },
    );
    let mirrors = proxy.url();
    let hub_image = format!("{hub_repo}:v1");
    proxy.pull_fails(
        env,
        Via::Mirror,
        &Pull {
            wrapper: "dockerd_pull.sh",
            image: &hub_image,
            args: &[],
            envs: &[("DOCKERD_MIRRORS", &mirrors)],
        },
    );
    log.assert_no_get("mirror clients without credentials", true);
    hub_log.assert_no_get("dockerd without credentials", true);

    // logged in
    let mut watch = Watch::new(env, host, repo, &small.blobs());
    let dir = proxy.skopeo(
        env,
        Via::Mirror,
        &prefixed,
        &["--src-tls-verify=false", "--src-creds", "mia:mirror-pw-mia"],
    );
    watch.assert_fetched(&small.layer_digests(), "skopeo --src-creds (path prefix)");
    verify_skopeo_dir(&dir, &small.digest, &small.blobs());
    watch.reset();
    let mark = proxy.mark();
    let login = format!("{} mia:mirror-pw-mia", proxy.addr);
    let (_, out) = proxy.pull(
        env,
        Via::Mirror,
        &Pull {
            wrapper: "podman_pull.sh",
            image: &image,
            args: &[],
            envs: &[("PODMAN_REGISTRIES_CONF", &conf), ("PODMAN_LOGIN", &login)],
        },
    );
    assert_podman_image(&out, &small);
    watch.assert_no_blob_requests("podman after podman login (registries.conf mirror)", false);
    proxy.assert_blob_hits(mark, host, repo, &small.blobs());

    // the blobs are in the cache already (same digests): the proxy asks Docker Hub (HEAD) whether
    // access/hub has them rather than fetching them again
    let hub_log = RepoLog::new(env, HUB, hub_repo);
    let mark = proxy.mark();
    let (_, out) = proxy.pull(
        env,
        Via::Mirror,
        &Pull {
            wrapper: "dockerd_pull.sh",
            image: &hub_image,
            args: &[],
            envs: &[
                ("DOCKERD_MIRRORS", &mirrors),
                ("DOCKER_AUTH", "mia:mirror-pw-mia"),
            ],
        },
    );
    assert!(out.contains(&hub_image), "docker pull output: {out}");
    proxy.assert_blobs_served(mark, "docker.io", hub_repo, &small.blobs());
    let asked = hub_log.since();
    assert!(
        asked
            .iter()
            .any(|l| l.path.starts_with(&format!("/v2/{hub_repo}/manifests/")) && l.status == 200),
        "dockerd's pull through the mirror never had Docker Hub's manifest: {asked:#?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 3. verify mode

/// A private registry without central credentials, and its users.
struct Private {
    host: &'static str,
    /// A user upstream lets pull.
    good: &'static str,
    /// Clients upstream refuses: `(what, credentials)`.
    bad: &'static [(&'static str, Option<&'static str>)],
}

const BASIC: Private = Private {
    host: "basic.test",
    good: "alice:s3cret-basic",
    bad: &[
        ("anonymous", None),
        ("wrong password", Some("alice:wrong-password")),
    ],
};

const TOKEN: Private = Private {
    host: "token.test",
    good: "bob:s3cret-token",
    bad: &[
        ("anonymous", None),
        ("wrong password", Some("bob:wrong-password")),
        ("valid user without access", Some("dave:s3cret-dave")),
    ],
};

/// Without `AUTH_REGISTRIES` (so basic.test is in `verify` mode, the default) and without client
/// authentication: alice pulls `private/secret` from basic.test with her own credentials (skopeo,
/// path prefix, a miss; then CONNECT, hits). Anonymous clients and a wrong password get a `401`
/// challenge or `403` and no byte — by tag, by digest and by blob, in mirror mode and through
/// CONNECT, before she pulled (nothing is fetched for them), after (nothing comes from the cache)
/// and while her download of a 256 MiB private layer is still running (slowed by a relay in
/// `CONNECT_TO`). The blobs she cached do not open `private/secret` on token.test either.
#[test]
fn verify_mode_basic_auth_registry() {
    let Some(env) = harness::env() else { return };
    let secret = env.image("SECRET");
    let big = env.image("BIG");
    verify_mode(env, &BASIC, &secret, &big, |proxy| {
        // the blobs are in the cache now; token.test's private/secret stays closed to its refused
        // clients all the same (nothing is counted upstream: no claim on token.test needed)
        let base = format!("{}/v2/{}/{}", proxy.url(), TOKEN.host, secret.repo);
        refuse_all(
            proxy,
            &TOKEN,
            Way::Mirror,
            &base,
            &secret,
            "blobs cached from basic.test",
        );
    });
}

/// The same on token.test (Bearer via auth.test, the proxy fetching tokens with the client's own
/// credentials): bob pulls; anonymous clients, a wrong password and dave (a valid token-server user
/// whose tokens grant nothing) get nothing, cold, warm and while bob's download is in flight.
#[test]
fn verify_mode_token_registry() {
    let Some(env) = harness::env() else { return };
    let secret = env.image("SECRET");
    let big = env.image("BIG");
    verify_mode(env, &TOKEN, &secret, &big, |_| {});
}

fn verify_mode(env: &Env, p: &Private, secret: &Image, big: &Image, then: impl FnOnce(&Proxy)) {
    harness::push_copy(&format!("{}:v1", big.repo), "private/big:v1");
    let _claim = harness::claim(&[(p.host, &secret.repo), (p.host, "private/big")]);
    let relay = Relay::start(&format!("{}:443", p.host));
    let connect_to = format!("{}:443:{}", p.host, relay.addr);
    let proxy = Proxy::start_with(
        env,
        &Opts {
            auth_registries: None,
            env: &[("CONNECT_TO", &connect_to)],
            ..Opts::default()
        },
    );
    // no client authentication, but a registry in verify mode: /v2/ sends clients to log in, in
    // mirror mode to the proxy's /token, through CONNECT to the intercepted registry's own host
    for (way, url, realm) in [
        (
            Way::Mirror,
            format!("{}/v2/", proxy.url()),
            format!("http://{}/token", proxy.addr),
        ),
        (
            Way::Connect(None),
            format!("https://{}/v2/", p.host),
            format!("https://{}/token", p.host),
        ),
    ] {
        let r = proxy.curl(way, &url, &[]);
        assert_eq!(
            (r.status, r.header("www-authenticate")),
            (
                401,
                Some(format!("Bearer realm=\"{realm}\",service=\"registry-proxy\"").as_str())
            ),
            "{way:?} {url}: {}",
            r.summary()
        );
    }
    verify_private(env, &proxy, p, secret);
    verify_in_flight(&proxy, p, big, &relay);
    then(&proxy);
}

/// The three ways to ask for an image's content: manifest by tag, by digest, a layer.
fn objects(base: &str, image: &Image) -> [(String, &'static str, String, &'static str); 3] {
    [
        (
            format!("{base}/manifests/v1"),
            MANIFEST_TYPES,
            image.digest.clone(),
            "manifest by tag",
        ),
        (
            format!("{base}/manifests/{}", image.digest),
            MANIFEST_TYPES,
            image.digest.clone(),
            "manifest by digest",
        ),
        (
            format!("{base}/blobs/{}", image.layers[0].0),
            "*/*",
            image.layers[0].0.clone(),
            "layer blob",
        ),
    ]
}

/// Every bad client of `p`, every object, `way`: refused (with a direct Basic `Authorization` on the
/// request as well as through the token flow).
fn refuse_all(proxy: &Proxy, p: &Private, way: Way, base: &str, image: &Image, when: &str) {
    let realm = match way {
        Way::Mirror => format!("http://{}/token", proxy.addr),
        _ => format!("https://{}/token", p.host),
    };
    for (url, accept, digest, object) in objects(base, image) {
        for (who, creds) in p.bad {
            let what = format!("{when}, {way:?}, {object} of {}, {who}", p.host);
            let login = proxy.registry_get(way, &url, accept, *creds);
            assert_login_refused(&login, *creds, &realm, &digest, &what);
            if let Some(creds) = creds {
                let r = proxy.curl(
                    way,
                    &url,
                    &["-H", &format!("Accept: {accept}"), "-u", creds],
                );
                assert_refused(
                    &r,
                    &realm,
                    &digest,
                    &format!("{what} (Basic on the request)"),
                );
            }
        }
    }
}

fn verify_private(env: &Env, proxy: &Proxy, p: &Private, secret: &Image) {
    let host = p.host;
    let repo = &secret.repo;
    let mirror_base = format!("{}/v2/{host}/{repo}", proxy.url());
    let connect_base = format!("https://{host}/v2/{repo}");
    let prefixed = format!("docker://{}/{host}/{repo}:v1", proxy.addr);
    let connect_image = format!("{host}/{repo}:v1");
    let wrong = p.bad[1].1.expect("a wrong password");

    // cold: refused, and the registry served no content on their behalf
    let log = RepoLog::new(env, host, repo);
    refuse_all(proxy, p, Way::Mirror, &mirror_base, secret, "cold");
    proxy.pull_fails(
        env,
        Via::Mirror,
        &skopeo_pull(&prefixed, &["--src-tls-verify=false"]),
    );
    log.assert_no_get(&format!("{host}: cold requests of refused clients"), false);

    // the owner pulls with her own credentials
    let mut watch = Watch::new(env, host, repo, &secret.blobs());
    let first = proxy.skopeo(
        env,
        Via::Mirror,
        &prefixed,
        &["--src-tls-verify=false", "--src-creds", p.good],
    );
    watch.assert_fetched(&secret.layer_digests(), &format!("{host}: owner's pull"));
    verify_skopeo_dir(&first, &secret.digest, &secret.blobs());
    // the same requests the refused clients make, as the owner: 200 and the object's bytes
    for (url, accept, digest, object) in objects(&mirror_base, secret) {
        let login = proxy.registry_get(Way::Mirror, &url, accept, Some(p.good));
        assert_eq!(
            (login.last.status, sha256_hex(&login.last.body)),
            (200, digest.trim_start_matches("sha256:").to_owned()),
            "{host}: the owner's {object}: {}",
            login.last.summary()
        );
    }

    // warm: the cache has everything, the refused clients still get nothing
    let log = RepoLog::new(env, host, repo);
    refuse_all(proxy, p, Way::Mirror, &mirror_base, secret, "warm");
    refuse_all(proxy, p, Way::Connect(None), &connect_base, secret, "warm");
    proxy.pull_fails(env, Via::Connect, &skopeo_pull(&connect_image, &[]));
    proxy.pull_fails(
        env,
        Via::Mirror,
        &skopeo_pull(&prefixed, &["--src-tls-verify=false", "--src-creds", wrong]),
    );
    log.assert_no_get(&format!("{host}: warm requests of refused clients"), false);

    // the owner again, through CONNECT (the challenge's realm is the registry's own host)
    watch.reset();
    let mark = proxy.mark();
    let second = proxy.skopeo(env, Via::Connect, &connect_image, &["--src-creds", p.good]);
    watch.assert_no_blob_requests(&format!("{host}: owner's second pull (CONNECT)"), false);
    proxy.assert_blob_hits(mark, host, repo, &secret.blobs());
    assert_same_dirs(&first, &second);
}

/// While the owner's download of the 256 MiB private layer is in flight (the relay slows the
/// registry's answer to 8 MiB/s), every bad client asking for that layer is refused; proved to have
/// overlapped by the relay's byte count (less than the layer had come through) and the owner's
/// client still running after the last refusal.
fn verify_in_flight(proxy: &Proxy, p: &Private, big: &Image, relay: &Relay) {
    let host = p.host;
    let (layer, size) = big.layers[0].clone();
    let url = format!("{}/v2/{host}/private/big/blobs/{layer}", proxy.url());
    let first = proxy.curl(Way::Mirror, &url, &["-I"]);
    let token = proxy
        .token_request(Way::Mirror, &url, &first, Some(p.good))
        .as_ref()
        .and_then(token_of)
        .unwrap_or_else(|| panic!("{host}: no token for the owner: {}", first.summary()));
    let already = relay.most_down();
    relay.throttle(8 << 20);
    let out_file = proxy.dir.path().join(format!("owner-{host}.out"));
    let err_file = proxy.dir.path().join(format!("owner-{host}.err"));
    let mut owner = harness::Reaped(
        Command::new("curl")
            .args([
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "300",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code} %{size_download}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_file).expect("create owner.out"))
            .stderr(std::fs::File::create(&err_file).expect("create owner.err"))
            .spawn()
            .expect("start the owner's download"),
    );
    // wait (no deadline but the download's own) until the layer is coming through the relay
    while relay.most_down() < already + (4 << 20) {
        if let Ok(Some(status)) = owner.0.try_wait() {
            relay.release();
            panic!(
                "{host}: the owner's download ended ({status}) before 4 MiB came through the relay"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let realm = format!("http://{}/token", proxy.addr);
    for (who, creds) in p.bad {
        let what = format!("{host}: layer in flight, {who}");
        let login = proxy.registry_get(Way::Mirror, &url, "*/*", *creds);
        assert_login_refused(&login, *creds, &realm, &layer, &what);
    }
    let connect_url = format!("https://{host}/v2/private/big/blobs/{layer}");
    let login = proxy.registry_get(Way::Connect(None), &connect_url, "*/*", None);
    assert_login_refused(
        &login,
        None,
        &format!("https://{host}/token"),
        &layer,
        &format!("{host}: layer in flight, anonymous through CONNECT"),
    );
    let through = relay.most_down();
    let running = owner.0.try_wait().expect("poll the owner's curl").is_none();
    relay.release();
    owner.0.wait().expect("wait for the owner's download");
    eprintln!(
        "{host}: refusals made while {} of {size} bytes of the layer had come through",
        through.saturating_sub(already)
    );
    assert!(
        running && through < size,
        "{host}: the refusals did not overlap the owner's download (still running: {running}, \
         {through} of {size} bytes through the relay)"
    );
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        format!("200 {size}"),
        "{host}: the owner's download of the big layer: {}",
        std::fs::read_to_string(&err_file).unwrap_or_default()
    );
    // and once it is cached
    for (who, creds) in p.bad {
        let login = proxy.registry_get(Way::Mirror, &url, "*/*", *creds);
        assert_login_refused(
            &login,
            *creds,
            &realm,
            &layer,
            &format!("{host}: cached big layer, {who}"),
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 4. access rules

const RULES: &str = r#"
[groups]
ci = ["ci1"]

[[access]]
match = "basic.test/*"
pull = ["@ci"]
fetch = ["bob"]
"#;

/// Central credentials for basic.test, proxy users ci1 and bob, and a rule that lets the `ci` group
/// pull (read what is cached) and bob fetch (go upstream): ci1 is refused a cold image (403
/// DENIED, no request upstream, mirror and CONNECT); bob pulls it (misses); then ci1 pulls it from
/// the cache (hits, no GET upstream), in mirror mode and through CONNECT.
#[test]
fn rules_pull_and_fetch() {
    let Some(env) = harness::env() else { return };
    let small = env.image("SMALL");
    let (host, repo) = ("basic.test", "access/rules");
    harness::push_copy(&format!("{}:v1", small.repo), &format!("{repo}:v1"));
    let _claim = harness::claim(&[(host, repo)]);
    let proxy = Proxy::start_with(
        env,
        &Opts {
            auth_registries: Some("basic.test:alice:s3cret-basic"),
            users: &[("ci1", "ci1-pw"), ("bob", "bob-pw")],
            config: Some(RULES),
            env: &[],
        },
    );
    let realm = format!("http://{}/token", proxy.addr);
    let mirror_base = format!("{}/v2/{host}/{repo}", proxy.url());
    let prefixed = format!("docker://{}/{host}/{repo}:v1", proxy.addr);
    let connect_image = format!("{host}/{repo}:v1");

    // cold: ci1 may not fetch
    let log = RepoLog::new(env, host, repo);
    for (url, accept, digest, object) in objects(&mirror_base, &small) {
        let login = proxy.registry_get(Way::Mirror, &url, accept, Some("ci1:ci1-pw"));
        assert_eq!(
            (login.last.status, login.last.error_code().as_deref()),
            (403, Some("DENIED")),
            "ci1, cold {object}: {}",
            login.last.summary()
        );
        assert_body_is_not(&login.last, &digest, &format!("ci1, cold {object}"));
        let anonymous = proxy.registry_get(Way::Mirror, &url, accept, None);
        assert_login_refused(
            &anonymous,
            None,
            &realm,
            &digest,
            &format!("anonymous, cold {object}"),
        );
    }
    let connect_url = format!("https://{host}/v2/{repo}/manifests/v1");
    let login = proxy.registry_get(
        Way::Connect(Some("ci1:ci1-pw")),
        &connect_url,
        MANIFEST_TYPES,
        None,
    );
    assert_eq!(
        (login.last.status, login.last.error_code().as_deref()),
        (403, Some("DENIED")),
        "ci1 through CONNECT, cold manifest: {}",
        login.last.summary()
    );
    proxy.pull_fails(
        env,
        Via::Mirror,
        &skopeo_pull(
            &prefixed,
            &["--src-tls-verify=false", "--src-creds", "ci1:ci1-pw"],
        ),
    );
    log.assert_no_get("ci1 on a cold image", true);

    // bob fetches
    let mut watch = Watch::new(env, host, repo, &small.blobs());
    let mark = proxy.mark();
    let first = proxy.skopeo(
        env,
        Via::Mirror,
        &prefixed,
        &["--src-tls-verify=false", "--src-creds", "bob:bob-pw"],
    );
    watch.assert_fetched(&small.layer_digests(), "bob's pull");
    verify_skopeo_dir(&first, &small.digest, &small.blobs());
    let misses: Vec<String> = proxy
        .requests_since(mark)
        .into_iter()
        .filter(|l| l.kind == "blob" && l.verdict == "MISS" && l.repo == repo)
        .map(|l| l.reference)
        .collect();
    for layer in small.layer_digests() {
        assert!(
            misses.contains(&layer),
            "bob's pull logged no MISS for {layer}: {misses:?}"
        );
    }

    // now ci1 reads it from the cache
    watch.reset();
    let log = RepoLog::new(env, host, repo);
    let mark = proxy.mark();
    let second = proxy.skopeo(
        env,
        Via::Mirror,
        &prefixed,
        &["--src-tls-verify=false", "--src-creds", "ci1:ci1-pw"],
    );
    assert_same_dirs(&first, &second);
    let third = proxy.skopeo(env, Via::ConnectAs("ci1:ci1-pw"), &connect_image, &[]);
    assert_same_dirs(&first, &third);
    watch.assert_no_blob_requests("ci1 after bob", false);
    log.assert_no_get("ci1 after bob", true);
    proxy.assert_blob_hits(mark, host, repo, &small.blobs());
}

/// Asserts a 407 (`status`: the CONNECT's or the request's own) whose `Proxy-Authenticate` asks
/// for the proxy's Basic credentials.
fn assert_asks_for_proxy_credentials(status: u16, r: &Response, what: &str) {
    assert_eq!(status, 407, "{what}: {}", r.summary());
    assert_eq!(
        r.header("proxy-authenticate"),
        Some("Basic realm=\"registry-proxy\""),
        "{what}: {}",
        r.summary()
    );
}
