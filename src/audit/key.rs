//! The keys of signed checkpoints (README "Audit log"): [`SigningKey`], the daemon's
//! Ed25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it),
//! and [`VerifyingKey`], the public key (SPKI PEM, `openssl pkey -pubout`) an auditor
//! checks checkpoints with.
//!
//! The private key is a secret: its type prints only its key id and file, errors name the
//! file and what is wrong with it, never its bytes, and the PEM text and DER read from the
//! file are zeroed once the key is built. (The key pair itself lives inside `ring`, which
//! does not zero it on drop.)

use super::os_error::OsError;
use crate::config::{SecretSource, expand_vars};
use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use secrecy::zeroize::{Zeroize as _, Zeroizing};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Key files are small; anything larger is not a key (and is not read whole).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (33 bytes, no unused bits) }, then the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The text a checkpoint's signature covers:
/// `vpcep-approver checkpoint v1\n<records>\n<head>\n<ts>\n` (UTF-8).
pub fn checkpoint_message(records: u64, head: &str, ts: &str) -> String {
    format!("vpcep-approver checkpoint v1\n{records}\n{head}\n{ts}\n")
}

/// A key file that cannot be used; names the file, never its contents.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("failed to read audit {what} {path}")]
    Read {
        /// "signing key" or "public key".
        what: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: OsError,
    },
    /// The file does not hold a key of the expected kind.
    #[error("audit {what} {path}: {reason}")]
    Invalid {
        /// "signing key" or "public key".
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong (no key material).
        reason: String,
    },
    /// The configured path could not be expanded (an unset `${VAR}`).
    #[error("audit signing key file {template}: {message}")]
    Path {
        /// The configured value.
        template: String,
        /// Why.
        message: String,
    },
}

/// The Ed25519 private key that signs checkpoint records. A secret: `Debug` shows only
/// the key id and the file; there is no `Display`.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    key_id: String,
    path: PathBuf,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads `[audit] signing_key_file` (its `${VAR}`s expanded from the environment).
    pub fn load(source: &SecretSource) -> Result<SigningKey, KeyError> {
        match source {
            SecretSource::File { template, base } => {
                let expanded =
                    expand_vars(template, |v| std::env::var(v).ok()).map_err(|message| {
                        KeyError::Path {
                            template: template.clone(),
                            message,
                        }
                    })?;
                SigningKey::from_file(&base.join(expanded))
            }
            SecretSource::Env(var) => Err(KeyError::Path {
                template: var.clone(),
                message: "the signing key must be a file".to_owned(),
            }),
        }
    }

    /// Loads an Ed25519 private key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_file(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = read_small(path, "signing key")?;
        SigningKey::from_pem(&pem, path)
    }

    /// Builds the key from PEM text; `path` is only used in messages and `Debug`.
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<SigningKey, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            what: "signing key",
            path: path.display().to_string(),
            reason,
        };
        let mut der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| {
            invalid(match e {
                pem::Error::NoItemsFound => {
                    "no `PRIVATE KEY` PEM section (expected an Ed25519 key in PKCS#8 PEM, \
                     e.g. from `openssl genpkey -algorithm ed25519`)"
                        .to_owned()
                }
                // The parser's own messages may quote lines of the file: not repeated.
                _ => "malformed PEM".to_owned(),
            })
        })?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der());
        der.zeroize();
        let pair = pair.map_err(|e| {
            invalid(format!(
                "not an Ed25519 private key in PKCS#8 ({e}); create one with `openssl genpkey \
                 -algorithm ed25519`"
            ))
        })?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(SigningKey {
            pair,
            key_id,
            path: path.to_owned(),
        })
    }

    /// First 16 hex digits of the SHA-256 of the raw public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The file the key came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey {
            raw,
            key_id: self.key_id.clone(),
        }
    }

    /// The base64 (standard, padded) Ed25519 signature over [`checkpoint_message`].
    pub fn sign_checkpoint(&self, records: u64, head: &str, ts: &str) -> String {
        let sig = self
            .pair
            .sign(checkpoint_message(records, head, ts).as_bytes());
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }
}

