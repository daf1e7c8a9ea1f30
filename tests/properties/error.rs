//! The registry JSON error body: what `error_body` builds `parse_error_body` reads back, for any
//! message and code; upstream bodies of any bytes never panic.

use proptest::prelude::*;
use proptest::sample::select;
use registry_proxy::registry::error::{ErrorCode, error_body, parse_error_body};
use serde_json::json;

use crate::strategies::{bytes, config, mutated, text};

fn code() -> impl Strategy<Value = ErrorCode> {
    select(&ErrorCode::ALL[..])
}

proptest! {
    #![proptest_config(config())]

    /// Our bodies read back as the code and message they were built from, and are exactly the
    /// documented shape.
    #[test]
    fn bodies_round_trip(code in code(), message in text("{}[]\":,\\errorscodemessage")) {
        let body = error_body(code, &message);
        prop_assert_eq!(
            parse_error_body(&body),
            Some((code.as_str().to_owned(), message.clone()))
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(value, json!({"errors": [{"code": code.as_str(), "message": message}]}));
        prop_assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        prop_assert_eq!(code.to_string(), code.as_str());
    }

    /// Upstream bodies built as the spec describes (extra fields, more entries) give the first
    /// entry's code and message.
    #[test]
    fn upstream_bodies_parse(
        code in "[A-Z_]{1,24}",
        message in proptest::option::of(any::<String>()),
        detail in proptest::option::of(any::<String>()),
        more in 0usize..3,
    ) {
        let mut entry = json!({"code": code});
        if let Some(m) = &message {
            entry["message"] = json!(m);
        }
        if let Some(d) = &detail {
            entry["detail"] = json!([{"Type": "repository", "Name": d}]);
        }
        let mut errors = vec![entry];
        errors.extend((0..more).map(|i| json!({"code": format!("OTHER_{i}"), "message": "x"})));
        let body = serde_json::to_vec(&json!({"errors": errors, "extra": 1})).unwrap();
        prop_assert_eq!(parse_error_body(&body), Some((code, message.unwrap_or_default())));
    }

    /// Arbitrary bytes, text and near-valid bodies never panic; a parsed code is the first
    /// entry's; unknown wire codes are not taken for ours.
    #[test]
    fn garbage_never_panics(
        body in prop_oneof![
            bytes(),
            text("{}[]\":,errorscodemessage").prop_map(String::into_bytes),
            mutated((code(), text("ab\"\\")).prop_map(|(c, m)| {
                String::from_utf8_lossy(&error_body(c, &m)).into_owned()
            }))
            .prop_map(String::into_bytes),
        ],
    ) {
        if let Some((code, _)) = parse_error_body(&body)
            && let Some(known) = ErrorCode::parse(&code)
        {
            prop_assert_eq!(known.as_str(), code.as_str());
        }
        if let Ok(s) = std::str::from_utf8(&body) {
            prop_assert_eq!(
                ErrorCode::parse(s).map(|c| c.as_str()),
                ErrorCode::ALL.iter().map(ErrorCode::as_str).find(|c| *c == s)
            );
        }
    }
}
