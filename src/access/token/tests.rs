use std::os::unix::fs::PermissionsExt;

use http::Method;

use super::*;

const NOW: u64 = 1_700_000_000;

fn claims() -> Claims {
    Claims {
        sub: Identity::User("alice".into()),
        upstream: Some(Secret::new("ghuser:ghp_s3cr3t")),
        audience: "ghcr.io".into(),
        scopes: vec![
            "repository:team/app:pull".into(),
            "repository:team/base:pull,push".into(),
        ],
        issued_at: NOW,
        expires_at: NOW + 300,
    }
}

fn same(a: &Claims, b: &Claims) -> bool {
    a.sub == b.sub
        && a.upstream == b.upstream
        && a.audience == b.audience
        && a.scopes == b.scopes
        && a.issued_at == b.issued_at
        && a.expires_at == b.expires_at
}

#[test]
fn round_trip() {
    let key = TokenKey::ephemeral();
    let token = key.mint(&claims());
    assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url without padding: {token}"
    );
    let opened = key.open(&token, NOW).unwrap();
    assert!(same(&opened, &claims()), "{opened:?}");
    // Anonymous, no upstream credential, no scopes.
    let anonymous = Claims {
        sub: Identity::Anonymous,
        upstream: None,
        scopes: Vec::new(),
        ..claims()
    };
    let opened = key.open(&key.mint(&anonymous), NOW).unwrap();
    assert!(same(&opened, &anonymous), "{opened:?}");
    // Each token has its own nonce.
    assert_ne!(key.mint(&claims()), key.mint(&claims()));
}

#[test]
fn the_content_is_not_readable() {
    let key = TokenKey::ephemeral();
    let token = key.mint(&claims());
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    for secret in ["alice", "ghp_s3cr3t", "ghcr.io", "team/app"] {
        assert!(!raw.contains(secret), "{secret} readable in the token");
    }
    // Debug output never shows the upstream credential or the key.
    let shown = format!("{:?} {key:?}", claims());
    assert!(
        !shown.contains("ghp_s3cr3t") && shown.contains("[REDACTED]"),
        "{shown}"
    );
}

#[test]
fn expiry() {
    let key = TokenKey::ephemeral();
    let token = key.mint(&claims());
    assert!(key.open(&token, NOW + 299).is_some());
    assert!(key.open(&token, NOW + 300).is_none());
    assert!(key.open(&token, u64::MAX).is_none());
    assert!(key.open(&token, 0).is_some());
}

#[test]
fn tampering_and_other_keys_are_refused() {
    let key = TokenKey::ephemeral();
    let token = key.mint(&claims());
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        assert!(
            key.open(&URL_SAFE_NO_PAD.encode(&bad), NOW).is_none(),
            "byte {i} flipped"
        );
    }
    assert!(
        key.open(&URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]), NOW)
            .is_none()
    );
    let mut longer = raw.clone();
    longer.push(0);
    assert!(key.open(&URL_SAFE_NO_PAD.encode(&longer), NOW).is_none());
    assert!(TokenKey::ephemeral().open(&token, NOW).is_none());
    // Padding, other alphabets, whitespace.
    for bad in [
        format!("{token}="),
        format!(" {token}"),
        format!("{token}\n"),
        format!("{token}!"),
    ] {
        assert!(key.open(&bad, NOW).is_none(), "{bad:?}");
    }
}

