//! AWS Signature Version 4, for any plugin that talks to an AWS API (S3, ECR, ...).
//!
//! Written out here rather than taken from an AWS SDK: those send and receive every body
//! through their own client, so a blob would cross guest memory (about half native speed,
//! DESIGN.md "Measured"). A plugin signs only the request head (a blob body as
//! [`UNSIGNED_PAYLOAD`]), splices the host's stream into the `wasi:http` body and hands
//! download bodies back to the host untouched. It keeps components small too (`hmac` +
//! `sha2`).
//!
//! Pure functions over strings and a clock reading: tested natively against AWS's worked
//! examples (the S3 documentation's and the `aws-sig-v4-test-suite`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::url::percent_encode;

/// The payload hash S3 accepts in place of the body's SHA-256 (`x-amz-content-sha256`).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// An access key pair, with a session token for temporary credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `aws_access_key_id`.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: String,
    /// `aws_session_token`, sent (and signed) as `x-amz-security-token`.
    pub session_token: Option<String>,
}

/// Shows the key id only: the secret and the token must not reach a log line.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where a signature is valid: the region and the service (`s3`, `ecr`, ...) of the key
/// derivation and the credential scope.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// `us-east-1`, ...
    pub region: &'a str,
    /// The signing name of the service: `s3`, `ecr`, ...
    pub service: &'a str,
}

/// One request's head, as it goes on the wire: what SigV4 covers.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `PUT`, `POST`, ...
    pub method: &'a str,
    /// The path, already percent-encoded exactly as sent (see [`encode_path`]).
    pub path: &'a str,
    /// Query parameters, not encoded: signed (and sent, see [`canonical_query`]) in sorted,
    /// encoded form.
    pub query: &'a [(&'a str, &'a str)],
    /// `host` (the authority as sent) and every other header to sign, names in any case.
    /// `x-amz-date` and `x-amz-security-token` are added by [`sign`].
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body ([`sha256_hex`]), or [`UNSIGNED_PAYLOAD`] where the service
    /// takes it.
    pub payload_hash: &'a str,
}

/// The headers to add to `request` for it to pass: `x-amz-date`, `x-amz-security-token`
/// when the credentials have a session token, and `authorization`, in that order. `amz_date`
/// is the signing time as [`amz_date`] writes it.
pub fn sign(
    credentials: &Credentials,
    scope: Scope<'_>,
    amz_date: &str,
    request: &Request<'_>,
) -> Vec<(String, String)> {
    let mut added = vec![("x-amz-date".to_owned(), amz_date.to_owned())];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_owned(), token.clone()));
    }
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), collapse_spaces(value)))
        .chain(added.iter().cloned())
        .collect();
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        canonical_query(request.query),
        request.payload_hash
    );
    let date = &amz_date[..amz_date.len().min(8)];
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = [date, scope.region, scope.service, "aws4_request"]
        .iter()
        .fold(
            format!("AWS4{}", credentials.secret_access_key).into_bytes(),
            |key, part| hmac(&key, part.as_bytes()),
        );
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    added.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    added
}

