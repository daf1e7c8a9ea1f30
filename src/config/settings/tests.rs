use std::collections::HashSet;

use super::*;

/// The README's configuration tables are exactly what [`markdown`] generates.
#[test]
fn readme_table_is_generated() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let begin = "<!-- settings:begin (generated: registry-proxy settings --markdown) -->\n";
    let end = "<!-- settings:end -->";
    let start = readme
        .find(begin)
        .map(|i| i + begin.len())
        .expect("README.md has the settings:begin marker");
    let stop = readme[start..]
        .find(end)
        .map(|i| start + i)
        .expect("README.md has the settings:end marker");
    let generated = markdown();
    assert!(
        readme[start..stop] == generated,
        "README.md's configuration table is out of date; replace it with the output of \
         `registry-proxy settings --markdown`:\n{generated}"
    );
}

#[test]
fn names_and_flags_are_unique_and_well_formed() {
    let mut names: HashSet<String> = HashSet::new();
    for s in ALL {
        assert!(
            !s.name.is_empty()
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "{}",
            s.name
        );
        assert!(names.insert(s.name.to_owned()), "{} declared twice", s.name);
        if let Some(file) = s.file_variant() {
            assert!(names.insert(file), "{}", s.name);
        }
        assert!(!s.help.is_empty(), "{} has no help", s.name);
        assert!(!s.value_name.is_empty(), "{} has no value name", s.name);
        assert!(
            !s.help.ends_with('.') && !s.details.ends_with('.'),
            "{}: the README adds the full stops",
            s.name
        );
    }
    assert_eq!(flag_of("CACHE_MAX_SIZE"), "--cache-max-size");
    assert_eq!(CACHE_MAX_SIZE.file_key(), "cache_max_size");
}

#[test]
fn secrets_and_file_variants() {
    assert!(is_known("AUTH_REGISTRIES_FILE") && is_known("CA_KEY_PASSPHRASE_FILE"));
    assert!(is_secret("AUTH_REGISTRIES") && is_secret("CA_KEY_PASSPHRASE"));
    // `NAME_FILE` of a setting that is no secret is not a setting.
    assert!(!is_known("CACHE_DIR_FILE"));
    // TLS_KEY_FILE and TLS_CERT_FILE are paths, not secrets' file variants.
    assert!(is_known("TLS_KEY_FILE") && !is_secret("TLS_KEY_FILE"));
}

#[test]
fn seed_switches_are_hidden_and_explained() {
    for name in [
        "DEBUG_HUB",
        "DEBUG_NGINX",
        "PROXY_REQUEST_BUFFERING",
        "ALLOW_OWN_AUTH",
        "ALLOW_PUSH_WITH_OWN_AUTH",
    ] {
        let s = find(name).unwrap();
        assert!(!s.documented() && s.seed_note.is_some_and(|n| !n.is_empty()));
    }
}
