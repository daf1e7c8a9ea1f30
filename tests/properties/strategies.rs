//! Input generators shared by the property modules: valid inputs built from each grammar,
//! arbitrary text and bytes, and mutations that push valid inputs just past their grammar.
//!
//! The composite strategies are boxed: unboxed, the value trees of the nested unions grow so
//! large that a debug build overflows the 2 MiB stack of a test thread.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use registry_proxy::registry::digest::Digest;
use registry_proxy::registry::name::RepoName;
use registry_proxy::registry::reference::Reference;
use registry_proxy::registry::route::Route;

/// Cases per property when `PROPTEST_CASES` is not set: enough to cover every branch of the
/// generators many times over, small enough that the whole target runs in seconds in release.
pub(crate) const DEFAULT_CASES: u32 = 2000;

/// The configuration every property uses: [`DEFAULT_CASES`] cases, or `PROPTEST_CASES` (which
/// proptest's default configuration reads) when it is set.
pub(crate) fn config() -> ProptestConfig {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig::with_cases(DEFAULT_CASES)
    }
}

/// Characters that tend to break parsers, mixed into every alphabet.
const NASTY_CHARS: &[char] = &[
    '\0', '\t', '\n', '\r', ' ', '\u{7f}', '\u{85}', '\u{a0}', 'é', 'İ', '€', '😀', '\u{200b}',
    '\u{feff}', '\u{3000}', '%', '\\', '/', ':', ';', ',', '=', '"', '\'', '.', '-', '_', '+', '*',
    '?', '#', '[', ']', '{', '}', '@', '~', '0', '9', 'a', 'z', 'A', 'Z',
];

/// Pieces the mutations insert: encoded separators and dots, traversal, NUL, non-ASCII, numbers
/// past `u64`.
const NASTY_PIECES: &[&str] = &[
    "%",
    "%2f",
    "%2F",
    "%2e",
    "%2e%2e",
    "%5c",
    "%00",
    "%25",
    "..",
    ".",
    "/",
    "//",
    "/../",
    "/./",
    "\\",
    "\0",
    "\t",
    "\n",
    "\r\n",
    " ",
    "\u{7f}",
    "é",
    "€",
    "😀",
    "\u{200b}",
    ":",
    ";",
    ",",
    "=",
    "\"",
    "\\\"",
    "'",
    "-",
    "--",
    "_",
    "__",
    "+",
    "*",
    "?",
    "#",
    "[",
    "]",
    "[::1]",
    "{",
    "}",
    "@",
    "~",
    "A",
    "Z",
    "a",
    "0",
    "9",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
];

/// One edit of a string, at positions chosen relative to its length.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    /// Insert a nasty piece.
    Insert(Index, &'static str),
    /// Replace one character with a nasty piece.
    Replace(Index, &'static str),
    /// Remove one character.
    Remove(Index),
    /// Cut the string short.
    Truncate(Index),
    /// Repeat the characters between two positions in place (grows components).
    Repeat(Index, Index),
    /// Insert a long run of one character (past every length limit).
    Long(Index, char, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let piece = || select(NASTY_PIECES);
    prop_oneof![
        4 => (any::<Index>(), piece()).prop_map(|(i, p)| Mutation::Insert(i, p)),
        2 => (any::<Index>(), piece()).prop_map(|(i, p)| Mutation::Replace(i, p)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Repeat(a, b)),
        1 => (any::<Index>(), select(&['a', '0', '.', '-', '/', '9', 'F'][..]), 100usize..400)
            .prop_map(|(i, c, n)| Mutation::Long(i, c, n)),
    ]
}

/// `s` with the mutations applied in order.
pub(crate) fn apply(s: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for m in mutations {
        let len = chars.len();
        match m {
            Mutation::Insert(at, piece) => {
                let at = at.index(len + 1);
                chars.splice(at..at, piece.chars());
            }
            Mutation::Replace(at, piece) if len > 0 => {
                let at = at.index(len);
                chars.splice(at..=at, piece.chars());
            }
            Mutation::Remove(at) if len > 0 => {
                chars.remove(at.index(len));
            }
            Mutation::Truncate(at) => chars.truncate(at.index(len + 1)),
            Mutation::Repeat(a, b) if len > 0 => {
                let (a, b) = (a.index(len), b.index(len));
                let (lo, hi) = (a.min(b), a.max(b) + 1);
                let piece: Vec<char> = chars[lo..hi].to_vec();
                chars.splice(hi..hi, piece);
            }
            Mutation::Long(at, c, n) => {
                let at = at.index(len + 1);
                chars.splice(at..at, std::iter::repeat_n(*c, *n));
            }
            Mutation::Replace(..) | Mutation::Remove(_) | Mutation::Repeat(..) => {}
        }
    }
    chars.into_iter().collect()
}

/// Valid inputs from `valid`, each with one to four mutations.
pub(crate) fn mutated(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    (valid, vec(mutation(), 1..5))
        .prop_map(|(s, ms)| apply(&s, &ms))
        .boxed()
}

/// Arbitrary text: any Unicode, any bytes read lossily, and strings over `alphabet` (the
/// parser's own characters) plus the nasty ones, where the parser's branches are.
pub(crate) fn text(alphabet: &'static str) -> BoxedStrategy<String> {
    let chars: Vec<char> = alphabet
        .chars()
        .chain(NASTY_CHARS.iter().copied())
        .collect();
    prop_oneof![
        1 => any::<String>(),
        1 => vec(any::<char>(), 0..48).prop_map(String::from_iter),
        1 => bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        3 => vec(select(chars), 0..80).prop_map(String::from_iter),
    ]
    .boxed()
}

/// Arbitrary bytes.
pub(crate) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..160)
}

