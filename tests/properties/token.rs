//! The proxy's own tokens (`TokenKey::mint` / `open`) and the token endpoint's request parser
//! (`parse_token_request`).
//!
//! Tokens: what a key mints it opens to every claim it sealed, until the expiry second; the
//! token is a `Bearer` token68 the request path accepts; another key's token and any change to
//! a token (a character, truncation, extension) are refused; `open` never panics. Requests: both
//! forms of the distribution token spec round-trip through form encoding (GET query with an
//! optional `Authorization: Basic`, POST `grant_type=password|refresh_token`), malformed ones
//! are refused with the documented error, and arbitrary input never panics.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use registry_proxy::access::identity::Identity;
use registry_proxy::access::token::{
    Claims, MAX_FORM_LEN, MAX_TOKEN_LEN, TokenKey, TokenRequest, TokenRequestError,
    parse_token_request,
};
use registry_proxy::registry::basic::parse_bearer;
use registry_proxy::secret::Secret;

use crate::strategies::{bytes, config, mutated, name_text, text};

/// A key and a token of it that never expires.
static VALID: LazyLock<(TokenKey, String)> = LazyLock::new(|| {
    let key = TokenKey::ephemeral();
    let token = key.mint(&Claims {
        sub: Identity::User("alice".into()),
        upstream: Some(Secret::new("u:p")),
        audience: "registry.test".into(),
        scopes: vec!["repository:a/b:pull".into()],
        issued_at: 0,
        expires_at: u64::MAX,
    });
    (key, token)
});

/// The claims as comparable values (`Claims` holds a `Secret`, which does not print).
type Plain = (Identity, Option<String>, String, Vec<String>, u64, u64);

fn plain(c: &Claims) -> Plain {
    (
        c.sub.clone(),
        c.upstream.as_ref().map(|s| s.expose().to_owned()),
        c.audience.clone(),
        c.scopes.clone(),
        c.issued_at,
        c.expires_at,
    )
}

/// Any text, short.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._@:/-]{0,24}",
        any::<String>(),
        "[\"\\\\\\x00-\\x1f\\x7fé😀]{0,8}",
    ]
}

fn scope() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (name_text(), select(&["pull", "push", "pull,push", "*"][..]))
            .prop_map(|(n, a)| format!("repository:{n}:{a}")),
        1 => any_text(),
    ]
}

fn claims(now: u64) -> impl Strategy<Value = Claims> {
    (
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
        any_text(),
        vec(scope(), 0..4),
        any::<u64>(),
        1u64..=u64::MAX - now,
    )
        .prop_map(
            move |(sub, upstream, audience, scopes, issued_at, ttl)| Claims {
                sub: sub.map_or(Identity::Anonymous, Identity::User),
                upstream: upstream.map(Secret::new),
                audience,
                scopes,
                issued_at,
                expires_at: now + ttl,
            },
        )
}

/// A moment to open tokens at: now-ish, or anywhere.
fn now() -> impl Strategy<Value = u64> {
    prop_oneof![1_700_000_000u64..1_800_000_000, 0..u64::MAX / 2]
}

/// A character of the token alphabet (base64url).
fn b64url() -> impl Strategy<Value = char> {
    select(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            .chars()
            .collect::<Vec<_>>(),
    )
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A form value the endpoint takes: any text without control characters.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._@:/ -]{0,24}",
        "[^\\p{Cc}]{0,24}",
        any::<String>().prop_map(|s| s.chars().filter(|c| !c.is_control()).collect()),
    ]
}

/// A `scope` parameter value: one or more scopes separated by spaces.
fn scope_param() -> impl Strategy<Value = Vec<String>> {
    vec(
        (name_text(), select(&["pull", "push", "pull,push"][..]))
            .prop_map(|(n, a)| format!("repository:{n}:{a}")),
        1..3,
    )
}

/// Parameters the endpoint ignores, to mix in.
fn ignored() -> impl Strategy<Value = Vec<String>> {
    vec(
        prop_oneof![
            Just("account=alice".to_owned()),
            Just("client_id=docker".to_owned()),
            Just("offline_token=true".to_owned()),
            Just("access_type=offline".to_owned()),
            Just("".to_owned()),
            "[a-z_]{1,8}=[a-z0-9%]{0,6}".prop_filter("not a parameter the endpoint reads", |p| {
                let name = p.split('=').next().unwrap_or("");
                ![
                    "service",
                    "scope",
                    "grant_type",
                    "username",
                    "password",
                    "refresh_token",
                ]
                .contains(&name)
            }),
        ],
        0..3,
    )
}

