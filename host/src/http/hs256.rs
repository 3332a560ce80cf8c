//! The one signature algorithm the host signs and checks tokens with, HS256, as
//! `jsonwebtoken`'s crypto provider.
//!
//! `jsonwebtoken`'s own RustCrypto backend brings RSA, ECDSA (P-256, P-384) and Ed25519
//! with it: code the host never runs (the token policy pins HS256) and a large part of a
//! clean build. This provider does HMAC-SHA-256 only and refuses every other algorithm with
//! `InvalidAlgorithm`, which `jsonwebtoken` reports as it would an unsupported one.
//!
//! Every place that makes a key calls [`install`] first (token policy, logon, the CLI's
//! token command); a process that signs or checks tokens some other way must too.

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    // JWKs are not used: tokens carry no key and the secret comes from the environment.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes HS256 the process's token cryptography. Idempotent; a provider installed
/// earlier by someone else stays.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already in place: nothing to do.
        let _ = PROVIDER.install_default();
    });
}

fn hmac(algorithm: Algorithm, family: AlgorithmFamily, secret: &[u8]) -> Result<HmacSha256> {
    if algorithm != Algorithm::HS256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    if family != AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    HmacSha256::new_from_slice(secret).map_err(|_| ErrorKind::InvalidKeyFormat.into())
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Ok(Box::new(Hs256(hmac(
        *algorithm,
        key.family(),
        key.as_bytes(),
    )?)))
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(Hs256(hmac(
        *algorithm,
        key.family(),
        key.try_get_as_bytes()?,
    )?)))
}

/// HMAC-SHA-256 keyed with the secret, both signer and verifier.
struct Hs256(HmacSha256);

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant time: how much of a forged tag matched must not show in the timing.
        mac.verify_slice(tag).map_err(signature::Error::from_source)
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Header, Validation};
    use serde_json::{Value, json};

    /// The example token of RFC 7519 style tooling (jwt.io), signed with HS256.
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
        SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    const SECRET: &[u8] = b"your-256-bit-secret";

    fn lenient() -> Validation {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        v
    }

    #[test]
    fn signs_and_checks_a_known_token() {
        install();
        let claims = json!({"sub": "1234567890", "name": "John Doe", "iat": 1516239022});
        // serde_json keeps object keys sorted; the known token's claims are in the order
        // written, so compare the signature of the known token's own signing input.
        let decoded =
            jsonwebtoken::decode::<Value>(TOKEN, &DecodingKey::from_secret(SECRET), &lenient())
                .expect("the known token checks");
        assert_eq!(decoded.claims, claims);

        let (input, tag) = TOKEN.rsplit_once('.').unwrap();
        let signed = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(signed, tag);

        let round = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let back =
            jsonwebtoken::decode::<Value>(&round, &DecodingKey::from_secret(SECRET), &lenient())
                .unwrap();
        assert_eq!(back.claims, claims);
    }

    #[test]
    fn refuses_a_wrong_secret_a_changed_token_and_other_algorithms() {
        install();
        let wrong = jsonwebtoken::decode::<Value>(
            TOKEN,
            &DecodingKey::from_secret(b"another-secret"),
            &lenient(),
        )
        .unwrap_err();
        assert_eq!(*wrong.kind(), ErrorKind::InvalidSignature);

        let (input, tag) = TOKEN.rsplit_once('.').unwrap();
        let changed = format!("{input}.T{}", &tag[1..]);
        let err =
            jsonwebtoken::decode::<Value>(&changed, &DecodingKey::from_secret(SECRET), &lenient())
                .unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::InvalidSignature);

        for algorithm in [Algorithm::HS384, Algorithm::HS512, Algorithm::RS256] {
            let err = jsonwebtoken::encode(
                &Header::new(algorithm),
                &json!({}),
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap_err();
            assert_eq!(*err.kind(), ErrorKind::InvalidAlgorithm, "{algorithm:?}");
        }
    }
}