/// `YYYYMMDD'T'HHMMSS'Z'` (UTC) for `unix_seconds`: the form `x-amz-date` takes.
pub fn amz_date(unix_seconds: u64) -> String {
    // At most 2^64 / 86400 days: an i64 holds it.
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian (year, month, day) of a day
/// count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Query parameters percent-encoded (everything but the unreserved characters) and sorted
/// by name, then value, joined as `k=v&k=v`: the canonical query of the signature, and the
/// query string to send, so the two cannot differ.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (percent_encode(k, ""), percent_encode(v, "")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// An object path as S3 wants it on the wire and in the signature: each byte encoded once,
/// slashes kept.
pub fn encode_path(path: &str) -> String {
    percent_encode(path, "/")
}

/// Hex SHA-256 of a small body held in memory (an XML or JSON request), for
/// [`Request::payload_hash`].
pub fn sha256_hex(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// Header values as signed: surrounding spaces trimmed, inner runs collapsed to one.
fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // `new_from_slice` fails only for MACs with a fixed key length; HMAC takes any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization(headers: Vec<(String, String)>) -> String {
        headers
            .into_iter()
            .find(|(name, _)| name == "authorization")
            .map(|(_, value)| value)
            .unwrap_or_default()
    }

    /// The worked examples of the S3 SigV4 header-signing documentation: `examplebucket`
    /// in us-east-1 at 2013-05-24T00:00:00Z.
    mod s3_documentation {
        use super::*;

        const DATE: &str = "20130524T000000Z";
        const HOST: (&str, &str) = ("Host", "examplebucket.s3.amazonaws.com");

        fn credentials() -> Credentials {
            Credentials {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            }
        }

        fn s3_authorization(path: &str, query: &[(&str, &str)], extra: &[(&str, &str)]) -> String {
            let empty = sha256_hex(b"");
            let mut headers = vec![HOST, ("x-amz-content-sha256", empty.as_str())];
            headers.extend_from_slice(extra);
            let request = Request {
                method: "GET",
                path,
                query,
                headers: &headers,
                payload_hash: &empty,
            };
            let scope = Scope {
                region: "us-east-1",
                service: "s3",
            };
            authorization(sign(&credentials(), scope, DATE, &request))
        }

        /// "Example: GET Object".
        #[test]
        fn signs_the_documented_get_object_example() {
            assert_eq!(
                s3_authorization("/test.txt", &[], &[("Range", "bytes=0-9")]),
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            );
        }

        /// "Example: GET Bucket Lifecycle" (a query parameter without a value).
        #[test]
        fn signs_the_documented_lifecycle_example() {
            let auth = s3_authorization("/", &[("lifecycle", "")], &[]);
            assert!(
                auth.ends_with(
                    "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
                ),
                "{auth}"
            );
        }

        /// "Example: GET Bucket (List Objects)": two parameters, sorted.
        #[test]
        fn signs_the_documented_list_example() {
            let query = [("prefix", "J"), ("max-keys", "2")];
            let auth = s3_authorization("/", &query, &[]);
            assert!(
                auth.ends_with(
                    "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
                ),
                "{auth}"
            );
            assert_eq!(canonical_query(&query), "max-keys=2&prefix=J");
        }
    }

    /// Vectors from AWS's "Signature Version 4 test suite" (aws-sig-v4-test-suite): every case
    /// signs for `AKIDEXAMPLE` in us-east-1, service `service`, at 2015-08-30 12:36:00 UTC.
    mod aws_test_suite {
        use super::*;

        const DATE: &str = "20150830T123600Z";
        const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
        const SCOPE: Scope<'static> = Scope {
            region: "us-east-1",
            service: "service",
        };

        fn suite() -> Credentials {
            Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            }
        }

        fn suite_authorization(
            method: &str,
            query: &[(&str, &str)],
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> String {
            let payload_hash = sha256_hex(body);
            let request = Request {
                method,
                path: "/",
                query,
                headers,
                payload_hash: &payload_hash,
            };
            authorization(sign(&suite(), SCOPE, DATE, &request))
        }

        #[test]
        fn get_vanilla() {
            assert_eq!(
                suite_authorization("GET", &[], &[HOST], b""),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            );
        }

        #[test]
        fn post_vanilla() {
            assert!(suite_authorization("POST", &[], &[HOST], b"").ends_with(
                "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            ));
        }

        #[test]
        fn get_vanilla_query_order_key_case() {
            let query = [("Param2", "value2"), ("Param1", "value1")];
            assert!(suite_authorization("GET", &query, &[HOST], b"").ends_with(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            ));
        }

        #[test]
        fn post_x_www_form_urlencoded() {
            let headers = [("Content-Type", "application/x-www-form-urlencoded"), HOST];
            assert_eq!(
                suite_authorization("POST", &[], &headers, b"Param1=value1"),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            );
        }

        #[test]
        fn a_session_token_is_sent_and_signed() {
            let mut credentials = suite();
            credentials.session_token = Some("tok".into());
            let payload_hash = sha256_hex(b"");
            let request = Request {
                method: "GET",
                path: "/",
                query: &[],
                headers: &[HOST],
                payload_hash: &payload_hash,
            };
            let headers = sign(&credentials, SCOPE, DATE, &request);
            assert!(headers.contains(&("x-amz-security-token".into(), "tok".into())));
            let auth = authorization(headers);
            assert!(
                auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"),
                "{auth}"
            );
        }
    }

    #[test]
    fn dates_format_as_amz_date_in_utc() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        // 2024-02-29 23:59:59, a leap day.
        assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
    }

    #[test]
    fn paths_encode_each_byte_once_and_keep_slashes() {
        assert_eq!(encode_path("a b/c+d%e=f"), "a%20b/c%2Bd%25e%3Df");
        assert_eq!(encode_path("ü/~x"), "%C3%BC/~x");
        assert_eq!(canonical_query(&[("k", "a/b")]), "k=a%2Fb");
    }
}
