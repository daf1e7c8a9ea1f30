//! `parse_path` and `mirror_target`: round trips for every [`Route`] variant (plain, with
//! host-prefix detection, with a host prefix, and the `?ns=` form), refusal of traversal and
//! encoded separators around valid parts, and canonical, grammar-valid results for whatever it
//! accepts.

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use registry_proxy::registry::digest::Digest;
use registry_proxy::registry::host::RegistryHost;
use registry_proxy::registry::name::RepoName;
use registry_proxy::registry::reference::Reference;
use registry_proxy::registry::route::{ParsedPath, Route, RouteError, mirror_target, parse_path};

use crate::strategies::{config, host_like, mutated, repo_name, route, text};

/// `route` with its repository name replaced (routes without a name are returned as they are).
fn with_name(route: &Route, new: RepoName) -> Route {
    match route.clone() {
        Route::Base => Route::Base,
        Route::Catalog => Route::Catalog,
        Route::Manifest { reference, .. } => Route::Manifest {
            name: new,
            reference,
        },
        Route::Blob { digest, .. } => Route::Blob { name: new, digest },
        Route::TagsList { .. } => Route::TagsList { name: new },
        Route::Referrers { digest, .. } => Route::Referrers { name: new, digest },
        Route::Upload { session, .. } => Route::Upload { name: new, session },
    }
}

/// The request path of `route` behind a host prefix: `/v2/<host>/<rest of the path>`.
fn prefixed(host: &str, route: &Route) -> String {
    let path = route.path();
    format!("/v2/{host}{}", path.strip_prefix("/v2").unwrap_or(&path))
}

/// Routes that can stand behind a host prefix (all but the version check).
fn prefixable_route() -> BoxedStrategy<Route> {
    route()
        .prop_filter("the version check takes no host prefix", |r| {
            *r != Route::Base
        })
        .boxed()
}

/// Valid request paths, with or without a host prefix: the seeds for mutations.
fn valid_path() -> BoxedStrategy<String> {
    prop_oneof![
        2 => route().prop_map(|r| r.path()),
        1 => (host_like(), prefixable_route()).prop_map(|(h, r)| prefixed(&h.text, &r)),
    ]
    .boxed()
}

/// A query parameter other than `ns` (`xns=` and `ns` without `=` included).
fn other_param() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("xns=quay.io".to_owned()),
        Just("ns".to_owned()),
        Just("NS=quay.io".to_owned()),
        Just("".to_owned()),
        "[a-z]{1,6}=[a-z0-9.%]{0,8}",
    ]
    .prop_filter("not ns=", |p| !p.starts_with("ns="))
}

/// Components that must be refused wherever they stand.
const BAD_COMPONENTS: &[&str] = &[
    "..", ".", "", "%2e%2e", "%2E%2E", ".%2e", "%2e", "..%2f..", "%2f", "%2F", "a%2fb", "%5c",
    "..\\..", "\\", "a\\b", "%00", "\0", "..\0", "\u{7f}", "é", "%c0%ae", "?", "#", " ", "a b",
];

/// Pieces that must be refused wherever they are inserted, even inside a component.
const BAD_PIECES: &[&str] = &[
    "%", "%2f", "%2F", "%2e", "%5c", "%5C", "%00", "%25", "\\", "\0", "\n", "\r", "\t", "\u{7f}",
    "é", "\u{200b}", "😀", " ", "\"", "<", ">", "^", "`", "{", "|", "}", "?", "#",
];

