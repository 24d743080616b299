//! Bearer tokens: JWTs signed with HMAC-SHA256 by this registry for itself, carrying Docker's
//! `access` claim. The registry both issues and checks them, so a shared secret suffices and
//! clients never look inside (Docker's spec treats the token as opaque).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::scope::AccessEntry;

type HmacSha256 = Hmac<Sha256>;

/// The JOSE header of every token; a token with any other header is refused, so no
/// `alg: none` trick applies.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// A token's claims: who (`sub`, empty for an anonymous caller), for which service, until
/// when, and what it grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer: the service.
    pub iss: String,
    /// The user the token was issued to; empty for anonymous.
    pub sub: String,
    /// The audience: the service.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// A unique id, so two tokens are never equal.
    pub jti: String,
    /// What the token grants.
    pub access: Vec<AccessEntry>,
}

/// Why a token was refused; each is a 401 with `error="invalid_token"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or not our header, or claims that are not JSON.
    #[error("the token is malformed")]
    Malformed,
    /// The signature does not match: forged, altered, or signed with another key.
    #[error("the token's signature does not match")]
    BadSignature,
    /// Past `exp`, or before `nbf`.
    #[error("the token has expired")]
    Expired,
    /// Issued for another service.
    #[error("the token was issued for another service")]
    WrongAudience,
}

/// Signs and checks tokens with one key for one service.
pub struct TokenKey {
    key: Vec<u8>,
    service: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// A key for `service`; the caller has checked the key's length.
    pub fn new(key: Vec<u8>, service: impl Into<String>) -> Self {
        TokenKey {
            key,
            service: service.into(),
        }
    }

    /// The service tokens are issued for.
    pub fn service(&self) -> &str {
        &self.service
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; the error case cannot happen.
        HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// A token for `sub` granting `access` from `now` for `lifetime` seconds.
    pub fn issue(&self, sub: &str, access: Vec<AccessEntry>, now: u64, lifetime: u64) -> String {
        let claims = Claims {
            iss: self.service.clone(),
            sub: sub.to_owned(),
            aud: self.service.clone(),
            exp: now.saturating_add(lifetime),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
        };
        // Claims of strings and numbers always serialize.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(json)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The claims of a token this key signed, for this service, valid at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(claims.as_bytes());
        // Constant-time comparison, before anything of the payload is trusted.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        if header != HEADER.as_bytes() {
            return Err(TokenError::Malformed);
        }
        let claims = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| TokenError::Malformed)?;
        if claims.aud != self.service {
            return Err(TokenError::WrongAudience);
        }
        if now >= claims.exp || now < claims.nbf {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// `secs` since the Unix epoch as RFC 3339 UTC (`2026-01-02T03:04:05Z`), the form of the
/// token response's `issued_at`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(vec![42; 32], "svc")
    }

    fn pull_a() -> Vec<AccessEntry> {
        vec![AccessEntry {
            kind: "repository".into(),
            name: "a".into(),
            actions: vec!["pull".into()],
        }]
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let token = key().issue("alice", pull_a(), 1_000, 300);
        let claims = key().verify(&token, 1_000).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.aud, "svc");
        assert_eq!(claims.access, pull_a());
        assert_eq!((claims.iat, claims.exp), (1_000, 1_300));
        assert!(key().verify(&token, 1_299).is_ok());
        assert_eq!(key().verify(&token, 1_300), Err(TokenError::Expired));
        assert_eq!(key().verify(&token, 999), Err(TokenError::Expired));
        assert_ne!(token, key().issue("alice", pull_a(), 1_000, 300));
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let token = key().issue("alice", pull_a(), 1_000, 300);
        let other_key = TokenKey::new(vec![43; 32], "svc");
        assert_eq!(
            other_key.verify(&token, 1_000),
            Err(TokenError::BadSignature)
        );
        let other_service = TokenKey::new(vec![42; 32], "elsewhere");
        assert_eq!(
            other_service.verify(&token, 1_000),
            Err(TokenError::WrongAudience)
        );

        // Grant push by rewriting the claims: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(claims.replace("\"pull\"", "\"push\""));
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(
            key().verify(&tampered, 1_000),
            Err(TokenError::BadSignature)
        );

        // `alg: none` with no signature.
        let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none}.{}.", parts[1]);
        assert!(key().verify(&unsigned, 1_000).is_err());

        for junk in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &format!("{}.{}", parts[0], parts[1]),
        ] {
            assert_eq!(
                key().verify(junk, 1_000),
                Err(TokenError::Malformed),
                "{junk}"
            );
        }
    }

    #[test]
    fn formats_issue_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
    }
}
