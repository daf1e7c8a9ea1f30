//! `Range` request headers (RFC 9110 §14.1.2) for blob downloads: one `bytes` range.
//!
//! Multiple ranges and other units are legal but not worth serving: they parse to `Ok(None)`,
//! which means "send the whole body with 200", as the RFC allows a server to do. Numbers too large
//! for `u64` saturate, so they resolve as "past the end" or "to the end" instead of overflowing.

/// One byte range from a `Range: bytes=…` header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ByteRange {
    /// `bytes=first-last`, both inclusive. Invariant: `first <= last`.
    FromTo(u64, u64),
    /// `bytes=first-`: from `first` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// Why a `Range` header is malformed (answered with 416 `RANGE_INVALID`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// No `unit=` prefix.
    #[error("Range header has no unit")]
    NoUnit,
    /// The unit is not a token.
    #[error("Range header has an invalid unit")]
    BadUnit,
    /// No range in the set.
    #[error("Range header has no range")]
    Empty,
    /// A range that is not `a-b`, `a-` or `-n` with decimal numbers.
    #[error("malformed byte range {spec:?}")]
    Malformed {
        /// The offending range (cut to 64 characters).
        spec: String,
    },
    /// `a-b` with `b < a`.
    #[error("byte range {first}-{last} ends before it starts")]
    Reversed {
        /// First byte position.
        first: u64,
        /// Last byte position.
        last: u64,
    },
}

/// Parses a `Range` header value: `Ok(Some(_))` for one `bytes` range, `Ok(None)` for a
/// well-formed header we choose to ignore (several ranges, another unit), `Err` if malformed.
/// Whitespace around tokens is tolerated; empty list elements (`bytes=0-1,`) are skipped.
pub fn parse_range(value: &str) -> Result<Option<ByteRange>, RangeError> {
    let (unit, set) = value.split_once('=').ok_or(RangeError::NoUnit)?;
    let unit = unit.trim();
    if unit.is_empty() || !unit.bytes().all(is_tchar) {
        return Err(RangeError::BadUnit);
    }
    if !unit.eq_ignore_ascii_case("bytes") {
        // Another unit has its own syntax; we serve the whole body.
        return Ok(None);
    }
    let mut first = None;
    let mut count = 0usize;
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let range = parse_spec(spec)?;
        count += 1;
        first.get_or_insert(range);
    }
    match (count, first) {
        (1, Some(range)) => Ok(Some(range)),
        (0, _) | (_, None) => Err(RangeError::Empty),
        _ => Ok(None),
    }
}

/// One `range-spec`: `a-b`, `a-` or `-n`.
fn parse_spec(spec: &str) -> Result<ByteRange, RangeError> {
    let malformed = || RangeError::Malformed {
        spec: spec.chars().take(64).collect(),
    };
    let (first, last) = spec.split_once('-').ok_or_else(malformed)?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, true) => Err(malformed()),
        (true, false) => Ok(ByteRange::Suffix(number(last).ok_or_else(malformed)?)),
        (false, true) => Ok(ByteRange::From(number(first).ok_or_else(malformed)?)),
        (false, false) => {
            let first = number(first).ok_or_else(malformed)?;
            let last = number(last).ok_or_else(malformed)?;
            if last < first {
                Err(RangeError::Reversed { first, last })
            } else {
                Ok(ByteRange::FromTo(first, last))
            }
        }
    }
}

