//! Table tests and the "never panics" test for [`super::parse_path`] and [`super::mirror_target`].

use super::*;

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn name(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn digest() -> Digest {
    Digest::parse(D).unwrap()
}

fn tag(s: &str) -> Reference {
    Reference::Tag(s.to_owned())
}

fn host(s: &str) -> Option<RegistryHost> {
    Some(RegistryHost::parse(s).unwrap())
}

#[test]
fn parses_routes() {
    let cases: Vec<(String, bool, Option<RegistryHost>, Route)> = vec![
        ("/v2".into(), false, None, Route::Base),
        ("/v2/".into(), true, None, Route::Base),
        ("/v2/_catalog".into(), true, None, Route::Catalog),
        (
            "/v2/quay.io/_catalog".into(),
            true,
            host("quay.io"),
            Route::Catalog,
        ),
        (
            "/v2/alpine/manifests/latest".into(),
            false,
            None,
            Route::Manifest {
                name: name("alpine"),
                reference: tag("latest"),
            },
        ),
        (
            "/v2/library/alpine/manifests/3.19".into(),
            true,
            None,
            Route::Manifest {
                name: name("library/alpine"),
                reference: tag("3.19"),
            },
        ),
        (
            format!("/v2/library/alpine/manifests/{D}"),
            false,
            None,
            Route::Manifest {
                name: name("library/alpine"),
                reference: Reference::Digest(digest()),
            },
        ),
        (
            "/v2/a/manifests/manifests/latest".into(),
            false,
            None,
            Route::Manifest {
                name: name("a/manifests"),
                reference: tag("latest"),
            },
        ),
        (
            "/v2/manifests/manifests/manifests".into(),
            false,
            None,
            Route::Manifest {
                name: name("manifests"),
                reference: tag("manifests"),
            },
        ),
        (
            format!("/v2/blobs/blobs/{D}"),
            false,
            None,
            Route::Blob {
                name: name("blobs"),
                digest: digest(),
            },
        ),
        (
            format!("/v2/org/team/img/blobs/{D}"),
            false,
            None,
            Route::Blob {
                name: name("org/team/img"),
                digest: digest(),
            },
        ),
        (
            "/v2/a/manifests/tags/list".into(),
            false,
            None,
            Route::TagsList {
                name: name("a/manifests"),
            },
        ),
        (
            format!("/v2/a/referrers/{D}"),
            false,
            None,
            Route::Referrers {
                name: name("a"),
                digest: digest(),
            },
        ),
        (
            "/v2/a/b/blobs/uploads/".into(),
            false,
            None,
            Route::Upload {
                name: name("a/b"),
                session: None,
            },
        ),
        (
            "/v2/a/b/blobs/uploads".into(),
            false,
            None,
            Route::Upload {
                name: name("a/b"),
                session: None,
            },
        ),
        (
            "/v2/a/blobs/uploads/3f9c-11ee_a=b.c~d".into(),
            false,
            None,
            Route::Upload {
                name: name("a"),
                session: Some("3f9c-11ee_a=b.c~d".into()),
            },
        ),
        (
            format!("/v2/a/blobs/uploads/{D}"),
            false,
            None,
            Route::Upload {
                name: name("a"),
                session: Some(D.into()),
            },
        ),
        (
            "/v2/quay.io/org/img/manifests/1.0".into(),
            true,
            host("quay.io"),
            Route::Manifest {
                name: name("org/img"),
                reference: tag("1.0"),
            },
        ),
        (
            format!("/v2/docker.io/library/alpine/blobs/{D}"),
            true,
            Some(RegistryHost::docker_hub()),
            Route::Blob {
                name: name("library/alpine"),
                digest: digest(),
            },
        ),
        (
            "/v2/registry.test:5443/test/x/tags/list".into(),
            true,
            host("registry.test:5443"),
            Route::TagsList {
                name: name("test/x"),
            },
        ),
        (
            "/v2/localhost/x/manifests/v1".into(),
            true,
            host("localhost"),
            Route::Manifest {
                name: name("x"),
                reference: tag("v1"),
            },
        ),
        (
            "/v2/[::1]:5000/x/manifests/v1".into(),
            true,
            host("[::1]:5000"),
            Route::Manifest {
                name: name("x"),
                reference: tag("v1"),
            },
        ),
        (
            "/v2/quay.io/org/blobs/uploads/".into(),
            true,
            host("quay.io"),
            Route::Upload {
                name: name("org"),
                session: None,
            },
        ),
        // Without host prefixes, a dotted first component is part of the name.
        (
            "/v2/quay.io/org/img/manifests/1.0".into(),
            false,
            None,
            Route::Manifest {
                name: name("quay.io/org/img"),
                reference: tag("1.0"),
            },
        ),
        (
            "/v2/localhost/x/manifests/v1".into(),
            false,
            None,
            Route::Manifest {
                name: name("localhost/x"),
                reference: tag("v1"),
            },
        ),
    ];
    for (path, allow, want_host, want_route) in cases {
        match parse_path(&path, allow) {
            Ok(got) => {
                assert_eq!(got.host, want_host, "{path}");
                assert_eq!(got.route, want_route, "{path}");
                if got.host.is_none() && path.len() > 4 && !path.ends_with("/uploads") {
                    assert_eq!(got.route.path(), path, "round trip");
                }
            }
            Err(e) => panic!("{path}: {e:?}"),
        }
    }
}

#[test]
fn refuses_bad_paths() {
    let cases: Vec<(String, bool, RouteError, ErrorCode)> = vec![
        (
            "/".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v1/".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v2x".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "v2/".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/V2/".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v2/alpine".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v2/a/b/c".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v2/a/tags/lists".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v2/a/manifests".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v2/_catalog/x".into(),
            true,
            RouteError::NotFound,
            ErrorCode::NameUnknown,
        ),
        (
            "/v2/a%2fb/manifests/latest".into(),
            true,
            RouteError::PercentEncoded,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/manifests/%2e%2e".into(),
            true,
            RouteError::PercentEncoded,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a\\b/manifests/latest".into(),
            true,
            RouteError::Backslash,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a//b/manifests/latest".into(),
            true,
            RouteError::EmptyComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2//a/manifests/latest".into(),
            true,
            RouteError::EmptyComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/manifests/latest/".into(),
            true,
            RouteError::EmptyComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/tags/list/".into(),
            true,
            RouteError::EmptyComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2//".into(),
            true,
            RouteError::EmptyComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/blobs/uploads/x/".into(),
            true,
            RouteError::EmptyComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/../b/manifests/latest".into(),
            true,
            RouteError::DotComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/./a/manifests/latest".into(),
            true,
            RouteError::DotComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/manifests/..".into(),
            true,
            RouteError::DotComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/blobs/uploads/.".into(),
            true,
            RouteError::DotComponent,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a\0/manifests/latest".into(),
            true,
            RouteError::ControlCharacter,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/manifests/lat\nest".into(),
            true,
            RouteError::ControlCharacter,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a\u{7f}/manifests/latest".into(),
            true,
            RouteError::ControlCharacter,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/é/manifests/latest".into(),
            true,
            RouteError::NonAscii,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a b/manifests/latest".into(),
            true,
            RouteError::ForbiddenCharacter { character: ' ' },
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/manifests/x?y".into(),
            true,
            RouteError::ForbiddenCharacter { character: '?' },
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/manifests/latest".into(),
            true,
            RouteError::MissingName,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/blobs/uploads/".into(),
            true,
            RouteError::MissingName,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/tags/list".into(),
            false,
            RouteError::MissingName,
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/quay.io/manifests/latest".into(),
            true,
            RouteError::HostWithoutName {
                host: "quay.io".into(),
            },
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/registry.test:5443/tags/list".into(),
            true,
            RouteError::HostWithoutName {
                host: "registry.test:5443".into(),
            },
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/Alpine/manifests/latest".into(),
            true,
            RouteError::Name {
                source: NameError::Component {
                    component: "Alpine".into(),
                },
            },
            ErrorCode::NameInvalid,
        ),
        // Looks like a host but does not parse as one: it stays (an invalid) part of the name.
        (
            "/v2/a..b/x/manifests/v1".into(),
            true,
            RouteError::Name {
                source: NameError::Component {
                    component: "a..b".into(),
                },
            },
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/registry.test:5443/x/manifests/v1".into(),
            false,
            RouteError::Name {
                source: NameError::Component {
                    component: "registry.test:5443".into(),
                },
            },
            ErrorCode::NameInvalid,
        ),
        (
            "/v2/a/manifests/-bad".into(),
            true,
            RouteError::Reference {
                source: ReferenceError::Tag { tag: "-bad".into() },
            },
            ErrorCode::ManifestInvalid,
        ),
        (
            "/v2/a/blobs/latest".into(),
            true,
            RouteError::Digest {
                source: DigestError::MissingSeparator,
            },
            ErrorCode::DigestInvalid,
        ),
        (
            "/v2/a/referrers/sha256:abc".into(),
            true,
            RouteError::Digest {
                source: DigestError::WrongLength {
                    algorithm: "sha256".into(),
                    expected: 64,
                    actual: 3,
                },
            },
            ErrorCode::DigestInvalid,
        ),
        (
            "/v2/a/blobs/uploads/[x]".into(),
            true,
            RouteError::Session,
            ErrorCode::BlobUploadInvalid,
        ),
    ];
    for (path, allow, want, code) in cases {
        let got = parse_path(&path, allow);
        assert_eq!(got.as_ref().err(), Some(&want), "{path:?}: {got:?}");
        assert_eq!(want.code(), code, "{path:?}");
    }
    let digest_ref = parse_path("/v2/a/manifests/sha256:xyz", true).unwrap_err();
    assert_eq!(digest_ref.code(), ErrorCode::DigestInvalid);
    assert_eq!(
        RouteError::NotFound.code().status(),
        http::StatusCode::NOT_FOUND
    );
    assert_eq!(
        RouteError::DotComponent.code().status(),
        http::StatusCode::BAD_REQUEST
    );
}

#[test]
fn mirror_targets() {
    let alpine = || Route::Manifest {
        name: name("library/alpine"),
        reference: tag("3"),
    };
    let hub = || RegistryHost::docker_hub();
    let quay = || host("quay.io").unwrap();
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Result<(RegistryHost, Route), RouteError>,
    );
    let cases: Vec<Case> = vec![
        (
            "/v2/library/alpine/manifests/3",
            None,
            Ok((hub(), alpine())),
        ),
        (
            "/v2/library/alpine/manifests/3",
            Some(""),
            Ok((hub(), alpine())),
        ),
        (
            "/v2/library/alpine/manifests/3",
            Some("ns=quay.io"),
            Ok((quay(), alpine())),
        ),
        (
            "/v2/library/alpine/manifests/3",
            Some("a=b&ns=Quay.IO:443&ns=x"),
            Ok((quay(), alpine())),
        ),
        (
            "/v2/library/alpine/manifests/3",
            Some("ns=%5B%3A%3A1%5D%3A5000"),
            Ok((host("[::1]:5000").unwrap(), alpine())),
        ),
        (
            "/v2/library/alpine/manifests/3",
            Some("xns=quay.io"),
            Ok((hub(), alpine())),
        ),
        (
            "/v2/quay.io/library/alpine/manifests/3",
            None,
            Ok((quay(), alpine())),
        ),
        // With `ns`, the path takes no host prefix: `quay.io` is the first name component.
        (
            "/v2/quay.io/library/alpine/manifests/3",
            Some("ns=docker.io"),
            Ok((
                hub(),
                Route::Manifest {
                    name: name("quay.io/library/alpine"),
                    reference: tag("3"),
                },
            )),
        ),
        ("/v2/", Some("ns=quay.io"), Ok((quay(), Route::Base))),
        (
            "/v2/library/alpine/manifests/3",
            Some("ns="),
            Err(RouteError::Ns {
                source: HostError::Empty,
            }),
        ),
        (
            "/v2/library/alpine/manifests/3",
            Some("ns=%ff"),
            Err(RouteError::Ns {
                source: HostError::Invalid("\u{fffd}".into()),
            }),
        ),
        (
            "/v2/library/alpine/manifests/3",
            Some("ns=a/b"),
            Err(RouteError::Ns {
                source: HostError::Invalid("a/b".into()),
            }),
        ),
        // A bad path is refused first.
        (
            "/v2/library/%2e%2e/manifests/3",
            Some("ns=%ff"),
            Err(RouteError::PercentEncoded),
        ),
    ];
    for (path, query, want) in cases {
        assert_eq!(mirror_target(path, query), want, "{path} ? {query:?}");
    }
    let e = mirror_target("/v2/a/manifests/3", Some("ns=")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NameInvalid);
    assert_eq!(e.to_string(), "bad ns parameter: empty registry host");
}