/// Checks what an accepted path promises: nothing that could smuggle a separator or a dot
/// through, every part valid by its grammar, and the path exactly as the route (and host prefix)
/// would write it.
fn check_accepted(path: &str, parsed: &ParsedPath) -> Result<(), TestCaseError> {
    prop_assert!(path.is_ascii(), "non-ASCII accepted: {path:?}");
    prop_assert!(
        !path
            .bytes()
            .any(|b| b == b'%' || b == b'\\' || b.is_ascii_control()),
        "encoded or control characters accepted: {path:?}"
    );
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    let body = rest.strip_suffix('/').unwrap_or(rest);
    if !body.is_empty() {
        for c in body.split('/') {
            prop_assert!(c != "." && c != ".." && !c.is_empty(), "{path:?}");
        }
    }

    let route = &parsed.route;
    if let Some(name) = route.name() {
        prop_assert_eq!(RepoName::parse(name.as_str()), Ok(name.clone()));
    }
    match route {
        Route::Manifest { reference, .. } => {
            prop_assert_eq!(
                Reference::parse(&reference.to_string()),
                Ok(reference.clone())
            );
        }
        Route::Blob { digest, .. } | Route::Referrers { digest, .. } => {
            prop_assert_eq!(Digest::parse(digest.as_str()), Ok(digest.clone()));
        }
        Route::Upload {
            session: Some(s), ..
        } => {
            prop_assert!(!s.is_empty() && s != "." && s != "..", "session {s:?}");
            // RFC 3986 pchar, without pct-encoded.
            prop_assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)),
                "session {s:?}"
            );
        }
        _ => {}
    }

    // Canonical: the path is the route's own, behind the host prefix as written. The two
    // spellings the parser tolerates are `/v2` for `/v2/` and `blobs/uploads` without the
    // trailing slash.
    let written = match &parsed.host {
        None => route.path(),
        Some(host) => {
            let first = rest.split('/').next().unwrap_or("");
            prop_assert!(RegistryHost::looks_like_host(first), "{path:?}");
            prop_assert_eq!(RegistryHost::parse(first), Ok(host.clone()));
            prefixed(first, route)
        }
    };
    let tolerated = match route {
        Route::Base => path == "/v2",
        Route::Upload { session: None, .. } => written.strip_suffix('/') == Some(path),
        _ => false,
    };
    prop_assert!(
        written == path || tolerated,
        "{path:?} parsed as {parsed:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Without host-prefix detection (the `?ns=` form), every route's path gives the route back.
    #[test]
    fn path_round_trips(route in route()) {
        let path = route.path();
        prop_assert_eq!(&route.to_string(), &path);
        prop_assert_eq!(
            parse_path(&path, false),
            Ok(ParsedPath { host: None, route: route.clone() })
        );
    }

    /// With host-prefix detection and no prefix, the route comes back unless the name's first
    /// component looks like a host (has a `.` or is `localhost`) and parses as one: then it is
    /// taken as the upstream, as Docker's own image-name rule does.
    #[test]
    fn host_detection_on_unprefixed_paths(route in route()) {
        let got = parse_path(&route.path(), true);
        let Some(name) = route.name() else {
            prop_assert_eq!(got, Ok(ParsedPath { host: None, route }));
            return Ok(());
        };
        let mut components = name.components();
        let first = components.next().unwrap_or("");
        let rest: Vec<&str> = components.collect();
        let host = RegistryHost::looks_like_host(first)
            .then(|| RegistryHost::parse(first).ok())
            .flatten();
        match host {
            None => prop_assert_eq!(got, Ok(ParsedPath { host: None, route })),
            Some(host) if rest.is_empty() => prop_assert_eq!(
                got,
                Err(RouteError::HostWithoutName { host: host.to_string() })
            ),
            Some(host) => {
                let name = RepoName::parse(&rest.join("/")).unwrap();
                prop_assert_eq!(
                    got,
                    Ok(ParsedPath { host: Some(host), route: with_name(&route, name) })
                );
            }
        }
    }

    /// `/v2/<host>/<route>`: the host comes back canonical, the route unchanged.
    #[test]
    fn host_prefix_round_trips(host in host_like(), route in prefixable_route()) {
        let path = prefixed(&host.text, &route);
        let got = parse_path(&path, true);
        match RegistryHost::parse(&host.text) {
            Ok(want) => {
                prop_assert_eq!(Some(want.to_string()), host.canonical);
                prop_assert_eq!(got, Ok(ParsedPath { host: Some(want), route }));
            }
            // Too long for a host: it stays part of the name, which refuses it (upper case,
            // a port, brackets) or takes it as a name component.
            Err(_) => {
                prop_assert_eq!(host.canonical, None);
                if let Ok(parsed) = got {
                    prop_assert_eq!(&parsed.host, &None);
                    check_accepted(&path, &parsed)?;
                }
            }
        }
    }

    /// The `?ns=<registry>` form as containerd sends it (percent-encoded, among other
    /// parameters): the registry is the first `ns` value as a host, the path is parsed without
    /// host detection, and an `ns` that is not a host is refused as such.
    #[test]
    fn ns_query_names_the_registry(
        host in prop_oneof![
            3 => host_like().prop_map(|h| h.text),
            1 => text(":[]abc019.-_/ %"),
        ],
        route in route(),
        encode in any::<bool>(),
        before in vec(other_param(), 0..3),
        after in vec(prop_oneof![other_param(), Just("ns=quay.io".to_owned())], 0..3),
    ) {
        let value = if encode {
            utf8_percent_encode(&host, NON_ALPHANUMERIC).to_string()
        } else {
            host.replace(['%', '&', '#'], "")
        };
        let decoded = percent_decode_str(&value).decode_utf8_lossy().into_owned();
        let query = before
            .iter()
            .cloned()
            .chain([format!("ns={value}")])
            .chain(after)
            .collect::<Vec<_>>()
            .join("&");
        let want = match RegistryHost::parse(&decoded) {
            Ok(registry) => Ok((registry, route.clone())),
            Err(source) => Err(RouteError::Ns { source }),
        };
        prop_assert_eq!(mirror_target(&route.path(), Some(&query)), want, "{:?}", query);
    }

    /// Without `ns`, the registry is the path's host prefix, else Docker Hub.
    #[test]
    fn mirror_target_without_ns(
        path in prop_oneof![
            2 => route().prop_map(|r| r.path()),
            2 => (host_like(), prefixable_route()).prop_map(|(h, r)| prefixed(&h.text, &r)),
            1 => mutated(valid_path()),
        ],
        query in proptest::option::of(vec(other_param(), 0..3).prop_map(|p| p.join("&"))),
    ) {
        let want = parse_path(&path, true)
            .map(|p| (p.host.unwrap_or_else(RegistryHost::docker_hub), p.route));
        prop_assert_eq!(mirror_target(&path, query.as_deref()), want);
    }

    /// Arbitrary paths and queries never panic; a bad path is refused before a bad `ns`, and
    /// whatever is accepted names a canonical registry and a route that parses back.
    #[test]
    fn mirror_targets_are_valid(
        path in prop_oneof![text("/v2abc019.-_:[]manifeststags"), mutated(valid_path())],
        query in proptest::option::of(prop_oneof![
            text("ns=&%2F5Bquay.io:[]"),
            mutated(host_like().prop_map(|h| format!("ns={}", h.text))),
        ]),
    ) {
        let got = mirror_target(&path, query.as_deref());
        let has_ns = query.as_deref().is_some_and(|q| q.split('&').any(|p| p.starts_with("ns=")));
        if has_ns && let Err(e) = parse_path(&path, false) {
            prop_assert_eq!(got, Err(e));
            return Ok(());
        }
        if let Ok((registry, route)) = got {
            prop_assert_eq!(RegistryHost::parse(&registry.to_string()), Ok(registry));
            prop_assert_eq!(parse_path(&route.path(), false), Ok(ParsedPath { host: None, route }));
        }
    }

    /// A traversal or encoded component anywhere among valid parts, added or in place of one
    /// of them (the name, the reference, the digest, the session), is refused, with or without
    /// a host prefix.
    #[test]
    fn refuses_bad_components(
        path in valid_path(),
        bad in select(BAD_COMPONENTS),
        at in any::<Index>(),
        replace in any::<bool>(),
        allow_host_prefix in any::<bool>(),
    ) {
        let mut parts: Vec<&str> = path.split('/').collect();
        // parts[0] is the empty string before "v2".
        if replace && !bad.is_empty() {
            // Any component but the leading empty one and the trailing one of `uploads/`.
            let nonempty: Vec<usize> = (1..parts.len()).filter(|i| !parts[*i].is_empty()).collect();
            parts[nonempty[at.index(nonempty.len())]] = bad;
        } else {
            // After "v2".
            let at = 2 + at.index(parts.len() - 1);
            parts.insert(at, bad);
        }
        let bad_path = parts.join("/");
        let got = parse_path(&bad_path, allow_host_prefix);
        prop_assert!(got.is_err(), "{bad_path:?} accepted as {got:?}");
    }

    /// `blobs/uploads/<session>` refuses a dot session, the one place where no grammar but
    /// the path check stands between a component and the upstream.
    #[test]
    fn refuses_dot_sessions(
        name in repo_name(),
        session in select(&[".", ".."][..]),
        allow_host_prefix in any::<bool>(),
    ) {
        let path = format!("/v2/{name}/blobs/uploads/{session}");
        prop_assert_eq!(parse_path(&path, allow_host_prefix), Err(RouteError::DotComponent));
    }

    /// `%`, `\`, control, non-ASCII and characters that are not allowed in a URL path are
    /// refused wherever they are inserted.
    #[test]
    fn refuses_bad_characters(
        path in valid_path(),
        bad in select(BAD_PIECES),
        at in any::<Index>(),
        allow_host_prefix in any::<bool>(),
    ) {
        let at = at.index(path.len() + 1); // the path is ASCII: every index is a boundary
        let bad_path = format!("{}{bad}{}", &path[..at], &path[at..]);
        let got = parse_path(&bad_path, allow_host_prefix);
        prop_assert!(got.is_err(), "{bad_path:?} accepted as {got:?}");
    }

    /// Arbitrary and near-valid paths never panic, and whatever is accepted is canonical and
    /// valid by the grammar.
    #[test]
    fn accepted_paths_are_valid(
        path in prop_oneof![
            1 => text("/v2abcxyz019.-_:[]manifestsblobsuploadstagslistreferrers_catalog"),
            2 => valid_path(),
            4 => mutated(valid_path()),
        ],
        allow_host_prefix in any::<bool>(),
    ) {
        if let Ok(parsed) = parse_path(&path, allow_host_prefix) {
            check_accepted(&path, &parsed)?;
            if !allow_host_prefix {
                prop_assert_eq!(parsed.host, None);
            }
        }
    }
}
