//! `ed25519-nkey` JWTs as nats-server reads them.
//!
//! `base64url(header) . base64url(claims) . base64url(ed25519(header.claims))`,
//! signed by the issuer's nkey. The `jti` is a hash of the claims, so every
//! version of a JWT has a distinct id.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::claims::Claims;

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Why a JWT was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("JWT is not three base64url parts separated by '.'")]
    Shape,
    #[error("JWT part is not valid base64url")]
    Base64,
    #[error("JWT header is not {{\"typ\":\"JWT\",\"alg\":\"ed25519-nkey\"}}")]
    Header,
    #[error("JWT claims do not parse: {0}")]
    Claims(#[source] serde_json::Error),
    #[error("JWT issuer {0:?} is not a valid public nkey")]
    Issuer(String),
    #[error("JWT signature does not verify against its issuer")]
    Signature,
    #[error("signing failed: {0}")]
    Sign(String),
}

fn b64(data: &[u8]) -> String {
    BASE64URL_NOPAD.encode(data)
}

fn unb64(s: &str) -> Result<Vec<u8>, JwtError> {
    // nats tools emit no padding; tolerate it anyway.
    BASE64URL_NOPAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|_| JwtError::Base64)
}

/// Signs `claims` with `signer`: sets `iss` to the signer's public key and
/// `jti` to a hash of the claims, then encodes.
pub fn encode<N: Serialize>(claims: &mut Claims<N>, signer: &KeyPair) -> Result<String, JwtError> {
    claims.iss = signer.public_key();
    claims.jti = String::new();
    let unhashed = serde_json::to_vec(&*claims).map_err(JwtError::Claims)?;
    claims.jti = BASE32_NOPAD.encode(&Sha256::digest(&unhashed));
    let body = serde_json::to_vec(&*claims).map_err(JwtError::Claims)?;
    let signing_input = format!("{}.{}", b64(HEADER.as_bytes()), b64(&body));
    let sig = signer
        .sign(signing_input.as_bytes())
        .map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!("{signing_input}.{}", b64(&sig)))
}

/// Decodes and verifies a JWT: header, claims and the signature by the
/// claimed issuer. Who the issuer is *allowed* to be is the caller's check.
pub fn decode<N: DeserializeOwned>(token: &str) -> Result<Claims<N>, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let header: serde_json::Value =
        serde_json::from_slice(&unb64(h)?).map_err(|_| JwtError::Header)?;
    let alg = header.get("alg").and_then(|a| a.as_str());
    if !matches!(alg, Some("ed25519-nkey") | Some("ed25519")) {
        return Err(JwtError::Header);
    }
    let body = unb64(c)?;
    let sig = unb64(s)?;
    let claims: Claims<N> = serde_json::from_slice(&body).map_err(JwtError::Claims)?;
    let issuer =
        KeyPair::from_public_key(&claims.iss).map_err(|_| JwtError::Issuer(claims.iss.clone()))?;
    let signing_input = &token.trim()[..h.len() + 1 + c.len()];
    issuer
        .verify(signing_input.as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::creds::claims::{Permission, Permissions, UserNats};

    fn user_claims(sub: &str) -> Claims<UserNats> {
        Claims {
            jti: String::new(),
            iat: 1_700_000_000,
            iss: String::new(),
            name: "agent h1".into(),
            sub: sub.into(),
            exp: None,
            nbf: None,
            nats: UserNats::new(
                &Permissions {
                    publish: Permission::allow(["rm.agent.h1.>"]),
                    subscribe: Permission::allow(["rm.cmd.h1"]),
                    responses: None,
                },
                Some("AACCOUNT".into()),
            ),
        }
    }

    #[test]
    fn round_trip_verifies() {
        let signer = KeyPair::new_account();
        let user = KeyPair::new_user();
        let mut claims = user_claims(&user.public_key());
        let token = encode(&mut claims, &signer).unwrap();
        let back: Claims<UserNats> = decode(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.iss, signer.public_key());
        assert!(!back.jti.is_empty());
        // the shape nats-server insists on
        let raw: serde_json::Value =
            serde_json::from_slice(&unb64(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(raw["nats"]["type"], "user");
        assert_eq!(raw["nats"]["version"], 2);
        assert_eq!(raw["nats"]["subs"], -1);
        assert!(raw.get("type").is_none(), "a top-level type marks a v1 JWT");
    }

    #[test]
    fn jti_changes_with_content() {
        let signer = KeyPair::new_account();
        let mut a = user_claims("UA");
        let mut b = user_claims("UB");
        encode(&mut a, &signer).unwrap();
        encode(&mut b, &signer).unwrap();
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn tampering_is_detected() {
        let signer = KeyPair::new_account();
        let mut claims = user_claims("UA");
        let token = encode(&mut claims, &signer).unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        // claims swapped for others (wider permissions), old signature kept
        let mut forged = user_claims("UA");
        forged.nats.publish = Permission::allow([">"]);
        forged.iss = signer.public_key();
        let forged_body = b64(&serde_json::to_vec(&forged).unwrap());
        let bad = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert!(matches!(decode::<UserNats>(&bad), Err(JwtError::Signature)));

        // re-signed by someone else but claiming the original issuer
        let other = KeyPair::new_account();
        let mut c2 = user_claims("UA");
        let token2 = encode(&mut c2, &other).unwrap();
        let p2: Vec<&str> = token2.split('.').collect();
        let bad2 = format!("{}.{}.{}", parts[0], parts[1], p2[2]);
        assert!(matches!(
            decode::<UserNats>(&bad2),
            Err(JwtError::Signature)
        ));

        assert!(matches!(decode::<UserNats>("a.b"), Err(JwtError::Shape)));
        assert!(matches!(
            decode::<UserNats>("!!.b.c"),
            Err(JwtError::Base64)
        ));
    }
}
