//! Single requests (curl), and the registry login flow.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::proxy::Proxy;

/// How a single request reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// Straight to the proxy's plain-HTTP listener (mirror mode): the URL names the proxy.
    Mirror,
    /// Through CONNECT, trusting the proxy CA: the URL names the registry (`https://basic.test/…`);
    /// with `Some("user:password")` as `Proxy-Authorization: Basic`.
    Connect(Option<&'static str>),
    /// An absolute-form request (`GET http://registry/… HTTP/1.1`) to the proxy, optionally with
    /// `Proxy-Authorization: Basic`.
    Forward(Option<&'static str>),
}

/// One HTTP response: the status, the headers of the final response, the body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// The proxy's answer to CONNECT (0 when there was none).
    pub(crate) connect_status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The start of the body if it is text, else its length.
    pub(crate) fn text(&self) -> String {
        match std::str::from_utf8(&self.body) {
            Ok(t) => t.chars().take(600).collect(),
            Err(_) => format!("<{} bytes, not UTF-8>", self.body.len()),
        }
    }

    /// The registry error code of a JSON error body (`{"errors":[{"code":…}]}`).
    pub(crate) fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_owned)
    }

    /// Short form for messages: status, challenge, the start of the body.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} (CONNECT {}) www-authenticate={:?} proxy-authenticate={:?} body={:?}",
            self.status,
            self.connect_status,
            self.header("www-authenticate"),
            self.header("proxy-authenticate"),
            self.text()
        )
    }
}

impl Proxy {
    /// The proxy CA as a PEM file (fetched from `GET /ca.crt` the first time).
    pub(crate) fn ca_pem(&self) -> PathBuf {
        let pem = self.client_ca_dir().join("proxy-ca.pem");
        if !pem.exists() {
            let tmp = pem.with_extension("tmp");
            let status = Command::new("curl")
                .args(["-fsS", "--noproxy", "*", "--max-time", "10", "-o"])
                .arg(&tmp)
                .arg(format!("{}/ca.crt", self.url()))
                .status()
                .expect("run curl");
            assert!(status.success(), "GET {}/ca.crt failed", self.url());
            std::fs::rename(&tmp, &pem).expect("rename proxy CA");
        }
        pem
    }

    /// One request with curl `args` (`-u`, `-H`, `--data`, `-X`…) to `url` the `way` given.
    pub(crate) fn curl(&self, way: Way, url: &str, args: &[&str]) -> Response {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.path().join("curl");
        std::fs::create_dir_all(&dir).expect("mkdir curl");
        let (head, body) = (dir.join(format!("{n}.h")), dir.join(format!("{n}.b")));
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "120",
            "-w",
            "%{http_code} %{http_connect}",
            "-D",
        ])
        .arg(&head)
        .arg("-o")
        .arg(&body);
        match way {
            Way::Mirror => {
                cmd.args(["--noproxy", "*"]);
            }
            Way::Connect(user) => {
                cmd.args(["--proxytunnel", "-x", &self.url(), "--cacert"])
                    .arg(self.ca_pem());
                if let Some(user) = user {
                    cmd.args(["--proxy-user", user]);
                }
            }
            Way::Forward(user) => {
                cmd.args(["-x", &self.url()]);
                if let Some(user) = user {
                    cmd.args(["--proxy-user", user]);
                }
            }
        }
        let out = cmd
            .args(args)
            .arg(url)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let codes = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut codes = codes.split_whitespace().map(|c| c.parse().unwrap_or(0));
        let (status, connect_status) = (codes.next().unwrap_or(0), codes.next().unwrap_or(0));
        let head_text = std::fs::read_to_string(&head).unwrap_or_default();
        let body_bytes = std::fs::read(&body).unwrap_or_default();
        std::fs::remove_file(&head).ok();
        std::fs::remove_file(&body).ok();
        // the last header block is the final response (after CONNECT's, after 100 Continue)
        let last = head_text
            .split("\r\n\r\n")
            .filter(|b| b.starts_with("HTTP/"))
            .last()
            .unwrap_or("");
        let headers = last
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let status = if status == 0 { connect_status } else { status };
        assert!(
            status != 0,
            "curl {way:?} {args:?} {url}: no response ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Response {
            status,
            connect_status,
            headers,
            body: body_bytes,
        }
    }

    /// What a registry client gets for `url` with `creds` (`user:password`, `None` = anonymous):
    /// the request; on a `401` with a Bearer challenge, the token request to its realm (the same
    /// way, with Basic `creds` when given) and, if that issued a token, the request again with it —
    /// the login flow of docker, containerd and containers/image.
    pub(crate) fn registry_get(
        &self,
        way: Way,
        url: &str,
        accept: &str,
        creds: Option<&str>,
    ) -> Login {
        let accept = format!("Accept: {accept}");
        let first = self.curl(way, url, &["-H", &accept]);
        let Some(token) = self.token_request(way, url, &first, creds) else {
            return Login {
                first: first.clone(),
                token: None,
                last: first,
            };
        };
        let Some(issued) = token_of(&token) else {
            return Login {
                first,
                token: Some(token.clone()),
                last: token,
            };
        };
        let bearer = format!("Authorization: Bearer {issued}");
        let last = self.curl(way, url, &["-H", &accept, "-H", &bearer]);
        Login {
            first,
            token: Some(token),
            last,
        }
    }

    /// If `first` (the answer to `url`) is a `401` with a Bearer challenge: the token request to
    /// its realm for its service and scope, with Basic `creds` when given.
    pub(crate) fn token_request(
        &self,
        way: Way,
        url: &str,
        first: &Response,
        creds: Option<&str>,
    ) -> Option<Response> {
        let challenge = first
            .header("www-authenticate")
            .filter(|c| first.status == 401 && c.to_ascii_lowercase().starts_with("bearer "))
            .map(parse_challenge)?;
        let realm = challenge.get("realm").cloned().unwrap_or_default();
        let scope = challenge
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", repository_of(url)));
        let token_url = format!(
            "{realm}?service={}&scope={}",
            percent(challenge.get("service").map_or("", String::as_str)),
            percent(&scope)
        );
        let mut args: Vec<&str> = Vec::new();
        if let Some(creds) = creds {
            args.extend(["-u", creds]);
        }
        Some(self.curl(way, &token_url, &args))
    }
}

/// The token a `200` token response carries (`token`, or `access_token`).
pub(crate) fn token_of(response: &Response) -> Option<String> {
    if response.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    v["token"]
        .as_str()
        .or_else(|| v["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// A request made the way registry clients make it ([`Proxy::registry_get`]).
#[derive(Debug, Clone)]
pub(crate) struct Login {
    /// The request without credentials.
    pub(crate) first: Response,
    /// The token request, if the first answer was a Bearer challenge.
    pub(crate) token: Option<Response>,
    /// What the client ended with: the request with the token, or the failed token request, or the
    /// first answer.
    pub(crate) last: Response,
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
pub(crate) fn parse_challenge(value: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let rest = value.split_once(' ').map_or("", |(_, r)| r);
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

/// The repository a `…/v2/<name>/(manifests|blobs)/…` URL names.
fn repository_of(url: &str) -> String {
    let path = url.split_once("/v2/").map_or("", |(_, p)| p);
    let end = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|k| path.rfind(k))
        .max()
        .unwrap_or(path.len());
    path[..end].to_owned()
}

/// Percent-encodes everything but unreserved characters.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
