//! Reading `ca.key` as the seed (and OpenSSL generally) writes it, for the CA's signing key.
//!
//! The seed creates its CA key with `openssl genrsa -des3 -passout pass:foobar`: OpenSSL 1.x writes
//! a traditional PEM key (`BEGIN RSA PRIVATE KEY` with `Proc-Type: 4,ENCRYPTED` and
//! `DEK-Info: DES-EDE3-CBC,<iv>`, key from `EVP_BytesToKey` with MD5), OpenSSL 3 an encrypted PKCS#8
//! key (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2 with PBKDF2-HMAC-SHA256 and DES-EDE3-CBC; `openssl pkcs8
//! -topk8 -v2 aes-256-cbc` gives AES). All of them, and the unencrypted forms (`PRIVATE KEY`,
//! `RSA PRIVATE KEY`), come out as PKCS#8 DER, which is what rcgen (with ring) signs with.
//!
//! Without a passphrase from the operator the seed's fixed one is tried, so that the seed's `/ca`
//! volume loads as is.

use std::num::NonZeroU32;

use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use md5::{Digest, Md5};
use x509_parser::asn1_rs::{FromDer, OctetString, Oid, Sequence};

use crate::secret::Secret;

/// The passphrase the seed's `create_ca_cert.sh` encrypts `ca.key` with.
pub const SEED_PASSPHRASE: &str = "foobar";

/// PBKDF2 iteration counts above this are refused rather than spent minutes on (OpenSSL writes
/// 2048; current recommendations are in the hundreds of thousands).
const MAX_ITERATIONS: u32 = 10_000_000;

/// Why `ca.key` could not be read as a private key. Never includes key material or a passphrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is encrypted and the passphrase does not open it ({hint})")]
    WrongPassphrase { hint: &'static str },
    #[error(
        "is encrypted with {0}, which is not supported (re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`)"
    )]
    Unsupported(String),
    #[error("is not a PEM private key: {0}")]
    Malformed(String),
}

/// The key in `pem` as PKCS#8 DER, decrypted with `passphrase` (or the seed's, when `None`) if it
/// is encrypted.
pub fn pkcs8_der(pem: &str, passphrase: Option<&Secret>) -> Result<Vec<u8>, KeyError> {
    let block = pem::parse(pem).map_err(|e| KeyError::Malformed(e.to_string()))?;
    let (pass, hint) = match passphrase {
        Some(p) => (p.expose().as_bytes(), "check CA_KEY_PASSPHRASE"),
        None => (SEED_PASSPHRASE.as_bytes(), "set CA_KEY_PASSPHRASE"),
    };
    let wrong = KeyError::WrongPassphrase { hint };
    match block.tag() {
        "PRIVATE KEY" => Ok(block.contents().to_vec()),
        "ENCRYPTED PRIVATE KEY" => {
            let key = decrypt_pkcs8(block.contents(), pass).map_err(|e| e.or(wrong.clone()))?;
            whole_der_sequence(&key).then_some(key).ok_or(wrong)
        }
        "RSA PRIVATE KEY" => {
            let headers = block.headers();
            let pkcs1 = match headers.get("Proc-Type") {
                None => block.contents().to_vec(),
                Some(proc_type) if proc_type.trim() == "4,ENCRYPTED" => {
                    let dek_info = headers.get("DEK-Info").ok_or_else(|| {
                        KeyError::Malformed("Proc-Type ENCRYPTED without DEK-Info".into())
                    })?;
                    let key = decrypt_traditional(dek_info, block.contents(), pass)
                        .map_err(|e| e.or(wrong.clone()))?;
                    if !whole_der_sequence(&key) {
                        return Err(wrong);
                    }
                    key
                }
                Some(other) => {
                    return Err(KeyError::Malformed(format!("unknown Proc-Type {other:?}")));
                }
            };
            Ok(rsa_pkcs1_to_pkcs8(&pkcs1))
        }
        other => Err(KeyError::Malformed(format!(
            "unsupported key type {other:?} (an RSA or PKCS#8 key is needed)"
        ))),
    }
}

