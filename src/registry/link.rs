//! Pagination `Link` headers (`</v2/<name>/tags/list?n=100&last=x>; rel="next"`, also on
//! `_catalog` and referrers) rewritten so that the next page is asked of the proxy, the way the
//! client reached it: with the `/<registry>` path prefix, with `?ns=<registry>`, or unchanged. An
//! absolute URL naming the upstream becomes a path on the proxy; URLs naming other hosts are left
//! alone.

use super::host::RegistryHost;

/// How a client names the upstream registry in its request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathStyle {
    /// Paths are the upstream's own: intercepted CONNECT tunnels, and mirror requests with no hint
    /// (Docker's `registry-mirrors`, which means Docker Hub).
    #[default]
    Upstream,
    /// `/v2/<registry>/<repository>/…` (CRI-O, Podman, k3s, `docker pull proxy/quay.io/x`).
    PathPrefix,
    /// `/v2/<repository>/…?ns=<registry>` (containerd's `hosts.toml` mirrors).
    NsQuery,
}

/// Rewrites every URI reference of a `Link` header value for a client using `style` on `registry`.
pub fn rewrite_link(value: &str, registry: &RegistryHost, style: PathStyle) -> String {
    let mut out = String::with_capacity(value.len() + 32);
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(after);
            return out;
        };
        out.push_str(&rewrite_target(&after[..close], registry, style));
        out.push('>');
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// One link target: an absolute URL on the upstream loses its scheme and authority, then a
/// `/v2/…` path gets the client's way of naming the registry.
fn rewrite_target(target: &str, registry: &RegistryHost, style: PathStyle) -> String {
    let path = match strip_upstream_origin(target, registry) {
        Some(path) => path,
        None if target.starts_with('/') && !target.starts_with("//") => target,
        // Another host, or a relative reference: not ours to change.
        None => return target.to_owned(),
    };
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let Some(rest) = path_only.strip_prefix("/v2/") else {
        return path.to_owned();
    };
    match style {
        PathStyle::Upstream => path.to_owned(),
        PathStyle::PathPrefix => {
            let mut out = format!("/v2/{registry}/{rest}");
            if let Some(q) = query {
                out.push('?');
                out.push_str(q);
            }
            out
        }
        PathStyle::NsQuery => {
            let has_ns = query.is_some_and(|q| q.split('&').any(|p| p.starts_with("ns=")));
            match query {
                Some(q) if has_ns => format!("{path_only}?{q}"),
                Some("") | None => format!("{path_only}?ns={registry}"),
                Some(q) => format!("{path_only}?{q}&ns={registry}"),
            }
        }
    }
}

