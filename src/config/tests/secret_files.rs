use std::path::Path;

use super::*;
use crate::config::settings::ALL;

fn secret_file(dir: &Path, name: &str, contents: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

fn creds(c: &Config) -> Vec<(&str, &str, &str)> {
    c.credentials
        .iter()
        .map(|c| (c.host.as_str(), c.username.as_str(), c.password.expose()))
        .collect()
}

#[test]
fn auth_registries_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let one = secret_file(dir.path(), "one", b"a.test:u1:p1\n");
    let many = secret_file(
        dir.path(),
        "many",
        b"a.test:u1:p1 b.test:u2:p2\nc.test:u3:p:3\r\n\n",
    );
    let custom = secret_file(
        dir.path(),
        "custom",
        b"a.test|u1|p 1,b.test|u2|p2\nc.test|u3|p3\n",
    );
    let three = [
        ("a.test", "u1", "p1"),
        ("b.test", "u2", "p2"),
        ("c.test", "u3", "p:3"),
    ];
    let cases: &[(Argv, Pairs, Triples)] = &[
        // A trailing line break is not part of the password.
        (
            &[],
            &[("AUTH_REGISTRIES_FILE", &one)],
            &[("a.test", "u1", "p1")],
        ),
        // Lines separate entries as the delimiter does; CR LF line ends and blank lines are fine.
        (&[], &[("AUTH_REGISTRIES_FILE", &many)], &three),
        (&["--auth-registries-file", &many], &[], &three),
        (
            &[],
            &[
                ("AUTH_REGISTRIES_FILE", &custom),
                ("AUTH_REGISTRIES_DELIMITER", ","),
                ("AUTH_REGISTRY_DELIMITER", "|"),
            ],
            &[
                ("a.test", "u1", "p 1"),
                ("b.test", "u2", "p2"),
                ("c.test", "u3", "p3"),
            ],
        ),
        // Layers: a flag (direct or file) beats the environment (direct or file).
        (
            &["--auth-registries", "f.test:uf:pf"],
            &[("AUTH_REGISTRIES_FILE", &many)],
            &[("f.test", "uf", "pf")],
        ),
        (
            &["--auth-registries-file", &one],
            &[("AUTH_REGISTRIES", "e.test:ue:pe")],
            &[("a.test", "u1", "p1")],
        ),
        // An empty NAME_FILE is not given.
        (
            &[],
            &[
                ("AUTH_REGISTRIES_FILE", ""),
                ("AUTH_REGISTRIES", "e.test:ue:pe"),
            ],
            &[("e.test", "ue", "pe")],
        ),
    ];
    for (args, pairs, want) in cases {
        assert_eq!(creds(&load_ok(args, pairs)), *want, "{args:?} {pairs:?}");
    }

    // In the TOML file, and the environment's file beats the TOML file's entries.
    let toml = toml_file(&format!("auth_registries_file = {:?}\n", many));
    let config_path = toml.path().to_str().unwrap();
    assert_eq!(creds(&load_ok(&["--config", config_path], &[])), three);
    let toml = toml_file("auth_registries = [\"t.test:ut:pt\"]\n");
    let config_path = toml.path().to_str().unwrap();
    assert_eq!(
        creds(&load_ok(
            &["--config", config_path],
            &[("AUTH_REGISTRIES_FILE", &one)]
        )),
        [("a.test", "u1", "p1")]
    );
}

#[test]
fn a_secret_and_its_file_in_one_layer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "auth", b"a.test:u:p\n");
    let e = load_err(
        &[],
        &[
            ("AUTH_REGISTRIES", "b.test:u:p"),
            ("AUTH_REGISTRIES_FILE", &file),
        ],
    );
    assert!(
        e.contains("AUTH_REGISTRIES and AUTH_REGISTRIES_FILE are both set"),
        "{e}"
    );
    let e = load_err(
        &[
            "--auth-registries",
            "b.test:u:p",
            "--auth-registries-file",
            &file,
        ],
        &[],
    );
    assert!(
        e.contains("--auth-registries and --auth-registries-file are both set"),
        "{e}"
    );
    let toml = toml_file(&format!(
        "auth_registries = \"b.test:u:p\"\nauth_registries_file = {file:?}\n"
    ));
    let e = load_err(&["--config", toml.path().to_str().unwrap()], &[]);
    assert!(
        e.starts_with("auth_registries (in ") && e.contains("and auth_registries_file (in "),
        "{e}"
    );
    let toml = toml_file("auth_registries_file = [\"/a\"]\n");
    let e = load_err(&["--config", toml.path().to_str().unwrap()], &[]);
    assert!(e.contains("expected a string"), "{e}");
}