/// A decryption failure: `None` when it means a wrong passphrase (bad padding), else the reason.
struct Failure(Option<KeyError>);

impl Failure {
    fn or(self, wrong: KeyError) -> KeyError {
        self.0.unwrap_or(wrong)
    }
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Failure {
        Failure(Some(e))
    }
}

/// The block ciphers (in CBC mode) a CA key may be encrypted with.
#[derive(Debug, Clone, Copy)]
enum Cipher {
    DesEde3,
    Aes128,
    Aes192,
    Aes256,
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128 => 16,
            Cipher::DesEde3 | Cipher::Aes192 => 24,
            Cipher::Aes256 => 32,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Cipher::DesEde3 => 8,
            _ => 16,
        }
    }

    /// CBC decryption with PKCS#7 padding; `None` if the padding is wrong (a wrong key).
    fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, Failure> {
        fn run<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, Failure>
        where
            C: cbc::cipher::BlockCipherDecrypt,
            cbc::Decryptor<C>: KeyIvInit + BlockModeDecrypt,
        {
            let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv)
                .map_err(|_| KeyError::Malformed("bad key or IV length".into()))?;
            decryptor
                .decrypt_padded_vec::<Pkcs7>(data)
                .map_err(|_| Failure(None))
        }
        match self {
            Cipher::DesEde3 => run::<des::TdesEde3>(key, iv, data),
            Cipher::Aes128 => run::<aes::Aes128>(key, iv, data),
            Cipher::Aes192 => run::<aes::Aes192>(key, iv, data),
            Cipher::Aes256 => run::<aes::Aes256>(key, iv, data),
        }
    }
}

