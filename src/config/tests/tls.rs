use super::*;

#[test]
fn tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, "pem").unwrap();
    let cert = cert.to_str().unwrap();
    let dir_path = dir.path().to_str().unwrap();

    let c = load_ok(&["--tls-listen", "127.0.0.1:5443"], &[]);
    let tls = c.tls_listen.unwrap();
    assert_eq!(tls.names, ["localhost", "127.0.0.1"]);
    assert_eq!(tls.cert_files, None);

    let cases: &[(Argv, Pairs, &str)] = &[
        (
            &["--tls-listen", ":5443", "--tls-cert-file", cert],
            &[],
            "--tls-cert-file is set but TLS_KEY_FILE is not",
        ),
        (
            &["--tls-listen", ":5443"],
            &[("TLS_KEY_FILE", cert)],
            "TLS_KEY_FILE is set but TLS_CERT_FILE is not",
        ),
        (
            &[],
            &[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", cert)],
            "TLS_CERT_FILE is set but TLS_LISTEN is not",
        ),
        (
            &["--tls-listen", ":5443"],
            &[
                ("TLS_CERT_FILE", cert),
                ("TLS_KEY_FILE", "/nonexistent/key"),
            ],
            "TLS_KEY_FILE: cannot read /nonexistent/key",
        ),
        (
            &["--tls-listen", ":5443"],
            &[("TLS_CERT_FILE", dir_path), ("TLS_KEY_FILE", cert)],
            "TLS_CERT_FILE: cannot read",
        ),
        (
            &["--tls-listen", ":5443", "--tls-names="],
            &[],
            "--tls-names: empty value",
        ),
    ];
    for (args, pairs, want) in cases {
        let e = load_err(args, pairs);
        assert!(e.starts_with(want), "{args:?} {pairs:?}: {e}");
    }
    // An empty flag clears a variable.
    let c = load_ok(&["--tls-listen="], &[("TLS_LISTEN", ":5443")]);
    assert_eq!(c.tls_listen, None);
}

#[test]
fn upstream_ca_file_must_be_readable() {
    let file = toml_file("-----BEGIN CERTIFICATE-----\n");
    let path = file.path().to_str().unwrap();
    assert_eq!(
        load_ok(&[], &[("UPSTREAM_CA_FILE", path)]).upstream_ca_file,
        Some(PathBuf::from(path))
    );
    let e = load_err(&["--upstream-ca-file", "/nonexistent/ca.pem"], &[]);
    assert!(
        e.starts_with("--upstream-ca-file: cannot read /nonexistent/ca.pem"),
        "{e}"
    );
    assert_eq!(
        load_ok(&[], &[("UPSTREAM_CA_FILE", "")]).upstream_ca_file,
        None
    );
}