/// Joins `params` (already encoded) with the ignored ones shuffled in by `at`.
fn form(mut params: Vec<String>, extra: Vec<String>, at: &[Index]) -> String {
    for (e, i) in extra.into_iter().zip(at.iter().cycle()) {
        let i = i.index(params.len() + 1);
        params.insert(i, e);
    }
    params.join("&")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

proptest! {
    #![proptest_config(config())]

    /// What a key mints it opens, with every claim as sealed, and the token is a `Bearer`
    /// token the request path accepts.
    #[test]
    fn mint_open_round_trips((now, c) in now().prop_flat_map(|now| (Just(now), claims(now)))) {
        let key = TokenKey::ephemeral();
        let token = key.mint(&c);
        prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
        let header = format!("Bearer {token}");
        prop_assert_eq!(parse_bearer(&header), Some(token.as_str()));
        let opened = key.open(&token, now);
        prop_assert!(opened.is_some(), "{c:?}");
        prop_assert_eq!(plain(&opened.unwrap()), plain(&c));
    }

    /// Scopes that would make a token too long are dropped from the end; the token still fits
    /// in a `Bearer` header and carries the rest of the claims.
    #[test]
    fn oversized_claims_still_make_usable_tokens(
        scopes in vec(("[a-z0-9/:,]{8}", 12..50usize).prop_map(|(s, n)| s.repeat(n)), 12..30),
        user in "[a-z]{1,16}",
        upstream in "[ -~]{0,200}",
    ) {
        let key = TokenKey::ephemeral();
        let c = Claims {
            sub: Identity::User(user),
            upstream: Some(Secret::new(upstream)),
            audience: "registry.test".into(),
            scopes,
            issued_at: 1,
            expires_at: 1000,
        };
        let token = key.mint(&c);
        prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN, "{}", token.len());
        let header = format!("Bearer {token}");
        prop_assert_eq!(parse_bearer(&header), Some(token.as_str()), "token of {} bytes", token.len());
        let opened = key.open(&token, 999).unwrap();
        prop_assert!(c.scopes.starts_with(&opened.scopes));
        let (mut want, mut got) = (plain(&c), plain(&opened));
        want.3.clear();
        got.3.clear();
        prop_assert_eq!(got, want);
    }

    /// A token is refused from its expiry second on, and accepted before it.
    #[test]
    fn tokens_expire(exp in 1u64.., now in any::<u64>(), near in any::<bool>(), delta in 0u64..3) {
        let now = if near { exp.saturating_sub(1).saturating_add(delta) } else { now };
        let key = TokenKey::ephemeral();
        let c = Claims {
            sub: Identity::Anonymous, upstream: None, audience: "a".into(),
            scopes: Vec::new(), issued_at: 0, expires_at: exp,
        };
        let token = key.mint(&c);
        prop_assert_eq!(key.open(&token, now).is_some(), now < exp);
    }

    /// Another key's tokens are refused, and so is any change to a token: a character
    /// replaced, the token cut short or extended.
    #[test]
    fn foreign_and_tampered_tokens_are_refused(
        c in claims(1_000),
        at in any::<Index>(),
        replacement in prop_oneof![b64url(), select(&['=', '.', '+', '/', ' ', 'é'][..])],
        cut in 1usize..8,
        tail in proptest::collection::vec(b64url(), 1..8),
        how in 0..3u8,
    ) {
        let key = TokenKey::ephemeral();
        prop_assert!(key.open(&TokenKey::ephemeral().mint(&c), 1_000).is_none());
        let token = key.mint(&c);
        let tampered = match how {
            0 => {
                let mut chars: Vec<char> = token.chars().collect();
                let i = at.index(chars.len());
                prop_assume!(chars[i] != replacement);
                chars[i] = replacement;
                chars.into_iter().collect()
            }
            1 => token[..token.len().saturating_sub(cut)].to_owned(),
            _ => format!("{token}{}", tail.iter().collect::<String>()),
        };
        prop_assert!(key.open(&tampered, 1_000).is_none(), "{how}: {tampered:?}");
    }

    /// `open` never panics on arbitrary strings or on mutations of a valid, never-expiring
    /// token of the same key, and refuses them all.
    #[test]
    fn open_refuses_garbage(
        token in prop_oneof![
            text("abcXYZ019-_.=+/"),
            vec(b64url(), 0..200).prop_map(String::from_iter),
            mutated(Just(VALID.1.clone())),
            // Well-formed base64url around the length limit.
            (any::<[u8; 32]>(), MAX_TOKEN_LEN - 8..MAX_TOKEN_LEN + 8)
                .prop_map(|(seed, len)| URL_SAFE_NO_PAD.encode(seed.repeat(200))[..len].to_owned()),
        ],
        now in any::<u64>(),
    ) {
        let (key, valid) = &*VALID;
        prop_assume!(token != *valid);
        prop_assert!(key.open(&token, now).is_none(), "{:?}", token);
    }

    /// `GET /token?service=…&scope=…` with an optional `Authorization: Basic` header: the
    /// service, every scope (also several in one parameter) and the header's credentials come
    /// back; credentials in the query are ignored.
    #[test]
    fn get_requests_round_trip(
        service in proptest::option::of(value()),
        scopes in vec(scope_param(), 0..4),
        credentials in proptest::option::of(("[^:\\p{Cc}]{1,16}", value())),
        query_password in proptest::option::of(value()),
        extra in ignored(),
        at in vec(any::<Index>(), 3),
        plus_for_space in any::<bool>(),
    ) {
        let mut params = Vec::new();
        if let Some(s) = &service {
            params.push(format!("service={}", enc(s)));
        }
        for group in &scopes {
            let joined = group.iter().map(|s| enc(s)).collect::<Vec<_>>();
            params.push(format!("scope={}", joined.join(if plus_for_space { "+" } else { "%20" })));
        }
        if let Some(p) = &query_password {
            params.push(format!("password={}", enc(p)));
        }
        let query = form(params, extra, &at);
        let header = credentials.as_ref().map(|(u, p)| basic(u, p));
        let got = parse_token_request(&Method::GET, Some(&query), header.as_deref(), b"ignored=1");
        let want = TokenRequest {
            username: credentials.as_ref().map(|(u, _)| u.clone()),
            password: credentials.as_ref().map(|(_, p)| Secret::new(p.clone())),
            scopes: scopes.concat(),
            service,
            refresh_token: None,
        };
        prop_assert_eq!(got, Ok(want), "{:?}", query);
    }

    /// `POST /token` forms: `grant_type=password` gives the user and password,
    /// `grant_type=refresh_token` the refresh token; the other kind's fields are dropped.
    #[test]
    fn post_forms_round_trip(
        refresh in any::<bool>(),
        username in "[^\\p{Cc}]{1,16}",
        password in value(),
        refresh_token in "[A-Za-z0-9_-]{1,64}",
        service in proptest::option::of(value()),
        scopes in vec(scope_param(), 0..3),
        extra in ignored(),
        at in vec(any::<Index>(), 3),
    ) {
        let mut params = vec![
            format!("grant_type={}", if refresh { "refresh_token" } else { "password" }),
            format!("username={}", enc(&username)),
            format!("password={}", enc(&password)),
            format!("refresh_token={}", enc(&refresh_token)),
        ];
        if let Some(s) = &service {
            params.push(format!("service={}", enc(s)));
        }
        for group in &scopes {
            params.push(format!("scope={}", enc(&group.join(" "))));
        }
        let body = form(params, extra, &at);
        let got = parse_token_request(&Method::POST, Some("service=ignored"), Some("Basic Og=="), body.as_bytes());
        let want = TokenRequest {
            username: (!refresh).then(|| username.clone()),
            password: (!refresh).then(|| Secret::new(password.clone())),
            scopes: scopes.concat(),
            service,
            refresh_token: refresh.then(|| Secret::new(refresh_token.clone())),
        };
        prop_assert_eq!(got, Ok(want), "{:?}", body);
    }

    /// Malformed requests get the documented error: a parameter twice, a control character or
    /// invalid UTF-8 in a value, more than 64 scopes, a body over the limit, another method,
    /// a missing or unknown grant type or missing credentials, a bad `Authorization`.
    #[test]
    fn malformed_requests_are_refused(
        which in 0..10u8,
        name in select(&["service", "grant_type", "username", "password", "refresh_token"][..]),
        v in "[a-z0-9]{1,8}",
        control in select(&["%00", "%0A", "%0d", "%1F", "%7F", "%C2%85"][..]),
        bad_utf8 in select(&["%FF", "%C0%AF", "%E2%82", "%ED%A0%80"][..]),
        at in any::<Index>(),
        method in select(&[Method::PUT, Method::HEAD, Method::DELETE, Method::OPTIONS, Method::PATCH][..]),
        header in select(&["Bearer abc", "Basic", "Basic !!", "Basic Og==", "Basic YWxpY2U="][..]),
    ) {
        let inside = |piece: &str| {
            let i = at.index(v.len() + 1);
            format!("{}{piece}{}", &v[..i], &v[i..])
        };
        let base = "grant_type=password&username=alice&password=pw";
        let (method, query, auth, body, want) = match which {
            0 => (Method::POST, None, None, format!("{base}&{name}={v}&{name}={v}"),
                TokenRequestError::Duplicate { name: static_name(name) }),
            1 => (Method::POST, None, None, format!("{base}&service={}", inside(control)),
                TokenRequestError::Encoding { name: "service" }),
            2 => (Method::GET, Some(format!("scope={}", inside(bad_utf8))), None, String::new(),
                TokenRequestError::Encoding { name: "scope" }),
            3 => (Method::GET, Some(vec!["scope=a"; 65].join("&")), None, String::new(),
                TokenRequestError::TooManyScopes),
            4 => (Method::POST, None, None, format!("{base}&account={}", "a".repeat(MAX_FORM_LEN)),
                TokenRequestError::TooLarge { what: "form body", limit: MAX_FORM_LEN }),
            5 => (method.clone(), Some("service=s".to_owned()), None, base.to_owned(), TokenRequestError::Method),
            6 => (Method::POST, None, None, "username=alice&password=pw".to_owned(),
                TokenRequestError::Missing { name: "grant_type" }),
            7 => (Method::POST, None, None, format!("grant_type={v}x&username=alice&password=pw"),
                TokenRequestError::GrantType),
            8 => (Method::POST, None, None, "grant_type=refresh_token&username=alice&refresh_token=".to_owned(),
                TokenRequestError::Missing { name: "refresh_token" }),
            _ => (Method::GET, Some("service=s".to_owned()), Some(header), String::new(),
                TokenRequestError::Authorization),
        };
        // `Basic YWxpY2U=` is "alice" without a colon; `Basic Og==` is ":" (empty user).
        let got = parse_token_request(&method, query.as_deref(), auth, body.as_bytes());
        prop_assert_eq!(got, Err(want), "{:?} {:?} {:?} {:?}", method, query, auth, body);
    }

    /// Arbitrary and near-valid requests never panic; whatever is accepted keeps the
    /// documented shape.
    #[test]
    fn accepted_requests_keep_their_shape(
        method in select(&[Method::GET, Method::POST, Method::PUT][..]),
        query in prop_oneof![
            text("service=scope=repository:pull,push&%+"),
            mutated(Just("service=proxy&scope=repository:library/alpine:pull&scope=repository:a/b:pull,push".to_owned())),
        ],
        body in prop_oneof![
            bytes(),
            mutated(Just("grant_type=password&username=alice&password=x&service=proxy&scope=repository:a:pull".to_owned()))
                .prop_map(String::into_bytes),
            mutated(Just("grant_type=refresh_token&refresh_token=abc&scope=a+b".to_owned()))
                .prop_map(String::into_bytes),
        ],
        header in proptest::option::of(prop_oneof![
            text("Basic YWxpY2U6cHc= "),
            mutated(Just("Basic YWxpY2U6cHc=".to_owned())),
        ]),
    ) {
        let Ok(r) = parse_token_request(&method, Some(&query), header.as_deref(), &body) else {
            return Ok(());
        };
        prop_assert!(method == Method::GET || method == Method::POST);
        prop_assert!(r.scopes.len() <= 64);
        for s in &r.scopes {
            prop_assert!(!s.is_empty() && !s.contains(' '), "{s:?}");
        }
        let texts = r.scopes.iter().map(String::as_str)
            .chain(r.service.as_deref())
            .chain(r.username.as_deref())
            .chain(r.password.as_ref().map(Secret::expose))
            .chain(r.refresh_token.as_ref().map(Secret::expose));
        for t in texts {
            prop_assert!(!t.chars().any(char::is_control), "{t:?}");
        }
        if method == Method::GET {
            prop_assert!(r.refresh_token.is_none());
            prop_assert_eq!(r.username.is_some(), header.is_some());
        } else if r.refresh_token.is_some() {
            prop_assert!(r.username.is_none() && r.password.is_none());
            prop_assert!(!r.refresh_token.as_ref().unwrap().expose().is_empty());
        } else {
            prop_assert!(r.username.as_deref().is_some_and(|u| !u.is_empty()) && r.password.is_some());
        }
    }
}

/// The parameter names as the error carries them.
fn static_name(name: &str) -> &'static str {
    [
        "service",
        "grant_type",
        "username",
        "password",
        "refresh_token",
    ]
    .into_iter()
    .find(|n| *n == name)
    .unwrap()
}
