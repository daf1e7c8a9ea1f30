//! Keys made by the openssl command line, as the seed makes them (`openssl genrsa -des3
//! -passout pass:foobar`) and in the other forms an operator may have.

use std::path::Path;
use std::process::Command;

use super::*;

#[path = "../../../tests/support/seed_ca.rs"]
mod seed_ca;
use seed_ca::{openssl, seed_ca, seed_genrsa};

/// A temporary directory with `plain.key`, an unencrypted 2048-bit RSA key in PKCS#8; `None` (after
/// printing SKIPPED) when openssl is missing.
fn with_key() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    if openssl(dir.path(), &["genrsa", "-out", "plain.key", "2048"]).is_none() {
        eprintln!("SKIPPED: openssl is not installed");
        return None;
    }
    Some(dir)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// The unencrypted key's PKCS#8 DER, as openssl writes it.
fn plain_der(dir: &Path) -> Vec<u8> {
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "plain.key",
            "-outform",
            "DER",
            "-out",
            "plain.der",
        ],
    )
    .unwrap();
    std::fs::read(dir.join("plain.der")).unwrap()
}

fn secret(s: &str) -> Secret {
    Secret::new(s)
}

#[test]
fn the_seeds_command_opens_with_the_seeds_passphrase() {
    let Some(dir) = with_key() else { return };
    // The seed's create_ca_cert.sh, as is (OpenSSL 3 writes encrypted PKCS#8 with DES-EDE3-CBC).
    seed_genrsa(dir.path(), "ca.key", "2048").unwrap();
    let pem = read(dir.path(), "ca.key");
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    let der = pkcs8_der(&pem, None).unwrap();
    assert!(rcgen::KeyPair::try_from(der.as_slice()).is_ok());
    // The same key under the operator's passphrase setting, given as the seed's.
    assert_eq!(pkcs8_der(&pem, Some(&secret("foobar"))).unwrap(), der);
}

#[test]
fn every_encrypted_form_gives_the_same_key() {
    let Some(dir) = with_key() else { return };
    let expected = plain_der(dir.path());
    let forms: &[(&str, &[&str], &str)] = &[
        // OpenSSL 1.x's `genrsa -des3`: traditional PEM, DES-EDE3-CBC.
        (
            "trad-des3.key",
            &[
                "rsa",
                "-in",
                "plain.key",
                "-des3",
                "-traditional",
                "-passout",
                "pass:foobar",
            ],
            "DEK-Info: DES-EDE3-CBC,",
        ),
        (
            "trad-aes256.key",
            &[
                "rsa",
                "-in",
                "plain.key",
                "-aes256",
                "-traditional",
                "-passout",
                "pass:foobar",
            ],
            "DEK-Info: AES-256-CBC,",
        ),
        (
            "trad-aes128.key",
            &[
                "rsa",
                "-in",
                "plain.key",
                "-aes128",
                "-traditional",
                "-passout",
                "pass:foobar",
            ],
            "DEK-Info: AES-128-CBC,",
        ),
        (
            "pkcs8-aes256.key",
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-in",
                "plain.key",
                "-passout",
                "pass:foobar",
            ],
            "BEGIN ENCRYPTED PRIVATE KEY",
        ),
        (
            "pkcs8-aes128-sha1.key",
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-128-cbc",
                "-v2prf",
                "hmacWithSHA1",
                "-in",
                "plain.key",
                "-passout",
                "pass:foobar",
            ],
            "BEGIN ENCRYPTED PRIVATE KEY",
        ),
        (
            "pkcs8-aes192-sha512.key",
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-192-cbc",
                "-v2prf",
                "hmacWithSHA512",
                "-in",
                "plain.key",
                "-passout",
                "pass:foobar",
            ],
            "BEGIN ENCRYPTED PRIVATE KEY",
        ),
        (
            "pkcs8-des3.key",
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "des3",
                "-in",
                "plain.key",
                "-passout",
                "pass:foobar",
            ],
            "BEGIN ENCRYPTED PRIVATE KEY",
        ),
    ];
    for (name, args, marker) in forms {
        let mut args = args.to_vec();
        args.extend(["-out", name]);
        openssl(dir.path(), &args).unwrap();
        let pem = read(dir.path(), name);
        assert!(pem.contains(marker), "{name}: {pem}");
        assert_eq!(pkcs8_der(&pem, None).as_ref(), Ok(&expected), "{name}");
    }
}

