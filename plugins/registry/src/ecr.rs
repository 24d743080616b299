//! `security.credsStore: ecr-login`: registry credentials from ECR's `GetAuthorizationToken`,
//! as Docker's `docker-credential-ecr-login` helper gets them, signed with SigV4 here because
//! no helper program can run inside the sandbox.
//!
//! The AWS credentials arrive as secrets (`aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token`): from the backend's `auth:` entry, or from the host's environment,
//! which the host passes for `ecr-login` backends.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;
use shoal_plugin_sdk::backend::Error;
use shoal_plugin_sdk::sigv4::{self, Credentials, Scope};
use shoal_plugin_sdk::url::Url;

/// The JSON 1.1 target of the call.
pub const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

/// A registry login from ECR: user `AWS`, the password a 12-hour token.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// Always `AWS` today; taken from the token rather than assumed.
    pub username: String,
    /// The token.
    pub password: String,
    /// When ECR says the token stops working, in seconds since the epoch.
    pub expires_at: u64,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The ECR API endpoint of `region`.
pub fn endpoint(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://api.ecr.{region}.amazonaws.com.cn/")
    } else {
        format!("https://api.ecr.{region}.amazonaws.com/")
    }
}

/// The signed request: (headers, body). `now` is seconds since the epoch.
pub fn request(
    credentials: &Credentials,
    region: &str,
    url: &Url,
    now: u64,
) -> (Vec<(String, String)>, Vec<u8>) {
    let body = b"{}".to_vec();
    let fixed = [
        ("content-type", "application/x-amz-json-1.1"),
        ("host", url.authority.as_str()),
        ("x-amz-target", TARGET),
    ];
    let (path, query) = url
        .path_with_query
        .split_once('?')
        .unwrap_or((&url.path_with_query, ""));
    // The endpoint's own query (none for ECR's, maybe one for a configured endpoint), as
    // written: the signer encodes each part.
    let query: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let signed = sigv4::sign(
        credentials,
        Scope {
            region,
            service: "ecr",
        },
        &sigv4::amz_date(now),
        &sigv4::Request {
            method: "POST",
            path,
            query: &query,
            headers: &fixed,
            payload_hash: &sigv4::sha256_hex(&body),
        },
    );
    let mut headers: Vec<(String, String)> = fixed
        .iter()
        .filter(|(n, _)| *n != "host")
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    headers.extend(signed);
    (headers, body)
}

#[derive(Deserialize)]
struct Response {
    #[serde(rename = "authorizationData")]
    data: Vec<AuthorizationData>,
}

#[derive(Deserialize)]
struct AuthorizationData {
    #[serde(rename = "authorizationToken")]
    token: String,
    /// Seconds since the epoch; the AWS JSON protocol writes timestamps as numbers.
    #[serde(rename = "expiresAt")]
    expires_at: Option<f64>,
}

/// Reads the login out of a `GetAuthorizationToken` answer: the token is base64 of
/// `user:password`.
pub fn parse_response(body: &[u8]) -> Result<Login, Error> {
    let bad = |why: &str| Error::Other(format!("ECR GetAuthorizationToken: {why}"));
    let response: Response = serde_json::from_slice(body)
        .map_err(|e| bad(&format!("the answer is not the expected JSON: {e}")))?;
    let data = response
        .data
        .into_iter()
        .next()
        .ok_or_else(|| bad("no authorizationData in the answer"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.token.trim())
        .map_err(|_| bad("authorizationToken is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad("authorizationToken is not text"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| bad("authorizationToken is not user:password"))?;
    // Without an expiry, assume ECR's documented 12 hours.
    let expires_at = match data.expires_at {
        Some(t) if t.is_finite() && t > 0.0 => t as u64,
        _ => now() + 12 * 3600,
    };
    Ok(Login {
        username: username.to_owned(),
        password: password.to_owned(),
        expires_at,
    })
}

/// Seconds since the epoch by the wall clock.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_base64_user_colon_password() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:secret:with:colons");
        let body = format!(
            r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":1.7E9,"proxyEndpoint":"https://x"}}]}}"#
        );
        let login = parse_response(body.as_bytes()).unwrap();
        assert_eq!(login.username, "AWS");
        assert_eq!(login.password, "secret:with:colons");
        assert_eq!(login.expires_at, 1_700_000_000);
        assert!(parse_response(br#"{"authorizationData":[]}"#).is_err());
        assert!(parse_response(br#"{"authorizationData":[{"authorizationToken":"!!"}]}"#).is_err());
    }

    #[test]
    fn the_request_is_signed_json_1_1() {
        let credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        let url = Url::parse(&endpoint("eu-west-1")).unwrap();
        assert_eq!(url.authority, "api.ecr.eu-west-1.amazonaws.com");
        let (headers, body) = request(&credentials, "eu-west-1", &url, 1_440_938_160);
        assert_eq!(body, b"{}");
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-target"), Some(TARGET));
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKID/20150830/eu-west-1/ecr/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
            ),
            "{auth}"
        );
        assert_eq!(get("host"), None, "wasi:http sets Host from the authority");
    }
}
