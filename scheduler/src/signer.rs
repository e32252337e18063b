//! Keys that sign data items: Ed25519 (signature type 2) and Arweave RSA-4096 (type 1), with
//! their JWK form and key files.
//!
//! Ed25519 signing is deterministic: the same key and inputs give the same signature, so the
//! same item and id. Hewitt relies on this (an assignment can be re-signed identically on
//! replay). RSA-PSS signing is randomized (a fresh 32-byte salt each time), so its ids are not
//! reproducible. Verification lives in [`crate::data_item`]. Apart from [`Signer::load`],
//! [`Signer::save`] and [`Signer::generate_ed25519`], nothing here touches files or randomness;
//! RSA signing draws its salt from the OS.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer as _;
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
use rsa::{BigUint, Pss, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::data_item::{DataItem, SignatureType};
use crate::id::{b64url, b64url_decode, Address};
use crate::tags::Tag;

/// Bits of an Arweave RSA modulus; other sizes are refused.
const RSA_MODULUS_BITS: usize = 4096;
/// Bytes of an Arweave RSA modulus and signature.
const RSA_MODULUS_BYTES: usize = RSA_MODULUS_BITS / 8;
/// Arweave's public exponent; the owner field carries only the modulus, so no other works.
const RSA_PUBLIC_EXPONENT: u32 = 65537;
/// The PSS salt length Hewitt signs with: the SHA-256 length, as the reference SU does.
/// Verifiers detect the salt length, so this is a free choice.
const RSA_PSS_SALT_BYTES: usize = 32;
/// Key files are small JSON objects; a larger file is not a key.
const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why a key could not be loaded, saved or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot {action} key file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is {len} bytes; at most {KEY_FILE_BYTES_MAX} expected")]
    FileTooLarge { path: PathBuf, len: u64 },
    #[error("key file {path} is not JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("bad JWK: {0}")]
    BadJwk(String),
    #[error("RSA key has a {bits}-bit modulus; Arweave signing (type 1) needs {RSA_MODULUS_BITS}")]
    RsaKeySize { bits: usize },
}

/// A private key that signs data items.
// A node holds a handful of signers for its lifetime, so the 232-byte size of the unboxed
// Ed25519 variant costs nothing, and the shared API names it unboxed.
#[allow(clippy::large_enum_variant)]
pub enum Signer {
    Ed25519(ed25519_dalek::SigningKey),
    /// Must be a 4096-bit key with public exponent 65537 ([`Signer::from_jwk`] checks this).
    Rsa(Box<RsaPrivateKey>),
}

impl fmt::Debug for Signer {
    /// Shows the kind and address only: never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer::{:?}({})", self.signature_type(), self.address())
    }
}

