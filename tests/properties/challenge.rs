//! `parse_www_authenticate`: generated headers (Bearer and Basic with parameters in any order and
//! case, quoted strings with escapes, bare tokens, unknown schemes with parameters or token68,
//! several challenges in one header) parse to the parameters they were built from; garbage never
//! panics.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use registry_proxy::registry::challenge::{Challenge, parse_www_authenticate};

use crate::strategies::{bytes, config, mutated, text};

/// A parameter value as written.
#[derive(Clone, Debug)]
enum Value {
    /// A quoted-string; `escape_all` escapes every character, not only `"` and `\`.
    Quoted { text: String, escape_all: bool },
    /// A bare value (a token, or an unquoted URL as some registries send).
    Bare(String),
}

impl Value {
    fn text(&self) -> &str {
        match self {
            Value::Quoted { text, .. } | Value::Bare(text) => text,
        }
    }

    fn render(&self) -> String {
        match self {
            Value::Bare(t) => t.clone(),
            Value::Quoted { text, escape_all } => {
                let mut out = String::from("\"");
                for c in text.chars() {
                    if *escape_all || c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
                out
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Param {
    /// As written (any case).
    name: String,
    value: Value,
    /// Whitespace before and after the `=`.
    bws: (&'static str, &'static str),
}

#[derive(Clone, Debug)]
enum Kind {
    Bearer,
    Basic,
    /// A scheme the proxy does not answer (skipped, with whatever follows it).
    Other,
}

#[derive(Clone, Debug)]
struct GenChallenge {
    kind: Kind,
    /// As written.
    scheme: String,
    params: Vec<Param>,
    /// For [`Kind::Other`] without parameters: a token68 credential.
    token68: Option<String>,
    /// Whitespace between the scheme and what follows it (one or more spaces).
    space: &'static str,
    /// List separators between parameters, one per parameter after the first.
    separators: Vec<&'static str>,
}

impl GenChallenge {
    fn render(&self) -> String {
        let mut out = self.scheme.clone();
        if let Some(t) = &self.token68 {
            out.push_str(self.space);
            out.push_str(t);
        } else if !self.params.is_empty() {
            out.push_str(self.space);
            for (i, p) in self.params.iter().enumerate() {
                if i > 0 {
                    out.push_str(self.separators.get(i - 1).copied().unwrap_or(","));
                }
                out.push_str(&p.name);
                out.push_str(p.bws.0);
                out.push('=');
                out.push_str(p.bws.1);
                out.push_str(&p.value.render());
            }
        }
        out
    }

    /// The first value of a parameter, names compared case-insensitively.
    fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.text().to_owned())
    }

    /// What the parser must make of it: Bearer needs a non-empty realm; unknown schemes vanish.
    fn expected(&self) -> Option<Challenge> {
        match self.kind {
            Kind::Bearer => Some(Challenge::Bearer {
                realm: self.param("realm").filter(|r| !r.is_empty())?,
                service: self.param("service"),
                scope: self.param("scope"),
            }),
            Kind::Basic => Some(Challenge::Basic {
                realm: self.param("realm"),
            }),
            Kind::Other => None,
        }
    }
}

/// `word` with the case of each ASCII letter flipped by the bits of `mask`.
fn recase(word: &str, mask: u64) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn value() -> impl Strategy<Value = Value> {
    let quoted_text = prop_oneof![
        "https://[a-z0-9.-]{1,20}(:[0-9]{1,5})?/[a-z/]{0,12}",
        "repository:[a-z0-9/._-]{1,24}:(pull|push|pull,push|\\*)( repository:[a-z/]{1,8}:pull)?",
        "[ -~]{0,30}",
        any::<String>(),
    ];
    prop_oneof![
        3 => (quoted_text, proptest::bool::weighted(0.2))
            .prop_map(|(text, escape_all)| Value::Quoted { text, escape_all }),
        1 => "[A-Za-z0-9!#$%&'*+.^_`|~:/?@-][A-Za-z0-9!#$%&'*+.^_`|~:/?=@-]{0,30}"
            .prop_map(Value::Bare),
    ]
}

fn param() -> impl Strategy<Value = Param> {
    let names = select(
        &[
            "realm", "service", "scope", "error", "type", "title", "nonce", "x-extra",
        ][..],
    );
    let bws = select(&["", "", "", " ", "\t", "  "][..]);
    (names, any::<u64>(), value(), bws.clone(), bws).prop_map(|(name, mask, value, a, b)| Param {
        name: recase(name, mask),
        value,
        bws: (a, b),
    })
}

/// Separators of list elements: a comma with optional whitespace, or empty elements.
fn separator() -> impl Strategy<Value = &'static str> {
    select(&[",", ", ", " ,", " , ", ",\t", ", ,", ",,", ", , ,"][..])
}

fn challenge() -> impl Strategy<Value = GenChallenge> {
    let scheme = prop_oneof![
        3 => any::<u64>().prop_map(|m| (Kind::Bearer, recase("bearer", m))),
        2 => any::<u64>().prop_map(|m| (Kind::Basic, recase("basic", m))),
        1 => select(&["Negotiate", "Newauth", "Digest", "Token", "AWS4-HMAC-SHA256", "X-Custom"][..])
            .prop_map(|s| (Kind::Other, s.to_owned())),
    ];
    (
        scheme,
        vec(param(), 0..6),
        proptest::option::weighted(0.3, "[A-Za-z0-9._~+/-]{1,20}={0,2}"),
        select(&[" ", " ", "  "][..]),
        vec(separator(), 5),
    )
        .prop_map(|((kind, scheme), params, token68, space, separators)| {
            // Only unknown schemes carry a token68 here, and then no parameters.
            let token68 = token68.filter(|_| matches!(kind, Kind::Other) && params.is_empty());
            GenChallenge {
                kind,
                scheme,
                params,
                token68,
                space,
                separators,
            }
        })
}

/// A whole header: challenges separated by list separators, possibly with empty elements
/// around them.
fn header() -> impl Strategy<Value = (String, Vec<Challenge>)> {
    (
        vec(challenge(), 1..4),
        vec(separator(), 3),
        select(&["", "", ", ", " ,,"][..]),
        select(&["", "", ",", " , "][..]),
    )
        .prop_map(|(challenges, separators, lead, trail)| {
            let rendered: Vec<String> = challenges.iter().map(GenChallenge::render).collect();
            let mut s = lead.to_owned();
            for (i, r) in rendered.iter().enumerate() {
                if i > 0 {
                    s.push_str(separators.get(i - 1).copied().unwrap_or(","));
                }
                s.push_str(r);
            }
            s.push_str(trail);
            let expected = challenges
                .iter()
                .filter_map(GenChallenge::expected)
                .collect();
            (s, expected)
        })
}

proptest! {
    #![proptest_config(config())]

    /// Generated headers parse to the challenges and parameters they were built from.
    #[test]
    fn generated_headers_parse((header, expected) in header()) {
        prop_assert_eq!(parse_www_authenticate(&header), expected, "header {:?}", header);
    }

    /// Garbage and near-valid headers never panic; every Bearer challenge has a realm.
    #[test]
    fn garbage_never_panics(
        value in prop_oneof![
            text("BearerBasicrealmservicescope=\",\\ \t"),
            bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            mutated(header().prop_map(|(h, _)| h)),
        ],
    ) {
        for c in parse_www_authenticate(&value) {
            if let Challenge::Bearer { realm, .. } = c {
                prop_assert!(!realm.is_empty(), "{value:?}");
            }
        }
    }
}