#[test]
fn malformed_tokens_never_panic() {
    let key = TokenKey::ephemeral();
    let token = key.mint(&claims());
    let cases = [
        String::new(),
        "a".into(),
        "AAAA".into(),
        "A".repeat(38),
        "A".repeat(MAX_TOKEN_LEN + 4),
        "é€😀".into(),
        "\0\0\0".into(),
    ];
    for case in &cases {
        assert!(key.open(case, NOW).is_none(), "{case:?}");
    }
    let seeds = [
        token.as_str(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ];
    for input in crate::registry::fuzz::inputs(31, &seeds, "AZaz09-_", 3000) {
        if input != token {
            assert!(key.open(&input, NOW).is_none(), "{input:?}");
        }
    }
}

#[test]
fn huge_claims_drop_scopes_to_stay_under_the_limit() {
    let key = TokenKey::ephemeral();
    let many = Claims {
        scopes: (0..500)
            .map(|i| format!("repository:some/long/repository/name/{i}:pull,push"))
            .collect(),
        ..claims()
    };
    let token = key.mint(&many);
    assert!(
        !token.is_empty() && token.len() <= MAX_TOKEN_LEN,
        "{}",
        token.len()
    );
    let opened = key.open(&token, NOW).unwrap();
    assert!(opened.scopes.len() < 500 && !opened.scopes.is_empty());
    assert_eq!(opened.scopes[..], many.scopes[..opened.scopes.len()]);
    assert_eq!(opened.upstream, many.upstream);
    // Even without scopes too large: no token at all rather than one open() refuses.
    let absurd = Claims {
        audience: "a".repeat(MAX_TOKEN_LEN),
        ..claims()
    };
    assert_eq!(key.mint(&absurd), "");
}

#[test]
fn the_longest_token_is_still_a_bearer_token() {
    let key = TokenKey::ephemeral();
    let with_audience = |len: usize| Claims {
        audience: "a".repeat(len),
        ..claims()
    };
    // The longest audience that still makes a token (minting is monotonic in the length).
    let (mut fits, mut too_long) = (0, MAX_TOKEN_LEN);
    while too_long - fits > 1 {
        let mid = (fits + too_long) / 2;
        if key.mint(&with_audience(mid)).is_empty() {
            too_long = mid;
        } else {
            fits = mid;
        }
    }
    let token = key.mint(&with_audience(fits));
    assert!(token.len() > MAX_TOKEN_LEN - 4, "{}", token.len());
    let header = format!("Bearer {token}");
    assert_eq!(
        crate::registry::basic::parse_bearer(&header),
        Some(token.as_str())
    );
    assert!(key.open(&token, NOW).is_some());
}

#[test]
fn key_file_is_created_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let key = TokenKey::load_or_create(&ca_dir).unwrap();
    let path = ca_dir.join(KEY_FILE);
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.len(), 32);
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(&ca_dir).unwrap().count(), 1);
    let token = key.mint(&claims());
    // After a restart, and in another replica on the same volume, the same key.
    let again = TokenKey::load_or_create(&ca_dir).unwrap();
    assert!(again.open(&token, NOW).is_some());
    // A loosened mode is tightened again.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    TokenKey::load_or_create(&ca_dir).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn replicas_starting_together_share_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().to_owned();
    let keys: Vec<TokenKey> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| TokenKey::load_or_create(&ca_dir).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let token = keys[0].mint(&claims());
    for key in &keys {
        assert!(key.open(&token, NOW).is_some());
    }
}

#[test]
fn wrong_length_key_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0, 16, 31, 33, 64] {
        std::fs::write(dir.path().join(KEY_FILE), vec![7u8; len]).unwrap();
        let e = TokenKey::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(e, TokenError::WrongLength { len: l, .. } if l == len),
            "{e}"
        );
        assert!(e.to_string().contains("token.key"), "{e}");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let e = TokenKey::load_or_create(file.path()).unwrap_err();
    assert!(matches!(e, TokenError::Io { .. }), "{e}");
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

type Want<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    &'a [&'a str],
    Option<&'a str>,
    Option<&'a str>,
);

/// username, password, scopes, service, refresh token.
type Shape<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Vec<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn shape(r: &TokenRequest) -> Shape<'_> {
    (
        r.username.as_deref(),
        r.password.as_ref().map(Secret::expose),
        r.scopes.iter().map(String::as_str).collect(),
        r.service.as_deref(),
        r.refresh_token.as_ref().map(Secret::expose),
    )
}