impl Signer {
    /// A fresh Ed25519 key from the OS random source.
    ///
    /// # Panics
    /// If the OS random source fails: without it no key can be made safely.
    pub fn generate_ed25519() -> Signer {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("the OS random source failed");
        Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A fresh RSA-4096 key (an Arweave wallet) from the OS random source. Slow: seconds.
    ///
    /// # Panics
    /// If the OS random source fails.
    pub fn generate_rsa() -> Signer {
        let key = RsaPrivateKey::new_with_exp(&mut rsa::rand_core::OsRng, 4096, &rsa::BigUint::from(65_537u32))
            .expect("RSA-4096 key generation with the OS random source");
        Signer::Rsa(Box::new(key))
    }

    pub fn signature_type(&self) -> SignatureType {
        match self {
            Signer::Ed25519(_) => SignatureType::Ed25519,
            Signer::Rsa(_) => SignatureType::Arweave,
        }
    }

    /// The public key as a data item's owner field: the 32-byte Ed25519 point, or the RSA
    /// modulus big-endian, left-padded to 512 bytes.
    pub fn owner(&self) -> Vec<u8> {
        match self {
            Signer::Ed25519(key) => key.verifying_key().to_bytes().to_vec(),
            Signer::Rsa(key) => left_pad(&key.n().to_bytes_be(), RSA_MODULUS_BYTES),
        }
    }

    /// The owner address: SHA-256 of [`Signer::owner`].
    pub fn address(&self) -> Address {
        Address(Sha256::digest(self.owner()).into())
    }

    /// Builds and signs a data item. Deterministic for Ed25519 (same inputs, same item and id);
    /// randomized for RSA. Limits are not checked here: use [`crate::tags::check_tags`] on tags
    /// from outside, or the item may be refused by [`DataItem::parse`] elsewhere.
    ///
    /// # Panics
    /// If an RSA key is not 4096 bits (a construction bug) or the OS random source fails.
    pub fn sign(&self, target: Option<[u8; 32]>, anchor: Option<[u8; 32]>, tags: Vec<Tag>, data: Vec<u8>) -> DataItem {
        let signature_type = self.signature_type();
        let mut item = DataItem {
            signature_type,
            signature: Vec::new(),
            owner: self.owner(),
            target,
            anchor,
            tags,
            data,
        };
        let message = item.signing_hash();
        item.signature = match self {
            Signer::Ed25519(key) => key.sign(&message).to_bytes().to_vec(),
            Signer::Rsa(key) => {
                assert_eq!(key.n().bits(), RSA_MODULUS_BITS, "RSA signer is not 4096-bit");
                let hashed = Sha256::digest(message);
                let signature = key
                    .sign_with_rng(
                        &mut rsa::rand_core::OsRng,
                        Pss::new_with_salt::<Sha256>(RSA_PSS_SALT_BYTES),
                        &hashed,
                    )
                    .expect("RSA-PSS signing with a valid 4096-bit key cannot fail");
                left_pad(&signature, RSA_MODULUS_BYTES)
            }
        };
        assert_eq!(item.signature.len(), signature_type.signature_len());
        assert_eq!(item.owner.len(), signature_type.owner_len());
        item
    }

    /// The key as a JWK. Ed25519: `{"kty":"OKP","crv":"Ed25519","d":seed,"x":public}`; RSA:
    /// the Arweave wallet form `{"kty":"RSA","n","e","d","p","q","dp","dq","qi"}`. All values are
    /// unpadded base64url of big-endian bytes.
    pub fn to_jwk(&self) -> Value {
        match self {
            Signer::Ed25519(key) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "d": b64url(key.as_bytes()),
                "x": b64url(key.verifying_key().as_bytes()),
            }),
            Signer::Rsa(key) => {
                let primes = key.primes();
                assert_eq!(primes.len(), 2, "Arweave RSA keys have two primes");
                let (p, q) = (&primes[0], &primes[1]);
                let one = BigUint::from(1u32);
                let dp = key.d() % (p - &one);
                let dq = key.d() % (q - &one);
                let qi = key
                    .crt_coefficient()
                    .expect("a validated two-prime RSA key has a CRT coefficient");
                let big = |n: &BigUint| b64url(&n.to_bytes_be());
                json!({
                    "kty": "RSA",
                    "n": big(key.n()),
                    "e": big(key.e()),
                    "d": big(key.d()),
                    "p": big(p),
                    "q": big(q),
                    "dp": big(&dp),
                    "dq": big(&dq),
                    "qi": big(&qi),
                })
            }
        }
    }

    /// Reads a JWK of either kind. An Ed25519 `x`, when present, must match `d`. An RSA key must
    /// be 4096-bit with `e` = 65537; `n`, `e`, `d`, `p`, `q` are used and the key is validated
    /// (the CRT values `dp`, `dq`, `qi` are recomputed, not trusted).
    pub fn from_jwk(jwk: &Value) -> Result<Signer, SignerError> {
        let kty = jwk_str(jwk, "kty")?;
        match kty {
            "OKP" => {
                let crv = jwk_str(jwk, "crv")?;
                if crv != "Ed25519" {
                    return Err(SignerError::BadJwk(format!(
                        "OKP curve {crv:?} is not supported (only Ed25519)"
                    )));
                }
                let seed: [u8; 32] = jwk_bytes(jwk, "d")?.try_into().map_err(|bytes: Vec<u8>| {
                    SignerError::BadJwk(format!("Ed25519 \"d\" is {} bytes, not 32", bytes.len()))
                })?;
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                if jwk.get("x").is_some() {
                    let x = jwk_bytes(jwk, "x")?;
                    if x != key.verifying_key().as_bytes() {
                        return Err(SignerError::BadJwk(
                            "Ed25519 \"x\" is not the public key of \"d\"".to_owned(),
                        ));
                    }
                }
                Ok(Signer::Ed25519(key))
            }
            "RSA" => {
                let big = |field| jwk_bytes(jwk, field).map(|b| BigUint::from_bytes_be(&b));
                let n = big("n")?;
                let e = big("e")?;
                if n.bits() != RSA_MODULUS_BITS {
                    return Err(SignerError::RsaKeySize { bits: n.bits() });
                }
                if e != BigUint::from(RSA_PUBLIC_EXPONENT) {
                    return Err(SignerError::BadJwk(format!(
                        "RSA public exponent must be {RSA_PUBLIC_EXPONENT} (Arweave's)"
                    )));
                }
                let key = RsaPrivateKey::from_components(n, e, big("d")?, vec![big("p")?, big("q")?])
                    .map_err(|error| SignerError::BadJwk(format!("inconsistent RSA key: {error}")))?;
                Ok(Signer::Rsa(Box::new(key)))
            }
            other => Err(SignerError::BadJwk(format!(
                "key type {other:?} is not supported (OKP or RSA)"
            ))),
        }
    }

    /// Loads a JWK key file.
    pub fn load(path: &Path) -> Result<Signer, SignerError> {
        let io = |action, source| SignerError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let file = fs::File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len > KEY_FILE_BYTES_MAX {
            return Err(SignerError::FileTooLarge {
                path: path.to_owned(),
                len,
            });
        }
        let text = fs::read_to_string(path).map_err(|e| io("read", e))?;
        let jwk: Value = serde_json::from_str(&text).map_err(|source| SignerError::Json {
            path: path.to_owned(),
            source,
        })?;
        Signer::from_jwk(&jwk)
    }

    /// Saves the key as a JWK file with mode 0600, atomically: it writes `<path>.tmp`, fsyncs it,
    /// renames it over `path` and fsyncs the directory, so a crash leaves the old file or the
    /// new one, never a torn one.
    pub fn save(&self, path: &Path) -> Result<(), SignerError> {
        let io = |action, source| SignerError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let mut temp_name = path.as_os_str().to_owned();
        temp_name.push(".tmp");
        let temp = PathBuf::from(temp_name);
        // A temp file left by a crash may have another mode; start afresh so 0600 applies.
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io("remove stale temp of", error)),
        }
        let mut text = serde_json::to_string_pretty(&self.to_jwk()).expect("a JSON value always serializes");
        text.push('\n');
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| io("create temp of", e))?;
        file.write_all(text.as_bytes()).map_err(|e| io("write temp of", e))?;
        file.sync_all().map_err(|e| io("fsync temp of", e))?;
        drop(file);
        fs::rename(&temp, path).map_err(|e| io("rename temp onto", e))?;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io("fsync the directory of", e))?;
        Ok(())
    }
}

