//! AWS Signature Version 4 for the one AWS call this plugin makes (ECR
//! `GetAuthorizationToken`). Pure: the clock comes in as an argument, so the signer is
//! checked natively against AWS's published test suite.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::reference::{hex, percent_encode};

/// AWS credentials as the host passes them (from `auth:` or its environment).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The parts of a request that SigV4 covers.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path, already URI-encoded as it goes on the wire.
    pub path: &'a str,
    /// The query string without `?`, as `k=v&k=v` (decoded values are re-encoded here).
    pub query: &'a str,
    /// Headers to sign; `host` must be among them. Names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// What to add to the request: `x-amz-date`, `x-amz-security-token` when there is a session
/// token, and `authorization`.
pub fn sign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    request: &Request<'_>,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), canonical_value(v)))
        .collect();
    headers.push(("x-amz-date".into(), amz_date.into()));
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        canonical_query(request.query),
        hex(&Sha256::digest(request.body)),
    );
    let date = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [date, region, service, "aws4_request"].iter().fold(
        format!("AWS4{}", credentials.secret_access_key).into_bytes(),
        |key, part| hmac(&key, part.as_bytes()),
    );
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    let mut out = vec![("x-amz-date".to_owned(), amz_date.to_owned())];
    if let Some(token) = &credentials.session_token {
        out.push(("x-amz-security-token".into(), token.clone()));
    }
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    out
}

/// `YYYYMMDD'T'HHMMSS'Z'` for `unix_seconds`, the form `x-amz-date` takes.
pub fn amz_date(unix_seconds: u64) -> String {
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

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day count since
/// 1970-01-01.
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

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Header values: surrounding spaces trimmed, inner runs of spaces collapsed to one.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Query parameters encoded and sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_encode(k), percent_encode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    //! Vectors from AWS's "Signature Version 4 test suite" (aws-sig-v4-test-suite): every case
    //! signs for `AKIDEXAMPLE` in us-east-1, service `service`, at 2015-08-30 12:36:00 UTC.

    use super::*;

    fn suite() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    const DATE: &str = "20150830T123600Z";
    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");

    fn authorization(request: &Request<'_>) -> String {
        let headers = sign(&suite(), "us-east-1", "service", DATE, request);
        headers
            .into_iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1
    }

    #[test]
    fn get_vanilla() {
        let r = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &[HOST],
            body: b"",
        };
        assert_eq!(
            authorization(&r),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn post_vanilla() {
        let r = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[HOST],
            body: b"",
        };
        assert!(authorization(&r).ends_with(
            "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ));
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let r = Request {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &[HOST],
            body: b"",
        };
        assert!(authorization(&r).ends_with(
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ));
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let r = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[("Content-Type", "application/x-www-form-urlencoded"), HOST],
            body: b"Param1=value1",
        };
        assert_eq!(
            authorization(&r),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let mut c = suite();
        c.session_token = Some("tok".into());
        let r = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &[HOST],
            body: b"",
        };
        let headers = sign(&c, "us-east-1", "service", DATE, &r);
        assert!(headers.contains(&("x-amz-security-token".into(), "tok".into())));
        let auth = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
    }

    #[test]
    fn dates_format_as_amz_date() {
        assert_eq!(amz_date(1_440_938_160), DATE);
        assert_eq!(amz_date(0), "19700101T000000Z");
        // 2024-02-29 23:59:59, a leap day.
        assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
    }
}