#[test]
fn get_requests() {
    let alice = basic("alice", "wonder:land");
    let cases: &[(Option<&str>, Option<&str>, Want)] = &[
        (
            Some("service=registry.docker.io&scope=repository:library/alpine:pull"),
            None,
            (
                None,
                None,
                &["repository:library/alpine:pull"],
                Some("registry.docker.io"),
                None,
            ),
        ),
        (
            Some("scope=repository%3Aa%2Fb%3Apull&scope=repository:c:pull,push&service=proxy"),
            Some(&alice),
            (
                Some("alice"),
                Some("wonder:land"),
                &["repository:a/b:pull", "repository:c:pull,push"],
                Some("proxy"),
                None,
            ),
        ),
        // Space-separated scopes in one parameter, `+` and `%20` both spaces.
        (
            Some("scope=repository:a:pull+repository:b:pull%20registry:catalog:*"),
            None,
            (
                None,
                None,
                &[
                    "repository:a:pull",
                    "repository:b:pull",
                    "registry:catalog:*",
                ],
                None,
                None,
            ),
        ),
        // Unknown and empty parameters ignored; credentials in the query ignored.
        (
            Some(
                "account=alice&client_id=docker&offline_token=true&&username=x&password=y&refresh_token=z",
            ),
            None,
            (None, None, &[], None, None),
        ),
        (None, None, (None, None, &[], None, None)),
        (Some(""), None, (None, None, &[], None, None)),
        (Some("service="), None, (None, None, &[], Some(""), None)),
    ];
    for (query, authorization, want) in cases {
        let r = parse_token_request(&Method::GET, *query, *authorization, b"ignored=1").unwrap();
        let (u, p, scopes, service, refresh) = shape(&r);
        assert_eq!(
            (u, p, scopes.as_slice(), service, refresh),
            *want,
            "{query:?}"
        );
    }
}