/// Traditional PEM encryption: `DEK-Info: <cipher>,<iv hex>`, the key from OpenSSL's
/// `EVP_BytesToKey(MD5, passphrase, salt = first 8 bytes of the IV, 1 round)`.
fn decrypt_traditional(dek_info: &str, data: &[u8], pass: &[u8]) -> Result<Vec<u8>, Failure> {
    let (name, iv_hex) = dek_info
        .split_once(',')
        .ok_or_else(|| KeyError::Malformed("DEK-Info without an IV".into()))?;
    let cipher = match name.trim().to_ascii_uppercase().as_str() {
        "DES-EDE3-CBC" => Cipher::DesEde3,
        "AES-128-CBC" => Cipher::Aes128,
        "AES-192-CBC" => Cipher::Aes192,
        "AES-256-CBC" => Cipher::Aes256,
        other => return Err(KeyError::Unsupported(other.to_owned()).into()),
    };
    let iv = hex(iv_hex.trim())
        .filter(|iv| iv.len() == cipher.iv_len())
        .ok_or_else(|| KeyError::Malformed("bad IV in DEK-Info".into()))?;
    let salt = iv.get(..8).unwrap_or_default();
    let key = evp_bytes_to_key(pass, salt, cipher.key_len());
    cipher.decrypt(&key, &iv, data)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one round: `D_i = MD5(D_{i-1} || pass || salt)`,
/// concatenated until `len` bytes.
fn evp_bytes_to_key(pass: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(len + 16);
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < len {
        let mut md5 = Md5::new();
        md5.update(&previous);
        md5.update(pass);
        md5.update(salt);
        previous = md5.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(len);
    key
}

/// PKCS#8 `EncryptedPrivateKeyInfo` with PBES2 (PBKDF2 + a CBC cipher), as OpenSSL 1.1 and 3 write it.
fn decrypt_pkcs8(der: &[u8], pass: &[u8]) -> Result<Vec<u8>, Failure> {
    let malformed = |what: &str| KeyError::Malformed(format!("EncryptedPrivateKeyInfo: {what}"));
    let (scheme, params, data) = Sequence::from_der_and_then(der, |i| {
        let (i, (scheme, params)) = Sequence::from_der_and_then(i, |i| {
            let (i, scheme) = Oid::from_der(i)?;
            Ok((&[][..], (scheme, i)))
        })?;
        let (i, data) = OctetString::from_der(i)?;
        Ok((i, (scheme, params, data)))
    })
    .map(|(_, parsed)| parsed)
    .map_err(|_| malformed("not DER"))?;
    match scheme.to_id_string().as_str() {
        oid::PBES2 => {}
        oid::PBES1_MD5_DES | oid::PBES1_SHA1_DES | oid::PBES1_SHA1_3DES => {
            return Err(KeyError::Unsupported("PBES1 (a PKCS#5 v1.5 scheme)".into()).into());
        }
        other => return Err(KeyError::Unsupported(format!("scheme {other}")).into()),
    }
    let pbes2 = Pbes2::parse(params).map_err(|e| malformed(&e))?;
    let cipher = pbes2.cipher;
    if pbes2.key_len.is_some_and(|n| n != cipher.key_len()) || pbes2.iv.len() != cipher.iv_len() {
        return Err(malformed("key length or IV does not fit the cipher").into());
    }
    let iterations = NonZeroU32::new(pbes2.iterations)
        .filter(|n| n.get() <= MAX_ITERATIONS)
        .ok_or_else(|| malformed("PBKDF2 iteration count out of range"))?;
    let mut key = vec![0u8; cipher.key_len()];
    ring::pbkdf2::derive(pbes2.prf, iterations, &pbes2.salt, pass, &mut key);
    cipher.decrypt(&key, &pbes2.iv, data.as_ref())
}

/// PBES2 parameters, as far as they are supported.
struct Pbes2 {
    salt: Vec<u8>,
    iterations: u32,
    key_len: Option<usize>,
    prf: ring::pbkdf2::Algorithm,
    cipher: Cipher,
    iv: Vec<u8>,
}

impl Pbes2 {
    /// `PBES2-params ::= SEQUENCE { keyDerivationFunc AlgorithmIdentifier {PBKDF2},
    /// encryptionScheme AlgorithmIdentifier }` (RFC 8018 A.4).
    fn parse(der: &[u8]) -> Result<Pbes2, String> {
        type Kdf<'a> = (Oid<'a>, &'a [u8]);
        let ((kdf, kdf_params), (enc, iv)): (Kdf<'_>, (Oid<'_>, OctetString<'_>)) =
            Sequence::from_der_and_then(der, |i| {
                let (i, kdf) = Sequence::from_der_and_then(i, |i| {
                    let (rest, oid) = Oid::from_der(i)?;
                    Ok((&[][..], (oid, rest)))
                })?;
                let (i, enc) = Sequence::from_der_and_then(i, |i| {
                    let (i, oid) = Oid::from_der(i)?;
                    let (i, iv) = OctetString::from_der(i)?;
                    Ok((i, (oid, iv)))
                })?;
                Ok((i, (kdf, enc)))
            })
            .map(|(_, parsed)| parsed)
            .map_err(|_| "PBES2 parameters are not DER".to_owned())?;
        if kdf.to_id_string() != oid::PBKDF2 {
            return Err(format!(
                "key derivation {} is not PBKDF2",
                kdf.to_id_string()
            ));
        }
        let cipher = match enc.to_id_string().as_str() {
            oid::DES_EDE3_CBC => Cipher::DesEde3,
            oid::AES128_CBC => Cipher::Aes128,
            oid::AES192_CBC => Cipher::Aes192,
            oid::AES256_CBC => Cipher::Aes256,
            other => return Err(format!("cipher {other} is not supported")),
        };
        // PBKDF2-params ::= SEQUENCE { salt OCTET STRING, iterationCount INTEGER,
        //   keyLength INTEGER OPTIONAL, prf AlgorithmIdentifier DEFAULT hmacWithSHA1 }
        let (salt, iterations, key_len, prf) = Sequence::from_der_and_then(kdf_params, |i| {
            let (i, salt) = OctetString::from_der(i)?;
            let (i, iterations) = u32::from_der(i)?;
            let (i, key_len) = Option::<u32>::from_der(i)?;
            let (i, prf) = if i.is_empty() {
                (i, None)
            } else {
                let (i, prf) = Sequence::from_der_and_then(i, |i| {
                    let (_, oid) = Oid::from_der(i)?;
                    Ok((&[][..], oid))
                })?;
                (i, Some(prf))
            };
            Ok((i, (salt.as_ref().to_vec(), iterations, key_len, prf)))
        })
        .map(|(_, parsed)| parsed)
        .map_err(|_| "PBKDF2 parameters are not DER".to_owned())?;
        let prf = match prf.map(|p| p.to_id_string()).as_deref() {
            None | Some(oid::HMAC_SHA1) => ring::pbkdf2::PBKDF2_HMAC_SHA1,
            Some(oid::HMAC_SHA256) => ring::pbkdf2::PBKDF2_HMAC_SHA256,
            Some(oid::HMAC_SHA384) => ring::pbkdf2::PBKDF2_HMAC_SHA384,
            Some(oid::HMAC_SHA512) => ring::pbkdf2::PBKDF2_HMAC_SHA512,
            Some(other) => return Err(format!("PBKDF2 PRF {other} is not supported")),
        };
        Ok(Pbes2 {
            salt,
            iterations,
            key_len: key_len.and_then(|n| usize::try_from(n).ok()),
            prf,
            cipher,
            iv: iv.as_ref().to_vec(),
        })
    }
}

/// Object identifiers, dotted.
mod oid {
    pub(super) const PBES2: &str = "1.2.840.113549.1.5.13";
    pub(super) const PBKDF2: &str = "1.2.840.113549.1.5.12";
    pub(super) const PBES1_MD5_DES: &str = "1.2.840.113549.1.5.3";
    pub(super) const PBES1_SHA1_DES: &str = "1.2.840.113549.1.5.10";
    pub(super) const PBES1_SHA1_3DES: &str = "1.2.840.113549.1.12.1.3";
    pub(super) const HMAC_SHA1: &str = "1.2.840.113549.2.7";
    pub(super) const HMAC_SHA256: &str = "1.2.840.113549.2.9";
    pub(super) const HMAC_SHA384: &str = "1.2.840.113549.2.10";
    pub(super) const HMAC_SHA512: &str = "1.2.840.113549.2.11";
    pub(super) const DES_EDE3_CBC: &str = "1.2.840.113549.3.7";
    pub(super) const AES128_CBC: &str = "2.16.840.1.101.3.4.1.2";
    pub(super) const AES192_CBC: &str = "2.16.840.1.101.3.4.1.22";
    pub(super) const AES256_CBC: &str = "2.16.840.1.101.3.4.1.42";
}

/// True if `der` is one DER SEQUENCE filling it exactly: what a correctly decrypted key is, and
/// what a wrongly decrypted one (that happened to end in valid padding) is all but never.
fn whole_der_sequence(der: &[u8]) -> bool {
    Sequence::from_der(der).is_ok_and(|(rest, _)| rest.is_empty())
}

/// Wraps a PKCS#1 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo` (version 0, rsaEncryption, NULL).
fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    /// rsaEncryption, 1.2.840.113549.1.1.1.
    const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let mut algorithm = tlv(0x06, &RSA_ENCRYPTION);
    algorithm.extend(tlv(0x05, &[]));
    let mut info = tlv(0x02, &[0]);
    info.extend(tlv(0x30, &algorithm));
    info.extend(tlv(0x04, pkcs1));
    tlv(0x30, &info)
}

/// One DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests;
