//! The OAuth2 JWT-bearer grant of a Google service account (RFC 7523), made in the guest: the
//! service-account JSON the host grants as `access_blob`, the RS256-signed assertion, and the
//! token endpoint's answer. Pure functions, so they run and are tested natively.
//!
//! RS256 is RSASSA-PKCS1-v1_5 with SHA-256: deterministic, so signing draws no randomness.

use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use sha2::Sha256;

/// Read and write access to objects, nothing about buckets or IAM.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Where Google's token endpoint is when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// How long an assertion is valid; Google accepts at most an hour.
const ASSERTION_LIFETIME: u64 = 3600;

/// The fields of a service-account key file this plugin uses.
#[derive(Clone, Debug, Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    DEFAULT_TOKEN_URI.to_owned()
}

impl ServiceAccount {
    /// Parses the key file; the error never quotes it (it holds the private key).
    pub fn parse(json: &str) -> Result<ServiceAccount, String> {
        let account: ServiceAccount = serde_json::from_str(json).map_err(|e| {
            format!(
                "access_blob is not a service-account key (JSON with client_email, private_key): \
                 {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        if account.client_email.is_empty() {
            return Err("access_blob has an empty client_email".into());
        }
        Ok(account)
    }

    /// The signed assertion for the grant, valid from `now` (seconds since the epoch).
    pub fn assertion(&self, now: u64) -> Result<String, String> {
        let key = private_key(&self.private_key)?;
        let header = r#"{"alg":"RS256","typ":"JWT"}"#;
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let signing_input = format!(
            "{}.{}",
            base64url(header.as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = SigningKey::<Sha256>::new(key)
            .try_sign(signing_input.as_bytes())
            .map_err(|e| format!("signing the token request failed: {e}"))?;
        Ok(format!(
            "{signing_input}.{}",
            base64url(&signature.to_bytes())
        ))
    }
}

/// A PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, what Google issues) or PKCS#1
/// (`BEGIN RSA PRIVATE KEY`).
fn private_key(pem: &str) -> Result<RsaPrivateKey, String> {
    // Key files carry `\n` escapes that JSON decoding has already turned into newlines; a key
    // pasted into YAML by hand may still have them literally.
    let pem = pem.replace("\\n", "\n");
    RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|_| {
            "access_blob's private_key is not an RSA private key in PEM (PKCS#8 or PKCS#1)"
                .to_owned()
        })
}

/// The form body of the token request.
pub fn token_request_body(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

/// An access token and how many seconds it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub expires_in: u64,
}

/// Parses the token endpoint's success answer.
pub fn parse_token(body: &[u8]) -> Result<Token, String> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the token endpoint's answer has no access_token: {e}"))?;
    if a.access_token.is_empty() {
        return Err("the token endpoint answered an empty access_token".into());
    }
    Ok(Token {
        access_token: a.access_token,
        // Google's tokens live an hour; a server that does not say is taken at a minute.
        expires_in: a.expires_in.unwrap_or(60),
    })
}

/// Base64 with the URL-safe alphabet and no padding (JWS compact serialization).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPublicKey;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::signature::Verifier;

    /// A throwaway key made with `openssl genpkey -algorithm RSA` for these tests only (it
    /// opens nothing): generating one here would pull an RNG crate into the plugin's tests.
    const TEST_KEY: &str = include_str!("../testdata/test-key.pem");

    fn decode_base64url(s: &str) -> Vec<u8> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'-' => 62,
                b'_' => 63,
                _ => panic!("not base64url: {c}"),
            }
        };
        let mut out = Vec::new();
        for chunk in s.as_bytes().chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= value(c) << (18 - 6 * i);
            }
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }

    #[test]
    fn base64url_matches_rfc4648_without_padding() {
        // RFC 4648 section 10, with `=` dropped; and the two characters that differ from
        // standard base64.
        for (plain, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain.as_bytes()), want, "{plain:?}");
            assert_eq!(decode_base64url(want), plain.as_bytes());
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    fn account(token_uri: &str) -> ServiceAccount {
        let json = serde_json::json!({
            "type": "service_account",
            "client_email": "shoal@project.iam.gserviceaccount.com",
            "private_key": TEST_KEY,
            "token_uri": token_uri,
        });
        ServiceAccount::parse(&json.to_string()).unwrap()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_with_the_grant_claims() {
        let sa = account("http://127.0.0.1:1/token");
        let jwt = sa.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let header: serde_json::Value =
            serde_json::from_slice(&decode_base64url(parts[0])).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        let claims: serde_json::Value =
            serde_json::from_slice(&decode_base64url(parts[1])).unwrap();
        assert_eq!(claims["iss"], "shoal@project.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "http://127.0.0.1:1/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_003_600u64);

        // The signature verifies with the public half over `header.claims`, and not over
        // anything else.
        let key = private_key(TEST_KEY).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(RsaPublicKey::from(&key));
        let signature = Signature::try_from(decode_base64url(parts[2]).as_slice()).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(input.as_bytes(), &signature).unwrap();
        assert!(
            verifier
                .verify(format!("{input}x").as_bytes(), &signature)
                .is_err()
        );
        // Deterministic: the same claims sign to the same token.
        assert_eq!(sa.assertion(1_700_000_000).unwrap(), jwt);
    }

    #[test]
    fn pkcs1_keys_and_escaped_newlines_are_accepted() {
        let key = private_key(TEST_KEY).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(private_key(&pkcs8.replace('\n', "\\n")).is_ok());
        let pkcs1 = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&key, LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(private_key(&pkcs1).is_ok());
    }

    #[test]
    fn bad_keys_and_blobs_are_refused_without_quoting_them() {
        let mut sa = account("http://x/token");
        sa.private_key =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".into();
        let err = sa.assertion(0).unwrap_err();
        assert!(err.contains("not an RSA private key"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let err = ServiceAccount::parse(r#"{"private_key": "secret"}"#).unwrap_err();
        assert!(err.contains("client_email"), "{err}");
        assert!(!err.contains("secret\""), "{err}");
        let defaulted = ServiceAccount::parse(r#"{"client_email":"a@b","private_key":"k"}"#);
        assert_eq!(defaulted.unwrap().token_uri, DEFAULT_TOKEN_URI);
    }

    #[test]
    fn token_answers_parse() {
        let t =
            parse_token(br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#)
                .unwrap();
        assert_eq!(
            t,
            Token {
                access_token: "ya29.x".into(),
                expires_in: 3599
            }
        );
        assert!(parse_token(br#"{"error":"invalid_grant"}"#).is_err());
        assert!(parse_token(br#"{"access_token":""}"#).is_err());
        assert!(token_request_body("a.b.c").ends_with("&assertion=a.b.c"));
    }
}
