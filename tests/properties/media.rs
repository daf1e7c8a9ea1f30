//! `accept_key` and `is_manifest_media_type`: a stable, order-free cache key from any `Accept`
//! headers, and manifest types recognised whatever their case and parameters.

use std::collections::BTreeSet;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use registry_proxy::registry::media::{
    DOCKER_CONFIG, MANIFEST_MEDIA_TYPES, OCI_CONFIG, OCI_EMPTY, accept_key, is_manifest_media_type,
};

use crate::strategies::{config, mutated, text};

/// A media range as clients write them, with its `q` and whether it is `q=0` ("not
/// acceptable").
fn media_range() -> impl Strategy<Value = (String, String, bool)> {
    let media = prop_oneof![
        3 => select(&MANIFEST_MEDIA_TYPES[..]).prop_map(str::to_owned),
        1 => Just("*/*".to_owned()),
        2 => "[a-zA-Z0-9.+-]{1,12}/[a-zA-Z0-9.+-]{1,20}",
    ];
    let q = prop_oneof![
        2 => Just((String::new(), false)),
        1 => select(&[";q=0", "; q=0.0", ";Q = 0.000", ";q=0."][..]).prop_map(|q| (q.to_owned(), true)),
        2 => select(&[";q=1", ";q=0.5", "; q=0.01", ";q=1.0", ";charset=utf-8", ";q=0.001"][..])
            .prop_map(|q| (q.to_owned(), false)),
    ];
    (media, q, select(&["", " ", "\t"][..]))
        .prop_map(|(m, (q, zero), pad)| (format!("{pad}{m}{q}{pad}"), m, zero))
}

proptest! {
    #![proptest_config(config())]

    /// The key holds each acceptable type once, lower-cased and sorted, whatever the order and
    /// the split into headers; `q=0` entries are not keyed.
    #[test]
    fn keys_hold_the_acceptable_types(ranges in vec(media_range(), 0..8), split in 0usize..8) {
        let items: Vec<&str> = ranges.iter().map(|(s, _, _)| s.as_str()).collect();
        let split = split.min(items.len());
        let headers = [items[..split].join(","), items[split..].join(",")];
        let key = accept_key(headers.iter().map(String::as_str));

        let want: BTreeSet<String> = ranges
            .iter()
            .filter(|(_, _, zero)| !zero)
            .map(|(_, m, _)| m.to_ascii_lowercase())
            .collect();
        let want = if want.is_empty() {
            "*/*".to_owned()
        } else {
            want.into_iter().collect::<Vec<_>>().join(",")
        };
        prop_assert_eq!(&key, &want);

        let mut reversed = items.clone();
        reversed.reverse();
        prop_assert_eq!(accept_key([reversed.join(" , ").as_str()]), key);
    }

    /// Any headers give a non-empty key that is its own key.
    #[test]
    fn keys_are_stable(values in vec(text("a/;q=0.5,+* "), 0..4)) {
        let key = accept_key(values.iter().map(String::as_str));
        prop_assert!(!key.is_empty());
        prop_assert_eq!(accept_key([key.as_str()]), key.clone());
        let entries: Vec<&str> = key.split(',').collect();
        prop_assert!(entries.windows(2).all(|w| w[0] < w[1]), "{key:?}");
        for e in entries {
            prop_assert!(!e.is_empty() && !e.contains(';') && e.trim() == e, "{key:?}");
            prop_assert_eq!(e.to_ascii_lowercase(), e);
        }
    }

    /// Manifest types are recognised in any case and with parameters; config types and
    /// arbitrary strings never panic.
    #[test]
    fn manifest_types_are_recognised(
        media in select(&MANIFEST_MEDIA_TYPES[..]),
        upper in any::<bool>(),
        params in select(&["", "; charset=utf-8", ";q=0.5", " ; x=y"][..]),
        other in prop_oneof![text("application/vnd.json+;="), mutated(select(&MANIFEST_MEDIA_TYPES[..]).prop_map(str::to_owned))],
    ) {
        let media = if upper { media.to_ascii_uppercase() } else { media.to_owned() };
        prop_assert!(is_manifest_media_type(&format!(" {media}{params}")), "{media}{params}");
        for config_type in [OCI_CONFIG, OCI_EMPTY, DOCKER_CONFIG] {
            prop_assert!(
                !is_manifest_media_type(&format!("{config_type}{params}")),
                "{config_type}{params}"
            );
        }
        let essence = other.split(';').next().unwrap_or_default().trim();
        prop_assert_eq!(
            is_manifest_media_type(&other),
            MANIFEST_MEDIA_TYPES.iter().any(|t| t.eq_ignore_ascii_case(essence))
        );
    }
}