#[test]
fn a_passphrase_of_the_operators_own() {
    let Some(dir) = with_key() else { return };
    let expected = plain_der(dir.path());
    let pass = "correct horse: battery staple";
    for (name, cipher) in [
        ("custom-pkcs8.key", None),
        ("custom-trad.key", Some("-aes256")),
    ] {
        let passout = format!("pass:{pass}");
        let mut args = match cipher {
            None => vec!["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "plain.key"],
            Some(cipher) => vec!["rsa", "-in", "plain.key", cipher, "-traditional"],
        };
        args.extend(["-passout", &passout, "-out", name]);
        openssl(dir.path(), &args).unwrap();
        let pem = read(dir.path(), name);
        assert_eq!(pkcs8_der(&pem, Some(&secret(pass))).as_ref(), Ok(&expected));
        // Not the seed's passphrase: without the setting it does not open, and says so.
        assert_eq!(
            pkcs8_der(&pem, None).unwrap_err().to_string(),
            "is encrypted and the passphrase does not open it (set CA_KEY_PASSPHRASE)"
        );
    }
}

#[test]
fn a_wrong_passphrase_says_so() {
    let Some(dir) = with_key() else { return };
    for (name, args) in [
        (
            "seed.key",
            vec![
                "genrsa",
                "-des3",
                "-passout",
                "pass:foobar",
                "-out",
                "seed.key",
                "2048",
            ],
        ),
        (
            "trad.key",
            vec![
                "rsa",
                "-in",
                "plain.key",
                "-des3",
                "-traditional",
                "-passout",
                "pass:foobar",
                "-out",
                "trad.key",
            ],
        ),
    ] {
        openssl(dir.path(), &args).unwrap();
        let pem = read(dir.path(), name);
        // Many wrong passphrases: bad padding, or (rarely) good padding over garbage.
        for i in 0..40 {
            let e = pkcs8_der(&pem, Some(&secret(&format!("wrong{i}")))).unwrap_err();
            assert_eq!(
                e.to_string(),
                "is encrypted and the passphrase does not open it (check CA_KEY_PASSPHRASE)",
                "{name}"
            );
        }
    }
}

#[test]
fn unencrypted_keys_load_as_before() {
    let Some(dir) = with_key() else { return };
    let expected = plain_der(dir.path());
    let pkcs8 = read(dir.path(), "plain.key");
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(pkcs8_der(&pkcs8, None).as_ref(), Ok(&expected));
    openssl(
        dir.path(),
        &[
            "rsa",
            "-in",
            "plain.key",
            "-traditional",
            "-out",
            "pkcs1.key",
        ],
    )
    .unwrap();
    let pkcs1 = read(dir.path(), "pkcs1.key");
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // The wrapping is byte-for-byte what openssl writes.
    assert_eq!(pkcs8_der(&pkcs1, None).as_ref(), Ok(&expected));
    // rcgen's own keys (ECDSA, PKCS#8) too.
    let rcgen_key = rcgen::KeyPair::generate().unwrap();
    assert_eq!(
        pkcs8_der(&rcgen_key.serialize_pem(), None).unwrap(),
        rcgen_key.serialize_der()
    );
}

#[test]
fn unsupported_and_malformed_keys_are_errors_not_panics() {
    let Some(dir) = with_key() else { return };
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-v1",
            "PBE-SHA1-3DES",
            "-in",
            "plain.key",
            "-passout",
            "pass:foobar",
            "-out",
            "pbes1.key",
        ],
    )
    .unwrap();
    let e = pkcs8_der(&read(dir.path(), "pbes1.key"), None).unwrap_err();
    assert!(matches!(e, KeyError::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("PBES1"), "{e}");

    assert!(matches!(
        pkcs8_der("not a key", None),
        Err(KeyError::Malformed(_))
    ));
    let ec = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    assert!(matches!(pkcs8_der(ec, None), Err(KeyError::Malformed(_))));

    // Every truncation and many corruptions of an encrypted key: an error, never a panic.
    seed_genrsa(dir.path(), "seed.key", "2048").unwrap();
    let block = pem::parse(read(dir.path(), "seed.key")).unwrap();
    let der = block.contents().to_vec();
    let encode = |contents: Vec<u8>| pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", contents));
    for len in (0..100).chain((100..der.len()).step_by(61)) {
        assert!(
            pkcs8_der(&encode(der[..len].to_vec()), None).is_err(),
            "{len}"
        );
    }
    // Corrupting every byte of the parameters (the first 90 bytes), and some of the data.
    for i in (0..90).chain((90..der.len()).step_by(97)) {
        let mut bad = der.clone();
        bad[i] ^= 0x5a;
        let _ = pkcs8_der(&encode(bad), None);
    }
    let trad = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    assert!(matches!(pkcs8_der(trad, None), Err(KeyError::Malformed(_))));
    let trad = trad.replace("DES-EDE3-CBC,00", "BF-CBC,0011223344556677");
    assert!(matches!(
        pkcs8_der(&trad, None),
        Err(KeyError::Unsupported(_))
    ));
}