#[test]
fn route_accessors() {
    let r = parse_path("/v2/a/b/tags/list", false).unwrap().route;
    assert_eq!(r.name().map(RepoName::as_str), Some("a/b"));
    assert_eq!(r.to_string(), "/v2/a/b/tags/list");
    assert_eq!(Route::Base.name(), None);
    assert_eq!(Route::Catalog.path(), "/v2/_catalog");
}

#[test]
fn never_panics() {
    let seeds = [
        "/v2/",
        "/v2/_catalog",
        "/v2/library/alpine/manifests/latest",
        "/v2/quay.io/org/img/manifests/1.0",
        "/v2/registry.test:5443/test/x/tags/list",
        "/v2/[::1]:5000/x/blobs/uploads/",
        "/v2/a/blobs/uploads/abc-123",
        "/v2/a/manifests/manifests/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "/v2/docker.io/library/alpine/referrers/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ];
    let alphabet = "/v2abcxyz019.-_:manifestsblobsuploadstagslistreferrers";
    for (i, input) in crate::registry::fuzz::inputs(19, &seeds, alphabet, 6000)
        .iter()
        .enumerate()
    {
        let allow = i % 2 == 0;
        let Ok(parsed) = parse_path(input, allow) else {
            continue;
        };
        // Whatever parses is clean and re-parses to the same route.
        assert!(
            input.is_ascii() && !input.contains(['%', '\\']),
            "{input:?}"
        );
        assert!(
            !input.contains("/../") && !input.contains("/./") && !input.contains("//"),
            "{input:?}"
        );
        let again = parse_path(&parsed.route.path(), false).unwrap();
        assert_eq!(again.route, parsed.route, "{input:?}");
        if !allow {
            assert_eq!(parsed.host, None);
        }
    }
}