/// A non-empty run of decimal digits; saturates at `u64::MAX`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ByteRange {
    /// The inclusive `(start, end)` byte window for a body of `len` bytes, clamped to it; `None`
    /// if unsatisfiable (start at or past the end, an empty body, or a zero-length suffix).
    pub fn resolve(&self, len: u64) -> Option<(u64, u64)> {
        let last = len.checked_sub(1)?;
        match *self {
            ByteRange::FromTo(first, end) => (first <= last).then(|| (first, end.min(last))),
            ByteRange::From(first) => (first <= last).then_some((first, last)),
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((len - n.min(len), last)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        use ByteRange::*;
        let cases: &[(&str, Result<Option<ByteRange>, ()>)] = &[
            ("bytes=0-499", Ok(Some(FromTo(0, 499)))),
            ("bytes=500-999", Ok(Some(FromTo(500, 999)))),
            ("bytes=7-7", Ok(Some(FromTo(7, 7)))),
            ("bytes=9500-", Ok(Some(From(9500)))),
            ("bytes=-500", Ok(Some(Suffix(500)))),
            ("bytes=-0", Ok(Some(Suffix(0)))),
            ("  bytes = 1 - 2  ", Ok(Some(FromTo(1, 2)))),
            ("Bytes=0-", Ok(Some(From(0)))),
            ("bytes=0-1,", Ok(Some(FromTo(0, 1)))),
            ("bytes=, 0-1", Ok(Some(FromTo(0, 1)))),
            (
                "bytes=0-99999999999999999999999",
                Ok(Some(FromTo(0, u64::MAX))),
            ),
            ("bytes=99999999999999999999999-", Ok(Some(From(u64::MAX)))),
            ("bytes=-99999999999999999999999", Ok(Some(Suffix(u64::MAX)))),
            ("bytes=0-1,5-6", Ok(None)),
            ("bytes=0-1, -5", Ok(None)),
            ("items=0-1", Ok(None)),
            ("x-custom=1-2", Ok(None)),
            ("", Err(())),
            ("bytes", Err(())),
            ("0-1", Err(())),
            ("=0-1", Err(())),
            ("by tes=0-1", Err(())),
            ("bytes=", Err(())),
            ("bytes=,", Err(())),
            ("bytes=-", Err(())),
            ("bytes=1", Err(())),
            ("bytes=a-b", Err(())),
            ("bytes=+1-2", Err(())),
            ("bytes=1-+2", Err(())),
            ("bytes=-1-2", Err(())),
            ("bytes=1--2", Err(())),
            ("bytes=5-4", Err(())),
            ("bytes=0x10-", Err(())),
            ("bytes=1 2-3", Err(())),
            ("bytes=0-1,junk", Err(())),
            ("bytes=١-٢", Err(())),
            ("items=junk", Ok(None)),
        ];
        for (input, want) in cases {
            let got = parse_range(input);
            match want {
                Ok(want) => assert_eq!(got.as_ref().ok(), Some(want), "input {input:?}: {got:?}"),
                Err(()) => assert!(got.is_err(), "input {input:?}: {got:?}"),
            }
        }
        assert_eq!(
            parse_range("bytes=5-4"),
            Err(RangeError::Reversed { first: 5, last: 4 })
        );
        assert_eq!(parse_range("nope"), Err(RangeError::NoUnit));
    }

    #[test]
    fn resolves_ranges() {
        use ByteRange::*;
        type Window = Option<(u64, u64)>;
        let cases: &[(ByteRange, u64, Window)] = &[
            (FromTo(0, 499), 1000, Some((0, 499))),
            (FromTo(0, 499), 100, Some((0, 99))),
            (FromTo(99, 200), 100, Some((99, 99))),
            (FromTo(100, 200), 100, None),
            (FromTo(0, u64::MAX), 10, Some((0, 9))),
            (FromTo(u64::MAX, u64::MAX), u64::MAX, None),
            (FromTo(0, 0), 0, None),
            (From(0), 10, Some((0, 9))),
            (From(9), 10, Some((9, 9))),
            (From(10), 10, None),
            (From(0), 0, None),
            (From(u64::MAX), u64::MAX, None),
            (Suffix(3), 10, Some((7, 9))),
            (Suffix(10), 10, Some((0, 9))),
            (Suffix(11), 10, Some((0, 9))),
            (Suffix(u64::MAX), 10, Some((0, 9))),
            (Suffix(0), 10, None),
            (Suffix(5), 0, None),
            (Suffix(1), u64::MAX, Some((u64::MAX - 1, u64::MAX - 1))),
            (From(0), u64::MAX, Some((0, u64::MAX - 1))),
        ];
        for (range, len, want) in cases {
            assert_eq!(range.resolve(*len), *want, "{range:?} of {len}");
        }
    }

    #[test]
    fn never_panics() {
        let seeds = [
            "bytes=0-499",
            "bytes=-500",
            "bytes=9500-",
            "bytes=0-1,5-6",
            "items=1-2",
        ];
        let lens = [0, 1, 2, 499, 500, 10_000, u64::MAX - 1, u64::MAX];
        for input in crate::registry::fuzz::inputs(29, &seeds, "bytes=-, 0123456789", 6000) {
            if let Ok(Some(range)) = parse_range(&input) {
                for len in lens {
                    if let Some((start, end)) = range.resolve(len) {
                        assert!(start <= end && end < len, "{input:?} {len}");
                    }
                }
            }
        }
    }
}
