//! The seed's own openssl commands for its CA (its `create_ca_cert.sh`, with the fixed passphrase
//! `foobar`), shared by the unit tests of `tls::ca_key` and the start-up integration tests so both
//! check the proxy against the very same commands.

use std::path::Path;
use std::process::Command;

/// The seed's `req` configuration for its CA (`-extensions IA`).
pub(crate) const SEED_CA_CONFIG: &str = "[req]\ndistinguished_name = dn\n[dn]\n[IA]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical, digitalSignature, cRLSign, keyCertSign\nsubjectKeyIdentifier = hash\n";

/// Runs `openssl ARGS` in `dir`; `None` if openssl is not installed (the test is then skipped), a
/// panic with openssl's message when the command fails.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> Option<()> {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Err(_) => None,
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(())
        }
    }
}

/// The seed's key command: `openssl genrsa -des3 -passout pass:foobar -out OUT BITS`.
pub(crate) fn seed_genrsa(dir: &Path, out: &str, bits: &str) -> Option<()> {
    openssl(
        dir,
        &[
            "genrsa",
            "-des3",
            "-passout",
            "pass:foobar",
            "-out",
            out,
            bits,
        ],
    )
}

/// Makes `dir/ca.key` (4096 bits) and `dir/ca.crt` with the seed's two commands, its `req`
/// configuration written to `config`; `None` if openssl is not installed.
pub(crate) fn seed_ca(dir: &Path, config: &Path) -> Option<()> {
    std::fs::write(config, SEED_CA_CONFIG).unwrap();
    seed_genrsa(dir, "ca.key", "4096")?;
    let config = config.to_str().unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "1300",
            "-sha256",
            "-key",
            "ca.key",
            "-out",
            "ca.crt",
            "-passin",
            "pass:foobar",
            "-subj",
            "/C=NL/ST=Noord Holland/L=Amsterdam/O=ME/OU=IT/CN=DockerMirrorBox CA Root test",
            "-extensions",
            "IA",
            "-config",
            config,
        ],
    )
}