/// An Ed25519 public key that checks checkpoint signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    raw: [u8; 32],
    key_id: String,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.key_id)
    }
}

impl VerifyingKey {
    /// Loads an Ed25519 public key from an SPKI PEM file (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_file(path: &Path) -> Result<VerifyingKey, KeyError> {
        let pem = read_small(path, "public key")?;
        VerifyingKey::from_pem(&pem, path)
    }

    /// Builds the key from PEM text; `path` is only used in messages.
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<VerifyingKey, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid {
            what: "public key",
            path: path.display().to_string(),
            reason: reason.to_owned(),
        };
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| match e {
            pem::Error::NoItemsFound => invalid(
                "no `PUBLIC KEY` PEM section (expected an Ed25519 public key in SPKI PEM, \
                 e.g. from `openssl pkey -pubout`)",
            ),
            _ => invalid("malformed PEM"),
        })?;
        let bytes: &[u8] = der.as_ref();
        let raw = bytes
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| invalid("not an Ed25519 public key"))?;
        Ok(VerifyingKey {
            raw,
            key_id: key_id(&raw),
        })
    }

    /// First 16 hex digits of the SHA-256 of the raw public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte public key.
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Whether `signature` (base64) is this key's signature of the checkpoint.
    pub fn verify_checkpoint(&self, records: u64, head: &str, ts: &str, signature: &str) -> bool {
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(checkpoint_message(records, head, ts).as_bytes(), &sig)
            .is_ok()
    }
}

/// First 16 hex digits of the SHA-256 over the raw public key.
fn key_id(raw_public: &[u8]) -> String {
    let mut id = hex::encode(Sha256::digest(raw_public));
    id.truncate(16);
    id
}

/// Reads a key file of at most [`MAX_KEY_FILE`] bytes into memory that is zeroed on drop.
fn read_small(path: &Path, what: &'static str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let read_err = |source: std::io::Error| KeyError::Read {
        what,
        path: path.display().to_string(),
        source: source.into(),
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Invalid {
            what,
            path: path.display().to_string(),
            reason: format!("larger than {MAX_KEY_FILE} bytes, not a key file"),
        });
    }
    Ok(buf)
}

