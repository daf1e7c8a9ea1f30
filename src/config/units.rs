//! nginx-style sizes (`32g`, `512m`, `1024`) and durations (`60d`, `1h30m`, `500ms`, `90`), the
//! formats the seed's variables (`CACHE_MAX_SIZE`, `MANIFEST_CACHE_*_TIME`, `*_TIMEOUT`) were written in.

use std::time::Duration;

/// Why a size or a duration was rejected; every message shows the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty value")]
    Empty,
    #[error("{input:?} is not a size (bytes, or a number followed by k, m, g or t)")]
    Size { input: String },
    #[error(
        "{input:?} is not a duration ({reason}; e.g. 500ms, 90s, 10m, 1h30m, 60d; units ms s m h d w M y)"
    )]
    Duration { input: String, reason: &'static str },
    #[error("{input:?} is too large")]
    Overflow { input: String },
}

/// Parses an nginx size: bare bytes, or a number with a `k`, `m`, `g` or `t` suffix (either case,
/// binary multiples: `1k` = 1024).
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::Empty);
    }
    let (digits, shift) = match s.as_bytes()[s.len() - 1].to_ascii_lowercase() {
        b'k' => (&s[..s.len() - 1], 10),
        b'm' => (&s[..s.len() - 1], 20),
        b'g' => (&s[..s.len() - 1], 30),
        b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::Size {
            input: input.to_owned(),
        });
    }
    let overflow = || UnitError::Overflow {
        input: input.to_owned(),
    };
    let n: u64 = digits.parse().map_err(|_| overflow())?;
    n.checked_mul(1u64 << shift).ok_or_else(overflow)
}

/// Parses an nginx time: numbers with units `ms`, `s`, `m`, `h`, `d`, `w`, `M` (30 days), `y`
/// (365 days), largest unit first, each at most once (`1h30m`, `1d 12h`); a bare number is seconds,
/// also as the last part (`1m30` = 90 s).
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitError::Empty);
    }
    let bad = |reason| UnitError::Duration {
        input: input.to_owned(),
        reason,
    };
    let overflow = || UnitError::Overflow {
        input: input.to_owned(),
    };
    let bytes = s.as_bytes();
    let mut total_ms: u64 = 0;
    // Rank of the last unit seen (larger = bigger unit); units must strictly decrease.
    let mut last_rank = u8::MAX;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad("expected a number"));
        }
        let value: u64 = s[start..i].parse().map_err(|_| overflow())?;
        let (rank, unit_ms, len) = match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'm'), Some(b's')) => (1, 1, 2),
            (Some(b's'), _) => (2, 1_000, 1),
            (Some(b'm'), _) => (3, 60_000, 1),
            (Some(b'h'), _) => (4, 3_600_000, 1),
            (Some(b'd'), _) => (5, 86_400_000, 1),
            (Some(b'w'), _) => (6, 7 * 86_400_000, 1),
            (Some(b'M'), _) => (7, 30 * 86_400_000, 1),
            (Some(b'y'), _) => (8, 365 * 86_400_000, 1),
            // A bare number: seconds, only allowed last and after a unit larger than seconds.
            (None, _) if last_rank > 2 => (2, 1_000, 0),
            (None, _) => return Err(bad("a bare number after seconds")),
            (Some(_), _) => return Err(bad("unknown unit")),
        };
        if rank >= last_rank {
            return Err(bad("units must go from largest to smallest, each once"));
        }
        last_rank = rank;
        i += len;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let part = value.checked_mul(unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("1k", Some(K)),
            ("1K", Some(K)),
            ("10m", Some(10 * K * K)),
            ("512M", Some(512 * K * K)),
            ("32g", Some(32 * K * K * K)),
            ("32G", Some(32 * K * K * K)),
            ("2t", Some(2 * K * K * K * K)),
            (" 1g ", Some(K * K * K)),
            ("", None),
            ("g", None),
            ("1.5g", None),
            ("-1", None),
            ("1gb", None),
            ("1 g", None),
            ("1x", None),
            ("32 g", None),
            ("99999999999999999999", None),
            ("99999999999t", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), *want, "input {input:?}");
        }
    }

    #[test]
    fn durations() {
        let s = |n: u64| Some(Duration::from_secs(n));
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", s(0)),
            ("60", s(60)),
            ("60s", s(60)),
            ("500ms", Some(Duration::from_millis(500))),
            ("10m", s(600)),
            ("1h", s(3600)),
            ("1h30m", s(5400)),
            ("1h 30m", s(5400)),
            ("1m30", s(90)),
            ("1s500ms", Some(Duration::from_millis(1500))),
            ("60d", s(60 * 86_400)),
            ("2w", s(14 * 86_400)),
            ("1M", s(30 * 86_400)),
            ("1y", s(365 * 86_400)),
            (
                "1y1M1w1d1h1m1s1ms",
                Some(Duration::from_millis(
                    ((((((365 + 30 + 7 + 1) * 24 + 1) * 60 + 1) * 60) + 1) * 1000) + 1,
                )),
            ),
            (" 300s ", s(300)),
            ("", None),
            ("s", None),
            ("1x", None),
            ("1H", None),
            ("1.5h", None),
            ("30m1h", None),
            ("1m1m", None),
            ("1s5", None),
            ("500ms1", None),
            ("-1s", None),
            ("1 h", None),
            ("99999999999999999999", None),
            ("999999999999y", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "input {input:?}");
        }
    }

    #[test]
    fn errors_show_the_input() {
        let e = parse_size("12q").unwrap_err().to_string();
        assert!(e.contains("\"12q\""), "{e}");
        let e = parse_duration("5 parsecs").unwrap_err().to_string();
        assert!(e.contains("\"5 parsecs\""), "{e}");
    }
}