#[test]
fn secret_files_never_leak_into_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Unreadable: the error names the setting and the path.
    let missing = dir.path().join("missing").display().to_string();
    let e = load_err(&[], &[("AUTH_REGISTRIES_FILE", &missing)]);
    assert!(
        e.starts_with(&format!("AUTH_REGISTRIES_FILE: cannot read {missing}")),
        "{e}"
    );
    let e = load_err(
        &["--auth-registries-file", dir.path().to_str().unwrap()],
        &[],
    );
    assert!(e.starts_with("--auth-registries-file: cannot read"), "{e}");
    // Not UTF-8, or too large: refused without quoting a byte of it.
    let mut binary = format!("a.test:user:{SECRET}").into_bytes();
    binary.push(0xff);
    let bad_utf8 = secret_file(dir.path(), "binary", &binary);
    let mut huge = format!("a.test:user:{SECRET} ").into_bytes();
    huge.resize(2 << 20, b'x');
    let huge = secret_file(dir.path(), "huge", &huge);
    for path in [&bad_utf8, &huge] {
        let e = load(&[], &[("AUTH_REGISTRIES_FILE", path)]).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("AUTH_REGISTRIES_FILE") && shown.contains(path.as_str()));
    }
    // A malformed entry read from a file: the error names the setting, the file and the entry,
    // never the password.
    let entries = [
        format!("a.test:user:{SECRET}\nb.test"),
        format!("a.test:user:{SECRET}\nb.test:user\n"),
        format!("a.test:user:{SECRET} b.test:user:"),
        format!("a.test;user;{SECRET}\n"),
        format!("{SECRET}\n"),
        format!("bad/host:user:{SECRET}\n"),
        format!("a.test::{SECRET}\n"),
    ];
    for (i, entry) in entries.iter().enumerate() {
        let path = secret_file(dir.path(), &format!("bad{i}"), entry.as_bytes());
        for (args, pairs) in [
            (vec!["--auth-registries-file", path.as_str()], vec![]),
            (vec![], vec![("AUTH_REGISTRIES_FILE", path.as_str())]),
        ] {
            let e = load(&args, &pairs).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(
                shown.contains("auth-registries-file") || shown.contains("AUTH_REGISTRIES_FILE"),
                "{shown}"
            );
            assert!(shown.contains(&path) && shown.contains("entry"), "{shown}");
        }
    }
    let path = secret_file(
        dir.path(),
        "second",
        format!("a.test:user:{SECRET}\nb.test:user\n").as_bytes(),
    );
    let e = load_err(&[], &[("AUTH_REGISTRIES_FILE", &path)]);
    assert_eq!(
        e,
        format!(
            "AUTH_REGISTRIES_FILE ({path}): entry 2 (host b.test) is malformed: missing password (expected host:user:password)"
        )
    );
}

#[test]
fn secret_file_names_are_known_settings() {
    for name in ALL.iter().filter(|s| s.secret).map(|s| s.name) {
        let file_name = format!("{name}_FILE");
        let flag = format!("--{}=x", file_name.to_ascii_lowercase().replace('_', "-"));
        let cli = Cli::try_parse_from(["registry-proxy", flag.as_str()])
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
        assert_eq!(cli.serve.get(&file_name), Some("x"), "{flag}");
        // Passes the typo guard (it names a missing file, which is the next error).
        let e = load_err(&[], &[(file_name.as_str(), "/nonexistent/secret")]);
        assert!(e.starts_with(&format!("{file_name}: cannot read")), "{e}");
    }
    for typo in [
        "AUTH_REGISTRIES_FIEL",
        "AUTH_REGISTRIES_FILES",
        "AUTH_REGISTRY_FILE",
    ] {
        let e = load_err(&[], &[(typo, "/x")]);
        assert!(e.contains("unknown environment variable"), "{e}");
    }
    // A file key that is not a secret's is unknown.
    let toml = toml_file("cache_dir_file = \"/x\"\n");
    let e = load_err(&["--config", toml.path().to_str().unwrap()], &[]);
    assert!(e.contains("unknown key"), "{e}");
}

#[test]
fn secret_flags_are_redacted() {
    let cli = Cli::try_parse_from([
        "registry-proxy",
        "--auth-registries",
        &format!("a.test:u:{SECRET}"),
    ])
    .unwrap();
    assert!(!format!("{cli:?}").contains(SECRET));
}
