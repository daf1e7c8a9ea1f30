use super::*;

#[test]
fn seed_variables_are_accepted_with_a_warning() {
    let c = load_ok(
        &["--debug-nginx"],
        &[
            ("DEBUG_HUB", "true"),
            ("PROXY_REQUEST_BUFFERING", "false"),
            ("ALLOW_OWN_AUTH", "true"),
            ("ALLOW_PUSH_WITH_OWN_AUTH", "false"),
        ],
    );
    let warnings = c.warnings.join("\n");
    for (name, says) in [
        ("DEBUG_HUB", "DEBUG=true"),
        ("--debug-nginx", "no nginx"),
        ("PROXY_REQUEST_BUFFERING", "streamed"),
        ("ALLOW_OWN_AUTH", "own credentials"),
        ("ALLOW_PUSH_WITH_OWN_AUTH", "ALLOW_PUSH=true"),
    ] {
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with(&format!("{name} is ignored: ")) && w.contains(says)),
            "{name}: {warnings}"
        );
    }
    assert_eq!(c.warnings.len(), 5, "{warnings}");
    // In the file too, blamed on its key.
    let file = toml_file("debug_hub = false\n");
    let path = file.path().to_str().unwrap();
    let c = load_ok(&["--config", path], &[]);
    assert_eq!(
        c.warnings,
        [format!(
            "debug_hub (in {path}) is ignored: it put mitmproxy in front of Docker Hub; set DEBUG=true for verbose logs of upstream requests"
        )]
    );
    // Nothing to say when none is given.
    assert!(load_ok(&[], &[("DEBUG", "true")]).warnings.is_empty());
}