#[test]
fn post_requests() {
    let cases: &[(&[u8], Want)] = &[
        (
            b"grant_type=password&username=alice&password=p%26ss+word%3D&service=proxy&scope=repository:a:pull repository:b:pull&client_id=containerd&access_type=offline",
            (Some("alice"), Some("p&ss word="), &["repository:a:pull", "repository:b:pull"], Some("proxy"), None),
        ),
        (
            b"grant_type=password&username=alice&password=&scope=repository%3Aa%3Apull&scope=repository:b:push",
            (Some("alice"), Some(""), &["repository:a:pull", "repository:b:push"], None, None),
        ),
        (
            b"grant_type=refresh_token&refresh_token=abc-_DEF&service=proxy&scope=repository:a:pull&username=ignored",
            (None, None, &["repository:a:pull"], Some("proxy"), Some("abc-_DEF")),
        ),
        (
            "grant_type=password&username=j%C3%BCrgen&password=%E2%82%AC".as_bytes(),
            (Some("jürgen"), Some("€"), &[], None, None),
        ),
    ];
    for (body, want) in cases {
        // The header is not looked at for POST.
        let r =
            parse_token_request(&Method::POST, Some("service=q"), Some("Basic !!"), body).unwrap();
        let (u, p, scopes, service, refresh) = shape(&r);
        assert_eq!(
            (u, p, scopes.as_slice(), service, refresh),
            *want,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

/// method, query, authorization, body, error.
type Refused<'a> = (
    Method,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    TokenRequestError,
);

#[test]
fn refused_requests() {
    use TokenRequestError as E;
    let long_query = format!("scope={}", "a".repeat(MAX_QUERY_LEN));
    let many_scopes = vec!["scope=s"; MAX_SCOPES + 1].join("&");
    let cases: Vec<Refused> = vec![
        (Method::PUT, None, None, vec![], E::Method),
        (Method::DELETE, None, None, vec![], E::Method),
        (
            Method::GET,
            Some(&long_query),
            None,
            vec![],
            E::TooLarge {
                what: "query string",
                limit: MAX_QUERY_LEN,
            },
        ),
        (
            Method::POST,
            None,
            None,
            vec![b'a'; MAX_FORM_LEN + 1],
            E::TooLarge {
                what: "form body",
                limit: MAX_FORM_LEN,
            },
        ),
        (
            Method::GET,
            Some(&many_scopes),
            None,
            vec![],
            E::TooManyScopes,
        ),
        (
            Method::GET,
            Some("service=a&service=b"),
            None,
            vec![],
            E::Duplicate { name: "service" },
        ),
        (
            Method::GET,
            Some("service=%ff"),
            None,
            vec![],
            E::Encoding { name: "service" },
        ),
        (
            Method::GET,
            Some("scope=a%0Ab"),
            None,
            vec![],
            E::Encoding { name: "scope" },
        ),
        (
            Method::GET,
            None,
            Some("Bearer abc"),
            vec![],
            E::Authorization,
        ),
        (
            Method::GET,
            None,
            Some("Basic !!!"),
            vec![],
            E::Authorization,
        ),
        (
            Method::POST,
            None,
            None,
            b"username=a&password=b".to_vec(),
            E::Missing { name: "grant_type" },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=client_credentials".to_vec(),
            E::GrantType,
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=password&password=b".to_vec(),
            E::Missing { name: "username" },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=password&username=&password=b".to_vec(),
            E::Missing { name: "username" },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=password&username=a".to_vec(),
            E::Missing { name: "password" },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=refresh_token".to_vec(),
            E::Missing {
                name: "refresh_token",
            },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=refresh_token&refresh_token=".to_vec(),
            E::Missing {
                name: "refresh_token",
            },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=password&grant_type=password&username=a&password=b".to_vec(),
            E::Duplicate { name: "grant_type" },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=password&username=a&password=b&password=c".to_vec(),
            E::Duplicate { name: "password" },
        ),
        (
            Method::POST,
            None,
            None,
            b"grant_type=password&username=a&password=%zz%00".to_vec(),
            E::Encoding { name: "password" },
        ),
    ];
    for (method, query, authorization, body, want) in cases {
        let got = parse_token_request(&method, query, authorization, &body);
        assert_eq!(
            got.as_ref().err(),
            Some(&want),
            "{method} {query:?} {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    // Exactly at the limits is fine.
    let at_limit = format!("scope={}", "a".repeat(MAX_QUERY_LEN - 6));
    assert!(parse_token_request(&Method::GET, Some(&at_limit), None, b"").is_ok());
    let scopes = vec!["scope=s"; MAX_SCOPES].join("&");
    assert_eq!(
        parse_token_request(&Method::GET, Some(&scopes), None, b"")
            .unwrap()
            .scopes
            .len(),
        MAX_SCOPES
    );
}

#[test]
fn errors_never_show_secrets() {
    let body = b"grant_type=password&username=a&password=hunter2&password=hunter2";
    let e = parse_token_request(&Method::POST, None, None, body).unwrap_err();
    let r = parse_token_request(
        &Method::POST,
        None,
        None,
        b"grant_type=password&username=a&password=hunter2",
    )
    .unwrap();
    let shown = format!("{e} {e:?} {r:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn request_parser_never_panics() {
    let seeds = [
        "grant_type=password&username=a&password=b&scope=x+y",
        "service=s&scope=repository%3Aa%3Apull",
        "grant_type=refresh_token&refresh_token=t",
    ];
    for input in crate::registry::fuzz::inputs(37, &seeds, "=&+%0aF", 3000) {
        for method in [Method::GET, Method::POST] {
            if let Ok(r) =
                parse_token_request(&method, Some(&input), Some(&input), input.as_bytes())
            {
                assert!(r.scopes.len() <= MAX_SCOPES);
                assert!(r.scopes.iter().all(|s| !s.is_empty() && !s.contains(' ')));
            }
        }
    }
}

#[test]
fn response_body() {
    let body = token_response("tok", 300, "2024-01-02T03:04:05Z", None);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "token": "tok",
            "access_token": "tok",
            "expires_in": 300,
            "issued_at": "2024-01-02T03:04:05Z",
        })
    );
    let body = token_response("t\"ok", 60, "2024-01-02T03:04:05Z", Some("refresh"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["token"], "t\"ok");
    assert_eq!(json["refresh_token"], "refresh");
    assert_eq!(json.as_object().unwrap().len(), 5);
}