#[cfg(test)]
/// An Ed25519 key as `openssl genpkey -algorithm ed25519` writes it (PKCS#8 v1, no
/// public key), generated for these tests only.
pub(crate) const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIOfuF5L+Ypp/P08hT96njXrA/AanlhM0mikUTCxzk/QS\n\
        -----END PRIVATE KEY-----\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_pem(TEST_KEY_PEM.as_bytes(), Path::new("test.pem")).expect("valid key")
    }

    #[test]
    fn signs_and_verifies_checkpoints() {
        let k = key();
        let v = k.verifying_key();
        assert_eq!(k.key_id(), v.key_id());
        assert_eq!(k.key_id().len(), 16);
        let head = "ab".repeat(32);
        let ts = "2026-11-27T12:00:00.123Z";
        let sig = k.sign_checkpoint(7, &head, ts);
        assert!(v.verify_checkpoint(7, &head, ts, &sig));
        assert!(!v.verify_checkpoint(8, &head, ts, &sig));
        assert!(!v.verify_checkpoint(7, &"cd".repeat(32), ts, &sig));
        assert!(!v.verify_checkpoint(7, &head, "2026-11-27T12:00:00.124Z", &sig));
        assert!(!v.verify_checkpoint(7, &head, ts, "not base64"));
    }

    #[test]
    fn key_id_is_sha256_of_the_raw_public_key() {
        let v = key().verifying_key();
        assert_eq!(v.key_id(), &hex::encode(Sha256::digest(v.raw()))[..16]);
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = key();
        let shown = format!("{k:?}");
        assert!(shown.contains(k.key_id()), "{shown}");
        assert!(!shown.contains("MC4CAQ"), "{shown}");
        let b64 = TEST_KEY_PEM.lines().nth(1).expect("body");
        assert!(!shown.contains(b64));
    }

    #[test]
    fn errors_name_the_file_and_never_the_contents() {
        let secretish = "-----BEGIN PRIVATE KEY-----\nTOPSECRET%%%\n-----END PRIVATE KEY-----\n";
        let err =
            SigningKey::from_pem(secretish.as_bytes(), Path::new("/k.pem")).expect_err("malformed");
        let text = err.to_string();
        assert!(text.contains("/k.pem"), "{text}");
        assert!(!text.contains("TOPSECRET"), "{text}");

        let err = SigningKey::from_pem(b"hello", Path::new("/k.pem")).expect_err("no pem");
        assert!(err.to_string().contains("no `PRIVATE KEY`"), "{err}");

        // A PKCS#8 key of another algorithm (P-256) is refused.
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let err = SigningKey::from_pem(p256.serialize_pem().as_bytes(), Path::new("/p.pem"))
            .expect_err("not ed25519");
        assert!(err.to_string().contains("not an Ed25519"), "{err}");

        // A public key is not a signing key, and the other way round.
        let public = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let err = SigningKey::from_pem(public.public_key_pem().as_bytes(), Path::new("/p.pem"))
            .expect_err("public");
        assert!(err.to_string().contains("no `PRIVATE KEY`"), "{err}");
        let err = VerifyingKey::from_pem(TEST_KEY_PEM.as_bytes(), Path::new("/k.pem"))
            .expect_err("private");
        assert!(err.to_string().contains("no `PUBLIC KEY`"), "{err}");
        let err = VerifyingKey::from_pem(p256.public_key_pem().as_bytes(), Path::new("/p.pem"))
            .expect_err("p256");
        assert!(err.to_string().contains("not an Ed25519"), "{err}");

        let err = SigningKey::from_file(Path::new("/nonexistent/k.pem")).expect_err("missing");
        let text = crate::audit::error_chain(&err);
        assert!(
            text.contains("/nonexistent/k.pem") && text.contains("ENOENT"),
            "{text}"
        );
    }

    #[test]
    fn public_key_from_spki_pem_matches() {
        let k = key();
        // `openssl pkey -pubout` of TEST_KEY_PEM.
        let openssl_pub = "-----BEGIN PUBLIC KEY-----\n\
            MCowBQYDK2VwAyEARaUJjrDHhYOr91DBWXCfq423gRPif1ITiH6NZVUp7iY=\n\
            -----END PUBLIC KEY-----\n";
        let v = VerifyingKey::from_pem(openssl_pub.as_bytes(), Path::new("k.pub")).expect("spki");
        assert_eq!(&v, &k.verifying_key());
        let pk8 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        // rcgen's PKCS#8 has the v2 form with the public key; both forms load.
        let other = SigningKey::from_pem(pk8.serialize_pem().as_bytes(), Path::new("o.pem"))
            .expect("v2 form loads");
        let v = VerifyingKey::from_pem(pk8.public_key_pem().as_bytes(), Path::new("o.pub"))
            .expect("spki");
        assert_eq!(v.key_id(), other.key_id());
        assert_ne!(v.key_id(), k.key_id());
    }

    #[test]
    fn load_expands_variables_and_names_an_unset_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k.pem"), TEST_KEY_PEM).expect("write");
        let src = SecretSource::File {
            template: "k.pem".to_owned(),
            base: dir.path().to_owned(),
        };
        assert_eq!(
            SigningKey::load(&src).expect("loads").key_id(),
            key().key_id()
        );
        let src = SecretSource::File {
            template: "${VPCEP_TEST_UNSET_CREDENTIALS_DIR}/k.pem".to_owned(),
            base: dir.path().to_owned(),
        };
        let err = SigningKey::load(&src).expect_err("unset");
        assert!(
            err.to_string()
                .contains("VPCEP_TEST_UNSET_CREDENTIALS_DIR is not set"),
            "{err}"
        );
    }
}