/// Path components that are also endpoint keywords: names may contain them.
const NAME_KEYWORDS: &[&str] = &[
    "manifests",
    "blobs",
    "uploads",
    "tags",
    "list",
    "referrers",
    "v2",
    "library",
    "localhost",
];

/// One repository name component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub(crate) fn name_component() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,3}",
        2 => select(NAME_KEYWORDS).prop_map(str::to_owned),
        1 => "[a-z0-9]{1,4}\\.[a-z0-9]{1,4}",
    ]
}

/// A valid repository name, sometimes close to the 255-byte limit.
pub(crate) fn name_text() -> BoxedStrategy<String> {
    prop_oneof![
        8 => vec(name_component(), 1..5).prop_map(|c| c.join("/")),
        1 => "[a-z0-9]{200,255}",
        1 => vec("[a-z0-9]{40,64}", 3..6)
            .prop_map(|c| c.join("/"))
            .prop_filter("within the name limit", |s| s.len() <= 255),
    ]
    .boxed()
}

/// A valid repository name.
pub(crate) fn repo_name() -> BoxedStrategy<RepoName> {
    name_text()
        .prop_map(|s| RepoName::parse(&s).expect("generated name is valid"))
        .boxed()
}

/// A valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn tag_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        1 => "[A-Za-z0-9_][A-Za-z0-9_.-]{100,127}",
        2 => select(&["latest", "manifests", "blobs", "uploads", "list", "_", "1.0", "v2"][..])
            .prop_map(str::to_owned),
    ]
    .boxed()
}

/// A valid digest: sha256, sha512, or another algorithm from the grammar.
pub(crate) fn digest_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "sha256:[0-9a-f]{64}",
        1 => "sha512:[0-9a-f]{128}",
        2 => ("[a-z0-9]{1,6}([+._-][a-z0-9]{1,6}){0,2}", "[a-zA-Z0-9=_-]{1,48}")
            .prop_filter("not a registered algorithm", |(a, _)| a != "sha256" && a != "sha512")
            .prop_map(|(a, e)| format!("{a}:{e}")),
    ]
    .boxed()
}

/// A valid digest.
pub(crate) fn digest() -> BoxedStrategy<Digest> {
    digest_text()
        .prop_map(|s| Digest::parse(&s).expect("generated digest is valid"))
        .boxed()
}

/// A valid manifest reference.
pub(crate) fn reference() -> BoxedStrategy<Reference> {
    prop_oneof![
        tag_text().prop_map(Reference::Tag),
        digest().prop_map(Reference::Digest),
    ]
    .boxed()
}

/// An upload session id as registries hand them out: RFC 3986 `pchar`s without `%`, not `.` or
/// `..`.
pub(crate) fn session() -> BoxedStrategy<String> {
    prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,40}",
        select(&["uploads", "blobs", "manifests", "list", "..."][..]).prop_map(str::to_owned),
    ]
    .prop_filter("not a dot component", |s| s != "." && s != "..")
    .boxed()
}