/// The path and query of an absolute URL (`https://host[:port]/…`, or scheme-relative `//host/…`)
/// whose authority is the registry's upstream (or its canonical name); `None` otherwise.
fn strip_upstream_origin<'a>(target: &'a str, registry: &RegistryHost) -> Option<&'a str> {
    let (default_port, rest) = if let Some(rest) = strip_prefix_ignore_case(target, "https://") {
        (443, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(target, "http://") {
        (80, rest)
    } else if let Some(rest) = target.strip_prefix("//") {
        (443, rest)
    } else {
        return None;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = RegistryHost::parse(authority).ok()?;
    let same = host == *registry
        || (host.host().eq_ignore_ascii_case(registry.upstream_host())
            && host.port().unwrap_or(default_port) == registry.upstream_port());
    if !same {
        return None;
    }
    Some(if path.is_empty() { "/" } else { path })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> RegistryHost {
        RegistryHost::parse(s).unwrap()
    }

    #[test]
    fn every_mode() {
        let tags = r#"</v2/library/alpine/tags/list?n=100&last=3.18>; rel="next""#;
        let hub = RegistryHost::docker_hub();
        let cases = [
            (PathStyle::Upstream, tags.to_owned()),
            (
                PathStyle::PathPrefix,
                r#"</v2/docker.io/library/alpine/tags/list?n=100&last=3.18>; rel="next""#
                    .to_owned(),
            ),
            (
                PathStyle::NsQuery,
                r#"</v2/library/alpine/tags/list?n=100&last=3.18&ns=docker.io>; rel="next""#
                    .to_owned(),
            ),
        ];
        for (style, want) in cases {
            assert_eq!(rewrite_link(tags, &hub, style), want, "{style:?}");
        }
    }

    #[test]
    fn catalog_and_ports() {
        let r = host("registry.local:5000");
        let link = r#"</v2/_catalog?last=b&n=2>; rel="next""#;
        assert_eq!(
            rewrite_link(link, &r, PathStyle::PathPrefix),
            r#"</v2/registry.local:5000/_catalog?last=b&n=2>; rel="next""#
        );
        assert_eq!(
            rewrite_link(link, &r, PathStyle::NsQuery),
            r#"</v2/_catalog?last=b&n=2&ns=registry.local:5000>; rel="next""#
        );
    }

    #[test]
    fn absolute_upstream_urls_become_paths() {
        let hub = RegistryHost::docker_hub();
        let link = r#"<https://registry-1.docker.io/v2/library/x/tags/list?last=a>; rel="next""#;
        assert_eq!(
            rewrite_link(link, &hub, PathStyle::Upstream),
            r#"</v2/library/x/tags/list?last=a>; rel="next""#
        );
        assert_eq!(
            rewrite_link(link, &hub, PathStyle::PathPrefix),
            r#"</v2/docker.io/library/x/tags/list?last=a>; rel="next""#
        );
        let quay = host("quay.io");
        let link = r#"<HTTPS://Quay.IO:443/v2/org/app/tags/list?n=1>; rel="next""#;
        assert_eq!(
            rewrite_link(link, &quay, PathStyle::NsQuery),
            r#"</v2/org/app/tags/list?n=1&ns=quay.io>; rel="next""#
        );
    }

    #[test]
    fn other_hosts_and_odd_values_are_left_alone() {
        let quay = host("quay.io");
        for link in [
            r#"<https://cdn.example/v2/org/app/tags/list?n=1>; rel="next""#,
            r#"<https://quay.io:8443/v2/org/app/tags/list>; rel="next""#,
            r#"<tags/list?n=1>; rel="next""#,
            r#"</other/path>; rel="help""#,
            "no brackets at all",
            "<unterminated",
            "",
        ] {
            assert_eq!(
                rewrite_link(link, &quay, PathStyle::PathPrefix),
                link,
                "{link}"
            );
        }
    }

    #[test]
    fn existing_ns_is_kept_and_bare_paths_get_one() {
        let quay = host("quay.io");
        assert_eq!(
            rewrite_link(
                "</v2/a/tags/list?ns=quay.io&n=1>",
                &quay,
                PathStyle::NsQuery
            ),
            "</v2/a/tags/list?ns=quay.io&n=1>"
        );
        assert_eq!(
            rewrite_link("</v2/a/tags/list>", &quay, PathStyle::NsQuery),
            "</v2/a/tags/list?ns=quay.io>"
        );
    }

    #[test]
    fn never_panics() {
        let seeds = [
            r#"</v2/a/tags/list?n=1&last=b>; rel="next""#,
            r#"<https://quay.io/v2/a/tags/list?n=1>; rel="next""#,
            "<//quay.io:443/v2/_catalog?ns=x>",
            "<http://[::1]:5000/v2/a>, <>",
        ];
        let registries = [
            RegistryHost::docker_hub(),
            host("quay.io"),
            host("[::1]:5000"),
        ];
        for input in crate::registry::fuzz::inputs(41, &seeds, "<>/?&=:;v2htps.", 4000) {
            for registry in &registries {
                for style in [
                    PathStyle::Upstream,
                    PathStyle::PathPrefix,
                    PathStyle::NsQuery,
                ] {
                    let out = rewrite_link(&input, registry, style);
                    if !input.contains('<') {
                        assert_eq!(out, input);
                    }
                }
            }
        }
    }

    #[test]
    fn several_links() {
        let quay = host("quay.io");
        assert_eq!(
            rewrite_link(
                r#"</v2/a/tags/list?last=x>; rel="next", </v2/a/tags/list>; rel="first""#,
                &quay,
                PathStyle::PathPrefix
            ),
            r#"</v2/quay.io/a/tags/list?last=x>; rel="next", </v2/quay.io/a/tags/list>; rel="first""#
        );
    }
}