#[test]
fn evp_bytes_to_key_matches_openssl() {
    let Some(dir) = with_key() else { return };
    // `openssl enc -P` prints the key and IV that EVP_BytesToKey (MD5, one round) derives.
    let out = Command::new("openssl")
        .args([
            "enc",
            "-des-ede3-cbc",
            "-md",
            "md5",
            "-pass",
            "pass:foobar",
            "-S",
            "0102030405060708",
            "-P",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let key_line = text.lines().find(|l| l.starts_with("key=")).unwrap();
    let expected = key_line.trim_start_matches("key=").trim();
    let key = evp_bytes_to_key(b"foobar", &[1, 2, 3, 4, 5, 6, 7, 8], 24);
    let got: String = key.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(got, expected);
}

#[test]
fn the_seeds_ca_volume_signs_leaves_that_verify_against_its_ca_crt() {
    let Some(dir) = with_key() else { return };
    let ca = dir.path().join("ca");
    std::fs::create_dir(&ca).unwrap();
    // The seed's create_ca_cert.sh, its two commands for the CA as they are.
    seed_ca(&ca, &dir.path().join("ia.cnf")).unwrap();
    let seed_crt = read(&ca, "ca.crt");

    let authority = crate::tls::CertAuthority::load_or_create(&ca).unwrap();
    assert_eq!(
        authority.ca_pem(),
        seed_crt,
        "the seed's certificate is served as is"
    );
    let (leaf, _) = authority.mint(&["registry.test".to_owned()]).unwrap();
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf.cert[0].to_vec()));
    std::fs::write(dir.path().join("leaf.pem"), leaf_pem).unwrap();
    let out = Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            "ca/ca.crt",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "registry.test",
            "leaf.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "leaf.pem: OK",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The key file is left as it was: still encrypted (only its mode is tightened).
    assert!(read(&ca, "ca.key").starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    // Another passphrase than the seed's: a clear error at start-up.
    let wrong = Secret::new("not-foobar");
    let e = crate::tls::CertAuthority::load_or_create_with(&ca, Some(&wrong)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "CA key {} is encrypted and the passphrase does not open it (check CA_KEY_PASSPHRASE)",
            ca.join("ca.key").display()
        )
    );
}
