//! `parse_range`: generated `bytes=a-b`, `bytes=a-` and `bytes=-n` headers parse to the numbers
//! they were built from (saturating past `u64`); garbage and overflow never panic; a parsed range
//! resolves inside the body.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use registry_proxy::registry::range::{ByteRange, RangeError, parse_range};

use crate::strategies::{config, mutated, text};

/// A byte position as written, and its value (saturated at `u64::MAX`).
fn number() -> impl Strategy<Value = (String, u64)> {
    prop_oneof![
        4 => any::<u64>().prop_map(|n| n.to_string()),
        2 => (0u64..10_000).prop_map(|n| n.to_string()),
        1 => "0{1,5}[0-9]{1,6}",
        1 => "[1-9][0-9]{19,40}", // past u64
        1 => Just(u64::MAX.to_string()),
    ]
    .prop_map(|s| {
        // An all-digit string only fails to parse by overflowing.
        let n = s.parse::<u64>().unwrap_or(u64::MAX);
        (s, n)
    })
}

/// One range spec as written, its value, and optional whitespace around its parts.
fn spec() -> impl Strategy<Value = (String, Result<ByteRange, RangeError>)> {
    let ows = || select(&["", "", " ", "\t", "  "][..]);
    let shape = prop_oneof![
        (number(), number()).prop_map(|((a, first), (b, last))| {
            let want = if last < first {
                Err(RangeError::Reversed { first, last })
            } else {
                Ok(ByteRange::FromTo(first, last))
            };
            ((a, b), want)
        }),
        // Ordered: the common case.
        (number(), number()).prop_map(|((a, x), (b, y))| {
            let (a, first, b, last) = if x <= y { (a, x, b, y) } else { (b, y, a, x) };
            ((a, b), Ok(ByteRange::FromTo(first, last)))
        }),
        number().prop_map(|(a, first)| ((a, String::new()), Ok(ByteRange::From(first)))),
        number().prop_map(|(b, n)| ((String::new(), b), Ok(ByteRange::Suffix(n)))),
    ];
    (shape, ows(), ows(), ows(), ows())
        .prop_map(|(((a, b), want), w1, w2, w3, w4)| (format!("{w1}{a}{w2}-{w3}{b}{w4}"), want))
}

/// `bytes` in any case, with optional whitespace around it.
fn unit() -> impl Strategy<Value = String> {
    (
        "[bB][yY][tT][eE][sS]",
        select(&["", " ", "\t"][..]),
        select(&["", " "][..]),
    )
        .prop_map(|(u, a, b)| format!("{a}{u}{b}"))
}

proptest! {
    #![proptest_config(config())]

    /// One range parses to the numbers it was built from, whatever the empty list elements
    /// around it.
    #[test]
    fn single_ranges_parse(
        unit in unit(),
        (spec, want) in spec(),
        lead in select(&["", "", ",", ", ", " , ,"][..]),
        trail in select(&["", "", ",", " ,", ", ,"][..]),
    ) {
        let header = format!("{unit}={lead}{spec}{trail}");
        prop_assert_eq!(parse_range(&header), want.map(Some), "header {:?}", header);
    }

    /// Several valid ranges are well-formed but not served as ranges (`Ok(None)`): the whole
    /// body goes out.
    #[test]
    fn several_ranges_are_ignored(unit in unit(), specs in vec(spec(), 2..5)) {
        let all_valid = specs.iter().all(|(_, want)| want.is_ok());
        let header = format!(
            "{unit}={}",
            specs.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(",")
        );
        let got = parse_range(&header);
        if all_valid {
            prop_assert_eq!(got, Ok(None), "header {:?}", header);
        } else {
            // The first malformed or reversed range is the error.
            let first_err = specs.iter().find_map(|(_, want)| want.clone().err());
            prop_assert_eq!(got.err(), first_err, "header {:?}", header);
        }
    }

    /// Another unit is well-formed and ignored, whatever its ranges look like.
    #[test]
    fn other_units_are_ignored(
        unit in "[A-Za-z0-9!#$&'*+.^_`|~-]{1,12}",
        set in text("0123456789-, "),
    ) {
        prop_assume!(!unit.eq_ignore_ascii_case("bytes"));
        prop_assert_eq!(parse_range(&format!("{unit}={set}")), Ok(None));
    }

    /// Garbage, overflow and near-valid headers never panic; what parses satisfies
    /// `first <= last` and resolves inside any body.
    #[test]
    fn garbage_never_panics(
        value in prop_oneof![
            text("bytes=-, 0123456789"),
            mutated((unit(), spec()).prop_map(|(u, (s, _))| format!("{u}={s}"))),
        ],
        len in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()],
    ) {
        match parse_range(&value) {
            Ok(Some(range)) => {
                if let ByteRange::FromTo(first, last) = range {
                    prop_assert!(first <= last, "{value:?}: {range:?}");
                }
                if let Some((start, end)) = range.resolve(len) {
                    prop_assert!(start <= end && end < len, "{value:?} {range:?} of {len}");
                }
            }
            Ok(None) => {}
            Err(RangeError::Reversed { first, last }) => prop_assert!(last < first),
            Err(_) => {}
        }
    }
}
