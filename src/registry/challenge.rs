//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1) as registries send them:
//! `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"` and
//! `Basic realm="…"`, possibly several in one header.
//!
//! Scheme and parameter names are case-insensitive; values are a quoted-string (backslash
//! escapes) or a bare token (read leniently: up to the next comma or space, since some registries
//! send unquoted URLs). Unknown schemes (and their token68 or parameters) are skipped; garbage
//! ends in an empty or partial list, never a panic.

/// An authentication challenge the proxy can answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Challenge {
    /// Docker token auth: get a token from `realm` (a URL) with `service` and `scope`.
    Bearer {
        /// Token endpoint URL. Invariant: non-empty.
        realm: String,
        /// `service` parameter, to pass back to the realm.
        service: Option<String>,
        /// `scope` parameter the registry asked for, if any.
        scope: Option<String>,
    },
    /// HTTP Basic authentication.
    Basic {
        /// Protection space, informational.
        realm: Option<String>,
    },
}

/// All challenges in one `WWW-Authenticate` header value that we understand, in order. Bearer
/// challenges without a (non-empty) realm are skipped; for a repeated parameter the first wins.
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut cursor = Cursor {
        s: value.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    while let Some(raw) = cursor.next_challenge() {
        if let Some(challenge) = raw.into_challenge() {
            out.push(challenge);
        }
    }
    out
}

