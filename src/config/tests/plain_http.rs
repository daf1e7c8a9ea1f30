use super::*;

#[test]
fn plain_http_registries_only_when_spelled_so() {
    let c = load_ok(
        &[],
        &[(
            "REGISTRIES",
            "quay.io http://lab.test:5000 HTTP://old.test https://secure.test:8443 https://ghcr.io/",
        )],
    );
    let all: Vec<String> = c.registries.iter().map(ToString::to_string).collect();
    assert_eq!(
        all,
        [
            "quay.io",
            "lab.test:5000",
            "old.test",
            "secure.test:8443",
            "ghcr.io"
        ]
    );
    let plain: Vec<String> = c.plain_http.iter().map(ToString::to_string).collect();
    assert_eq!(plain, ["lab.test:5000", "old.test"]);
    assert!(c.is_plain_http(&host("lab.test:5000")));
    assert!(
        !c.is_plain_http(&host("lab.test")),
        "another port is another registry"
    );
    assert!(!c.is_plain_http(&host("quay.io")) && !c.is_plain_http(&host("secure.test:8443")));
    // The file's array takes the same spellings.
    let file = toml_file("registries = [\"http://lab.test:5000\", \"quay.io\"]\n");
    let c = load_ok(&["--config", file.path().to_str().unwrap()], &[]);
    assert!(c.is_plain_http(&host("lab.test:5000")) && !c.is_plain_http(&host("quay.io")));

    for (value, detail) in [
        ("http://docker.io", "Docker Hub is only reached over https"),
        ("http://lab.test:443", "port 443 is for https"),
        (
            "lab.test:5000 http://lab.test:5000",
            "both with http:// and without",
        ),
        ("http://lab.test:5000/v2", "\"http://lab.test:5000/v2\""),
        ("ftp://lab.test", "\"ftp://lab.test\""),
        ("http://", "\"http://\""),
    ] {
        let e = load_err(&[], &[("REGISTRIES", value)]);
        assert!(
            e.starts_with("REGISTRIES: ") && e.contains(detail),
            "{value}: {e}"
        );
    }
}