/// Every [`Route`] variant, with names, references, digests and sessions from their grammars.
pub(crate) fn route() -> BoxedStrategy<Route> {
    prop_oneof![
        1 => Just(Route::Base),
        1 => Just(Route::Catalog),
        3 => (repo_name(), reference()).prop_map(|(name, reference)| Route::Manifest { name, reference }),
        3 => (repo_name(), digest()).prop_map(|(name, digest)| Route::Blob { name, digest }),
        2 => repo_name().prop_map(|name| Route::TagsList { name }),
        2 => (repo_name(), digest()).prop_map(|(name, digest)| Route::Referrers { name, digest }),
        3 => (repo_name(), proptest::option::of(session()))
            .prop_map(|(name, session)| Route::Upload { name, session }),
    ]
    .boxed()
}

/// A registry host as typed, and the canonical form it must parse to.
#[derive(Clone, Debug)]
pub(crate) struct HostCase {
    /// As written: any case, optional port, IPv6 in brackets.
    pub(crate) text: String,
    /// What `RegistryHost::parse(text)` displays as; `None` if it must be refused.
    pub(crate) canonical: Option<String>,
}

const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The canonical form of a host (as typed, without brackets) and port, by the rules documented
/// on `RegistryHost`: lower case, 443 dropped, Docker Hub's aliases folded into `docker.io`,
/// IPv6 literals in brackets; `None` for a name longer than 253 bytes.
fn canonical(host: &str, port: Option<u16>) -> Option<String> {
    let host = host.to_ascii_lowercase();
    if host.len() > 253 {
        return None;
    }
    let port = port.filter(|p| *p != 443);
    if port.is_none() && DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        return Some("docker.io".to_owned());
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

fn with_port(host: String, port: Option<u16>, bracket: bool) -> HostCase {
    let canonical = canonical(&host, port);
    let host = if bracket { format!("[{host}]") } else { host };
    let text = match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    HostCase { text, canonical }
}

fn port() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(443)),
        1 => Just(Some(5000)),
        2 => (1u16..).prop_map(Some),
    ]
}

/// A DNS label as hosts are written (upper case allowed, `_` tolerated).
fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9_-]{0,8}[a-zA-Z0-9])?"
}

/// Hosts that `RegistryHost::looks_like_host` takes for a host (a `.`, a port, `localhost` or an
/// IPv6 literal), so they work as path prefixes.
pub(crate) fn host_like() -> BoxedStrategy<HostCase> {
    let ipv6 =
        prop_oneof![
            vec("[0-9a-fA-F]{1,4}", 8).prop_map(|g| g.join(":")),
            (vec("[0-9a-fA-F]{1,4}", 0..4), vec("[0-9a-fA-F]{1,4}", 0..4))
                .prop_map(|(a, b)| format!("{}::{}", a.join(":"), b.join(":"))),
        ];
    prop_oneof![
        6 => (vec(label(), 2..5), port()).prop_map(|(l, p)| with_port(l.join("."), p, false)),
        2 => (label(), (1u16..).prop_map(Some)).prop_map(|(l, p)| with_port(l, p, false)),
        1 => port().prop_map(|p| with_port("localhost".to_owned(), p, false)),
        2 => (ipv6, port()).prop_map(|(h, p)| with_port(h, p, true)),
        2 => (select(&DOCKER_HUB_ALIASES[..]), any::<bool>(), port()).prop_map(|(h, upper, p)| {
            let h = if upper { h.to_ascii_uppercase() } else { h.to_owned() };
            with_port(h, p, false)
        }),
        1 => (vec("[a-z0-9]{50,63}", 4), port()).prop_map(|(l, p)| with_port(l.join("."), p, false)),
    ]
    .boxed()
}

/// Any host from the grammar, including single labels without a port (`registry`).
pub(crate) fn host_case() -> BoxedStrategy<HostCase> {
    prop_oneof![
        4 => host_like(),
        1 => label().prop_map(|l| with_port(l, None, false)),
        1 => ("[lL][oO][cC][aA][lL][hH][oO][sS][tT]", port())
            .prop_map(|(l, p)| with_port(l, p, false)),
    ]
    .boxed()
}