fn jwk_str<'a>(jwk: &'a Value, field: &str) -> Result<&'a str, SignerError> {
    jwk.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| SignerError::BadJwk(format!("missing string field {field:?}")))
}

fn jwk_bytes(jwk: &Value, field: &str) -> Result<Vec<u8>, SignerError> {
    b64url_decode(jwk_str(jwk, field)?)
        .map_err(|error| SignerError::BadJwk(format!("field {field:?} is not base64url: {error}")))
}

/// `bytes` left-padded with zeros to `len`.
fn left_pad(bytes: &[u8], len: usize) -> Vec<u8> {
    assert!(bytes.len() <= len, "{} bytes do not fit in {len}", bytes.len());
    let mut out = vec![0u8; len - bytes.len()];
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::OnceLock;

    /// A 4096-bit RSA test key (never use it for anything else), made by Node's
    /// `crypto.generateKeyPairSync("rsa", {modulusLength: 4096})` and exported as a JWK, which
    /// is the Arweave wallet format. The arbundles vector in `data_item` is signed with it.
    pub(crate) const TEST_RSA_JWK: &str = concat!(
        "{",
        r#""kty":"RSA","#,
        r#""n":""#,
        "q543CdDE7PvpxyfGiIyqqRHHO1mrr7OJGNBEP9Dam-ctqR6xocPU6lGfUHO-f04HDAV8W1BYbUKR-r3iCCfarMDu",
        "eOOneuk3K9_AeSNuxqxS7eHtWbwJiKmTNlcyX2NkyPqSYpnH6R_RTDK0N9xmd4lkjcANV996Tk4L2AUs8yMT35mc",
        "6dVpcNZboCPYYnBMl4Y7Ht0MhAaiPLZYKLg42Z0fqIIVqgqFWkGEm2MiOSSE6VmEmhvUyxOefcFmWxuxVIIv2ayM",
        "ueiJucKnXzK2YyetG1x-XH1rs6dNDNcjidIoaMjOrkIa_-mHVhXBzgfcuM5E92cw3IT85zLsP6LuTWt9vP3v6zAY",
        "9lsPtz2R5ItjpMXyjLc7w2b1WCXfP7HhH6UA9lb9pmsrZ0GkRUbDcANYz6oTXrL_5SyaPSat4yv-xPym9ntA0dQq",
        "1I6sTkooI7ZtyaVCgrUaHv_3X0hv1U498qt0KSC1tNxlIp_-acXNKZsF7v9AWnyWPpsTrCf9hkhISaSMZjZRVsjX",
        "_h_SMnJCwVTz-5-g3uL7YvYMPwivUHYe7um5EMu-da6KF6csx0xeUgnjrCcI2pZ9vzIemJOcRH2NBGBPQuzX9S48",
        "iFPzrLoQx_xqZuh8KYQg-LNtg1hRDteogJognqhF-XhpChPrlaUWunhJ-cvGtgi_FIE",
        r#"","#,
        r#""e":"AQAB","#,
        r#""d":""#,
        "JkF5gV2hWDZ7kWKDdhLtRAzrfYZqqBr8V6StYhBbet9YpVdrP2UZBDa3rcZvU4-AMKTUaMKLQ6fQRLWpOiowK8xC",
        "HH6a6eIs40HYdOh6HB1zywVO1G7_LRCn-TgMyYitgcOheAtRrdzi2fp_g-hEiyb8XEDQeKMfb28kYr4cnAJYvsJO",
        "YS2qeHXALP1wkdj4qdpJOYMK9C9KYQBAvKr8OT42PWjqDWKVAV6TgdPiYByM6DuFPJkxoSc5cEz5VRviNrVil0JI",
        "iHSWpusGRklWsNm6U9wVauamaIDFwzP9_w3y5hDFScEApcVX3s-wyQ2lnSiV5RSCptWaTqtiUHkwZ4IpenTtl89w",
        "G36gHok3jSTOsoF_9IJtFWkDpYuu8TgzmRWFXc5v_iDaou3DIY1CGJomuH1UJ7ZGwlwPUITmVbkZ0IicCPTD3a2R",
        "fmCsX2yYih1PX8pS0q3z8395oyXx0B3m6ZnK0iggdvWwzKE1ZRF15bBaOmMH_hSgMaroiSKIq_baMLfd0LbVYhHL",
        "IOajc_GcLkDbhiOiJPlHlMk3Ymok0QSDbK0tB9wd6kBRt_LRtrQ94Y0rqmiuH_qAKQmhqVlMYHb4_hGyorW10JkV",
        "H7NcnsqcOBj3V8ZNAfF2x80p9DlMddd1wCqwdGXFWttFAyCVI6zNd9NXP_9yedXwr7E",
        r#"","#,
        r#""p":""#,
        "2T_drttQFQEauWIzAlgpuIYCu_K6v7W20dljqlMbbdfmpxlbHrJXL7EZEMah35zGJ6NjKEvnoUOiFy139rHE5ScQ",
        "5DpS0u592FnUTPX6sk_FvbXK3TmRbSrt-QcWCMRdKTRINq25Di01lCYvz-qsaMgSqli7NKO6WIKReOdPrh4sqwVs",
        "l4bcJEmAfL6CuxjLjsdymndUHZXvU7wKwmG4QPu52IsqCJJwnJc-USbHyqFo5nxW-JxOcnF6ZncHUhQSW263Jc6v",
        "wUqxBhelKeF9E32PJPkC5X5u_4OWkoOX19OL_Al55nz8FZX0MUt41pIN0LiKkdcCwL4YsmfC8_kMVQ",
        r#"","#,
        r#""q":""#,
        "yjq1DYHDlZ5Z_29bqJ9ychGsDxuqLpbkXUvIwX4ScSCGF8do91Idv7I-e56nTciDMnqoEXpGDHPcjqPoCa5flDd5",
        "vCLNmDh9oRgzH9OE1aaoe9-GwEdg5Ej0yqNY54uKX8IgV276qo5Cyd78B622no7kMBhqUeLbiNlw1WHKGfzQ1aqc",
        "G6T1HBraC0_YV4Xa8f0onUMAk68RNvRgyrcY5hnDxIYq4_WzG1-HuSQnHC2Oe6vxKnTG0pCHsSdxT9iQt3kZjymA",
        "0hqW-iP2hs4W04ewWs9Hz6no2JugGHyR3zKxnNvqUVQJ1BHXF9AjJrRwkpxoP5SpCSJdXPfRsRLTfQ",
        r#"","#,
        r#""dp":""#,
        "gSYmczyNbu8pI-vsxwgCRV_lYDX8LtunwziotyiQtcwTomLAeI8spX1ymTZ8JKLeadIHsHzvRj8erQiquE0V7-Q5",
        "dnP1qM9-oI9GVjokvrwNoang34LJoUxUDCbaQnv5pfUeuOKtkG_v2hKZedDYjbHi5sG5CKIMtXFpaaaZB7mIdGLV",
        "G39gf3HyoDXhIbirykVnK8ykhLINhInVG5lcH8WFxeV1J4NmzrBaq4OSYjNyWRKx4TmKqR4s1Z0NDQ5Bm3lGB4PH",
        "l_D_K9ACr9MMt_l8j045GpT_B4cCjDcOnY91OG-puAu1EGAEuwlS3LwW2m3acriPOmXH6McmbkMvwQ",
        r#"","#,
        r#""dq":""#,
        "OqNZOkhlKO4YlHt6rWNGcRL0vBC-gPHZ17-Qv6JJwKm4mA6HPid-XsZVXcz8IA7DFBECyMaWpye1TVrzflMkfbq0",
        "PrwstzWyH9L_h_vyKW1Ar2J6FSjdTHRnHpbMwZ7xiaCldhTE9E15ykUw-R0Cteki-1spAQNxurWqBQVs76oh98KX",
        "r2Befj6--Ma3KXGzsbVBYJA8C5aYvEGSC1WaD6Zq4IIyz5S_0XEazrFP8di31t5deH0R5Z5o6hJQxeE63ShtI9jZ",
        "9JInMvLYmfAKKF3Q4hP2c52F2cEOY-tC9OAjJiOSRvDCRM7DerEscB2kAq79f2ogtXhUcA-fquOVlQ",
        r#"","#,
        r#""qi":""#,
        "AudS4m49IEN6ebM6Nlbz4ZS11q7cMng5-6ft8pFJMifC9da6v7kaC2HG5GsJcq7BmX_QMSAnteefzT2jnV85e_Un",
        "ncuvf_wEh4_UZ1EYC2X8JveHdmMWMwFdAevIDXvBri_Q9x-paaBSUiUf4H0w58SjcVlcttEA-Nmk3nQ7n8Ge1rb8",
        "NOgx5LVyn3_t6ecrjs3HnKgYXYOrLxQOy97ctNqUin4yw7KZ0_CoCCf6fg53UnmlBqCSBHsUJB-BoaK45SrIiyg6",
        "VYvmvcussMYRbTqszCBqzFTEMPqtUs97XRLR7ltVCrYVvep0uWNkCSXX7IHIeVmT_-nMxUDCVzdO",
        r#"""#,
        "}"
    );

    /// The test binary's RSA key, decoded once (a fixed key avoids slow key generation).
    pub(crate) fn rsa_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let jwk: Value = serde_json::from_str(TEST_RSA_JWK).unwrap();
            match Signer::from_jwk(&jwk).unwrap() {
                Signer::Rsa(key) => *key,
                Signer::Ed25519(_) => unreachable!("the test JWK is RSA"),
            }
        })
    }

    fn rsa_signer() -> Signer {
        Signer::Rsa(Box::new(rsa_key().clone()))
    }

    #[test]
    fn ed25519_signing_is_deterministic() {
        let signer = Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
        let sign = || signer.sign(Some([1; 32]), None, vec![Tag::new("a", "b")], b"d".to_vec());
        let (first, second) = (sign(), sign());
        assert_eq!(first, second);
        assert_eq!(first.id(), second.id());
        let other = signer.sign(Some([1; 32]), None, vec![Tag::new("a", "c")], b"d".to_vec());
        assert_ne!(first.id(), other.id());
    }

    #[test]
    fn generated_keys_differ_and_sign() {
        let (a, b) = (Signer::generate_ed25519(), Signer::generate_ed25519());
        assert_ne!(a.owner(), b.owner());
        a.sign(None, None, vec![], vec![]).verify().unwrap();
    }

    #[test]
    fn owner_and_address() {
        let signer = Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
        assert_eq!(signer.owner().len(), 32);
        assert_eq!(signer.address().0, <[u8; 32]>::from(Sha256::digest(signer.owner())));

        let rsa = rsa_signer();
        let owner = rsa.owner();
        assert_eq!(owner.len(), 512);
        assert_eq!(BigUint::from_bytes_be(&owner), *rsa_key().n());
        let jwk: Value = serde_json::from_str(TEST_RSA_JWK).unwrap();
        assert_eq!(b64url(&owner), jwk["n"].as_str().unwrap());
        assert_eq!(rsa.address().0, <[u8; 32]>::from(Sha256::digest(&owner)));
        assert_eq!(format!("{rsa:?}"), format!("Signer::Arweave({})", rsa.address()));
    }

    #[test]
    fn rsa_signatures_are_512_bytes_and_randomized() {
        let signer = rsa_signer();
        let a = signer.sign(None, None, vec![], b"same".to_vec());
        let b = signer.sign(None, None, vec![], b"same".to_vec());
        assert_eq!(a.signature.len(), 512);
        assert_ne!(a.id(), b.id());
        a.verify().unwrap();
        b.verify().unwrap();
    }

    #[test]
    fn jwk_round_trips() {
        let ed = Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let jwk = ed.to_jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["d"], b64url(&[9; 32]));
        assert_eq!(jwk["x"], b64url(&ed.owner()));
        assert_eq!(Signer::from_jwk(&jwk).unwrap().owner(), ed.owner());

        // The RSA JWK written by Node must come back field for field, CRT values included.
        let node_jwk: Value = serde_json::from_str(TEST_RSA_JWK).unwrap();
        let ours = rsa_signer().to_jwk();
        for field in ["kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"] {
            assert_eq!(ours[field], node_jwk[field], "field {field}");
        }
    }

    #[test]
    fn from_jwk_rejects_bad_keys() {
        let check = |jwk: Value, expected: &str| {
            let error = Signer::from_jwk(&jwk).unwrap_err().to_string();
            assert!(error.contains(expected), "got {error:?}, expected {expected:?}");
        };
        check(json!({}), "missing string field \"kty\"");
        check(json!({"kty": "EC"}), "key type \"EC\" is not supported");
        check(json!({"kty": "OKP", "crv": "X25519", "d": "AA"}), "curve \"X25519\"");
        check(
            json!({"kty": "OKP", "crv": "Ed25519", "d": "AAAA"}),
            "\"d\" is 3 bytes, not 32",
        );
        check(
            json!({"kty": "OKP", "crv": "Ed25519", "d": "!!"}),
            "\"d\" is not base64url",
        );
        check(
            json!({"kty": "OKP", "crv": "Ed25519", "d": b64url(&[1; 32]), "x": b64url(&[2; 32])}),
            "\"x\" is not the public key",
        );

        let node_jwk: Value = serde_json::from_str(TEST_RSA_JWK).unwrap();
        let mut small = node_jwk.clone();
        small["n"] = json!(b64url(&[0xff; 256]));
        check(small, "2048-bit modulus");
        let mut exponent = node_jwk.clone();
        exponent["e"] = json!("Aw");
        check(exponent, "public exponent must be 65537");
        let mut wrong_prime = node_jwk.clone();
        wrong_prime["p"] = node_jwk["q"].clone();
        check(wrong_prime, "inconsistent RSA key");
        let mut missing = node_jwk;
        missing.as_object_mut().unwrap().remove("d");
        check(missing, "missing string field \"d\"");
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        for signer in [Signer::generate_ed25519(), rsa_signer()] {
            let path = dir.path().join("wallet.json");
            signer.save(&path).unwrap();
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(!dir.path().join("wallet.json.tmp").exists());
            let loaded = Signer::load(&path).unwrap();
            assert_eq!(loaded.owner(), signer.owner());
            assert_eq!(loaded.to_jwk(), signer.to_jwk());
        }

        // A stale temp file from a crash does not block saving.
        let path = dir.path().join("again.json");
        fs::write(dir.path().join("again.json.tmp"), "junk").unwrap();
        Signer::generate_ed25519().save(&path).unwrap();
        Signer::load(&path).unwrap();

        let missing = Signer::load(&dir.path().join("nope.json")).unwrap_err();
        assert!(missing.to_string().contains("cannot open key file"), "{missing}");
        let junk = dir.path().join("junk.json");
        fs::write(&junk, "not json").unwrap();
        assert!(matches!(Signer::load(&junk), Err(SignerError::Json { .. })));
        let big = dir.path().join("big.json");
        fs::write(&big, vec![b' '; KEY_FILE_BYTES_MAX as usize + 1]).unwrap();
        assert!(matches!(Signer::load(&big), Err(SignerError::FileTooLarge { .. })));
    }
}