/// A challenge as written: scheme and (lower-cased name, value) parameters.
struct RawChallenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl RawChallenge {
    fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn into_challenge(self) -> Option<Challenge> {
        if self.scheme.eq_ignore_ascii_case("bearer") {
            let realm = self.param("realm").filter(|r| !r.is_empty())?;
            Some(Challenge::Bearer {
                realm,
                service: self.param("service"),
                scope: self.param("scope"),
            })
        } else if self.scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic {
                realm: self.param("realm"),
            })
        } else {
            None
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `token68` characters, before the trailing `=` padding.
fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

/// A position in the header value. Invariant: `pos <= s.len()`.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) {
        if self.pos < self.s.len() {
            self.pos += 1;
        }
    }

    fn skip_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn skip_ows(&mut self) {
        self.skip_while(|b| b == b' ' || b == b'\t');
    }

    /// Skips whitespace and the commas of empty list elements.
    fn skip_list_separators(&mut self) {
        self.skip_while(|b| matches!(b, b' ' | b'\t' | b','));
    }

    fn token(&mut self) -> Option<String> {
        let t = self.skip_while(is_tchar);
        (!t.is_empty()).then(|| String::from_utf8_lossy(t).into_owned())
    }

    /// A quoted-string starting at the opening quote; `None` if it is not terminated.
    fn quoted(&mut self) -> Option<String> {
        self.bump(); // opening quote
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.bump();
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let escaped = self.peek()?;
                    self.bump();
                    out.push(escaped);
                }
                _ => out.push(b),
            }
        }
    }

    /// Skips to the next top-level comma (or the end), stepping over quoted strings. `false` if an
    /// unterminated quoted string ran to the end.
    fn skip_to_comma(&mut self) -> bool {
        while let Some(b) = self.peek() {
            match b {
                b',' => return true,
                b'"' => {
                    if self.quoted().is_none() {
                        return false;
                    }
                }
                _ => self.bump(),
            }
        }
        true
    }

    /// True if an `auth-param` (`token BWS "=" BWS value`) starts here. `name==` or `name=` at a
    /// delimiter is token68 padding, not a parameter.
    fn at_param(&self) -> bool {
        let mut c = *self;
        if c.token().is_none() {
            return false;
        }
        c.skip_ows();
        if c.peek() != Some(b'=') {
            return false;
        }
        c.bump();
        c.skip_ows();
        !matches!(c.peek(), None | Some(b',' | b'='))
    }

    /// The next challenge (known scheme or not); `None` at the end or when the rest is unusable.
    fn next_challenge(&mut self) -> Option<RawChallenge> {
        loop {
            self.skip_list_separators();
            self.peek()?;
            let Some(scheme) = self.token() else {
                // Not a scheme: drop this list element.
                self.bump();
                if !self.skip_to_comma() {
                    return None;
                }
                continue;
            };
            let mut raw = RawChallenge {
                scheme,
                params: Vec::new(),
            };
            let spaced = matches!(self.peek(), Some(b' ' | b'\t'));
            self.skip_ows();
            match self.peek() {
                None | Some(b',') => return Some(raw),
                Some(_) if !spaced => {
                    if !self.skip_to_comma() {
                        return None;
                    }
                    continue;
                }
                Some(_) => {}
            }
            if !self.at_param() {
                // token68 (unused by the schemes we answer) or garbage.
                let t = self.skip_while(is_token68);
                self.skip_while(|b| b == b'=');
                self.skip_ows();
                if !t.is_empty() && matches!(self.peek(), None | Some(b',')) {
                    return Some(raw);
                }
                if !self.skip_to_comma() {
                    return None;
                }
                continue;
            }
            loop {
                let name = self.token()?.to_ascii_lowercase();
                self.skip_ows();
                self.bump(); // '=' (checked by at_param)
                self.skip_ows();
                let value = if self.peek() == Some(b'"') {
                    // Unterminated: the header is cut short; keep what came before this challenge.
                    self.quoted()?
                } else {
                    let v = self.skip_while(|b| !matches!(b, b',' | b' ' | b'\t'));
                    String::from_utf8_lossy(v).into_owned()
                };
                raw.params.push((name, value));
                self.skip_ows();
                if self.peek().is_some_and(|b| b != b',') && !self.skip_to_comma() {
                    // Garbage after the value, then an unterminated quoted string.
                    return None;
                }
                self.skip_list_separators();
                if !self.at_param() {
                    return Some(raw);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    fn basic(realm: Option<&str>) -> Challenge {
        Challenge::Basic {
            realm: realm.map(Into::into),
        }
    }

    #[test]
    fn parses_challenges() {
        let cases: Vec<(&str, Vec<Challenge>)> = vec![
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                vec![bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/alpine:pull"),
                )],
            ),
            (
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull,push""#,
                vec![bearer(
                    "https://ghcr.io/token",
                    Some("ghcr.io"),
                    Some("repository:user/image:pull,push"),
                )],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![basic(Some("Registry Realm"))],
            ),
            ("Basic", vec![basic(None)]),
            ("basic", vec![basic(None)]),
            (
                r#"Basic realm="x", Bearer realm="y",service="z""#,
                vec![basic(Some("x")), bearer("y", Some("z"), None)],
            ),
            (
                r#"BEARER REALM="y" , Service = "z",  scope=repository:a:pull"#,
                vec![bearer("y", Some("z"), Some("repository:a:pull"))],
            ),
            (
                "Bearer realm=https://auth.example/token,service=example",
                vec![bearer("https://auth.example/token", Some("example"), None)],
            ),
            (
                r#"Bearer realm="a \"quoted\" \\ realm""#,
                vec![bearer(r#"a "quoted" \ realm"#, None, None)],
            ),
            (
                r#"Bearer realm="r",error="insufficient_scope",scope="s""#,
                vec![bearer("r", None, Some("s"))],
            ),
            (
                r#"Bearer realm="first",realm="second""#,
                vec![bearer("first", None, None)],
            ),
            (
                r#"Negotiate abc123==, Basic realm="x""#,
                vec![basic(Some("x"))],
            ),
            (
                r#"Negotiate, Digest realm="d", nonce="n,n", qop="auth", Bearer realm="b""#,
                vec![bearer("b", None, None)],
            ),
            (
                r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#,
                vec![basic(Some("simple"))],
            ),
            (",, ,Basic realm=x,,", vec![basic(Some("x"))]),
            // Bearer without realm (or with an empty one) is skipped.
            (r#"Bearer service="z""#, vec![]),
            (r#"Bearer realm="""#, vec![]),
            ("Bearer", vec![]),
            (r#"Bearer service="z", Basic"#, vec![basic(None)]),
            // Garbage: empty or partial.
            ("", vec![]),
            ("   ", vec![]),
            ("=", vec![]),
            ("\"", vec![]),
            (r#"Bearer realm="unterminated"#, vec![]),
            (
                r#"Basic realm="ok", Bearer realm="cut"#,
                vec![basic(Some("ok"))],
            ),
            (
                r#"Basic realm="x"junk, Bearer realm="y""#,
                vec![basic(Some("x")), bearer("y", None, None)],
            ),
            (r#"Bearer"realm="x""#, vec![]),
            (r#"@@@, Basic"#, vec![basic(None)]),
            (r#"Bearer realm="x"\"#, vec![bearer("x", None, None)]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_www_authenticate(input), want, "input {input:?}");
        }
    }

    #[test]
    fn never_panics() {
        let seeds = [
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
            r#"Basic realm="x", Bearer realm="y",service="z""#,
            r#"Negotiate abc==, Newauth realm="a\"b", type=1"#,
        ];
        let alphabet = "BearerBasicrealmservicescope=\",\\ ";
        for input in crate::registry::fuzz::inputs(23, &seeds, alphabet, 6000) {
            for c in parse_www_authenticate(&input) {
                if let Challenge::Bearer { realm, .. } = c {
                    assert!(!realm.is_empty());
                }
            }
        }
    }
}
