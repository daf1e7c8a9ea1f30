//! The registry API as data: pure, I/O-free parsers and types for the OCI distribution (Docker
//! registry v2) protocol.
//!
//! Everything here works on `&str`/`&[u8]` and never panics, whatever the input: request paths
//! ([`route`]), repository names ([`name`]), digests ([`digest`]), tags and references
//! ([`reference`](mod@reference)), registry hosts ([`host`]), `WWW-Authenticate` challenges ([`challenge`]), `Basic`/`Bearer` credentials ([`basic`]),
//! `Range` headers ([`range`]), the JSON error body and its codes ([`error`]), manifest media
//! types ([`media`]), pagination `Link` headers ([`link`]), manifests' references ([`manifest`])
//! and image references as people type them ([`image`]). I/O code calls these; they call no I/O. Each module carries table tests and a
//! deterministic "never panics" test fed with pseudo-random and mutated inputs.

pub mod basic;
pub mod challenge;
pub mod digest;
pub mod error;
pub mod host;
pub mod image;
pub mod link;
pub mod manifest;
pub mod media;
pub mod name;
pub mod range;
pub mod reference;
pub mod route;

/// A tiny deterministic input generator for the "never panics" tests (no extra crates).
#[cfg(test)]
pub(crate) mod fuzz {
    /// xorshift64: deterministic, fast, good enough to shake parsers.
    pub(crate) struct XorShift(u64);

    impl XorShift {
        pub(crate) fn new(seed: u64) -> XorShift {
            XorShift(seed | 1)
        }

        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// A number in `0..n` (`n` > 0).
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }

        pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    /// Characters that tend to break parsers, mixed into every alphabet.
    const NASTY: &[char] = &[
        '\0', '\t', '\n', '\r', ' ', '\u{7f}', 'é', '€', '😀', '\u{200b}', '%', '\\', '/', ':',
        ';', ',', '=', '"', '\'', '.', '-', '_', '+', '*', '?', '#', '[', ']', '{', '}', '0', '9',
        'a', 'z', 'A', 'Z',
    ];

    /// `count` inputs: mutations of `seeds` and random strings over `alphabet` plus nasty chars.
    pub(crate) fn inputs(seed: u64, seeds: &[&str], alphabet: &str, count: usize) -> Vec<String> {
        let mut rng = XorShift::new(seed);
        let mut chars: Vec<char> = alphabet.chars().collect();
        chars.extend_from_slice(NASTY);
        let mut out = Vec::with_capacity(count + seeds.len());
        out.extend(seeds.iter().map(|s| (*s).to_owned()));
        for _ in 0..count {
            if seeds.is_empty() || rng.below(4) == 0 {
                let len = rng.below(48);
                out.push((0..len).map(|_| rng.pick(&chars)).collect());
                continue;
            }
            let mut s: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
            for _ in 0..=rng.below(4) {
                let at = rng.below(s.len() + 1);
                match rng.below(6) {
                    0 => s.insert(at, rng.pick(&chars)),
                    1 if at < s.len() => {
                        s.remove(at);
                    }
                    2 if at < s.len() => s[at] = rng.pick(&chars),
                    3 => s.truncate(at),
                    4 => {
                        let tail: Vec<char> = s[at..].to_vec();
                        s.extend(tail);
                    }
                    _ => {
                        let digits = "18446744073709551616999";
                        for (i, c) in digits.chars().enumerate() {
                            s.insert((at + i).min(s.len()), c);
                        }
                    }
                }
            }
            out.push(s.into_iter().collect());
        }
        out
    }
}
