//! The HTTP side of access control: the middleware in front of the registry API, the token
//! endpoint, and the one place refusals become responses (401 with a challenge, 429).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::scope::{self, Actions, Need, Required, Scope};
use super::token::rfc3339;
use super::{Access, Caller, Refusal, retry_after_secs, unix_now};
use crate::api::{form_pairs, route};
use crate::error::{ErrorCode, RegistryError};

/// Largest `POST /token` form accepted; a real one is a few hundred bytes.
const MAX_TOKEN_FORM: usize = 64 * 1024;

/// The client's address, as `ConnectInfo` reports it; all clients share one throttle
/// without it.
fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| {
            c.0.ip().to_canonical()
        })
}

/// Checks a request against the access it needs, then passes it on.
pub(crate) async fn guard(
    State(access): State<Arc<Access>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == "/token" {
        return next.run(req).await;
    }
    let route = route::parse(path).ok().and_then(Result::ok);
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_pairs(q).collect())
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mount_from = param("mount").and(param("from"));
    let required = scope::required(req.method(), route.as_ref(), mount_from);
    let caller = match access.authenticate(req.headers(), client_ip(&req)).await {
        Ok(caller) => caller,
        Err(refusal) => return refused(&access, req.headers(), &required, refusal),
    };
    if !required
        .needs
        .iter()
        .all(|need| access.allows(&caller, need))
    {
        return lacking(&access, req.headers(), &required, &caller);
    }
    if let Some(from) = &required.mount_from
        && !access.actions_of(&caller, from).contains(Actions::PULL)
    {
        // No pull on the source: the mount is dropped and the client gets a plain upload
        // session (202), as the spec allows, rather than learning what `from` holds.
        tracing::debug!(
            from = from.as_str(),
            "mount without pull on its source: plain upload"
        );
        drop_mount(req.uri_mut());
    }
    next.run(req).await
}

/// Removes `mount` and `from` from the request's query.
fn drop_mount(uri: &mut Uri) {
    let Some(query) = uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            key != "mount" && key != "from"
        })
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    if let Ok(rebuilt) = Uri::from_parts(parts) {
        *uri = rebuilt;
    }
}

/// `GET /token?service=...&scope=...`: Docker's token endpoint. Basic credentials make the
/// caller a user; none make it anonymous, which is granted pull on `anonymous_pull` only.
pub(crate) async fn token_get(State(access): State<Arc<Access>>, req: Request) -> Response {
    let client = client_ip(&req);
    let caller = match super::credentials(req.headers()) {
        super::Credentials::Basic(user, password) => {
            match access.login(&user, &password, client).await {
                Ok(()) => Caller::User(user),
                Err(refusal) => return login_refused(&access, refusal),
            }
        }
        super::Credentials::Malformed => return login_refused(&access, Refusal::BadLogin),
        // A client re-sending its bearer token here is asking anew, as anyone would.
        super::Credentials::None | super::Credentials::Bearer(_) => Caller::Anonymous,
    };
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_pairs(q).collect())
        .unwrap_or_default();
    let scopes = Scope::parse_all(
        query
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    token_response(&access, &caller, &scopes, false)
}

/// `POST /token` with an OAuth2 form (`grant_type=password`), which containerd tries before
/// `GET`. No refresh tokens are issued, so `grant_type=refresh_token` is refused with 400,
/// after which clients fall back to `GET`.
pub(crate) async fn token_post(State(access): State<Arc<Access>>, req: Request) -> Response {
    let client = client_ip(&req);
    let body = match axum::body::to_bytes(req.into_body(), MAX_TOKEN_FORM).await {
        Ok(body) => body,
        Err(_) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    };
    let form: Vec<(String, String)> = form_pairs(&String::from_utf8_lossy(&body)).collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("password") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let (Some(user), Some(password)) = (field("username"), field("password")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if let Err(refusal) = access.login(user, password, client).await {
        return login_refused(&access, refusal);
    }
    let caller = Caller::User(user.to_owned());
    let scopes = Scope::parse_all(
        form.iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    token_response(&access, &caller, &scopes, true)
}

/// Issues the token: `{token, access_token, expires_in, issued_at}` (and the granted `scope`
/// for the OAuth2 form).
fn token_response(access: &Access, caller: &Caller, requested: &[Scope], oauth: bool) -> Response {
    let granted = access.grant(caller, requested);
    let now = unix_now();
    let (token, expires_in) = access.issue(caller, &granted, now);
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": rfc3339(now),
    });
    if oauth {
        let scope: Vec<String> = granted.iter().map(ToString::to_string).collect();
        body["scope"] = json!(scope.join(" "));
    }
    json_response(StatusCode::OK, &body)
}

/// A JSON body with its content type; `no-store`, since token answers must not be cached.
fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A refused login at the token endpoint: 401 (docker shows the message), or 429.
fn login_refused(access: &Access, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Throttled(t) => throttled(t),
        Refusal::BadLogin | Refusal::BadToken(_) => {
            let challenge = format!("Basic realm=\"{}\"", access.service());
            RegistryError::new(ErrorCode::Unauthorized, "incorrect username or password")
                .with_header(header::WWW_AUTHENTICATE, header_value(&challenge))
                .into_response()
        }
    }
}

fn oauth_error(status: StatusCode, error: &'static str) -> Response {
    json_response(status, &json!({ "error": error }))
}

/// A refused credential on the API: 429 when throttled, else 401 with a challenge.
fn refused(
    access: &Access,
    headers: &HeaderMap,
    required: &Required,
    refusal: Refusal,
) -> Response {
    match refusal {
        Refusal::Throttled(t) => with_api_version(throttled(t)),
        Refusal::BadLogin => challenge(
            access,
            headers,
            required,
            None,
            "incorrect username or password",
        ),
        Refusal::BadToken(e) => challenge(
            access,
            headers,
            required,
            Some("invalid_token"),
            &e.to_string(),
        ),
    }
}

/// A caller without the access the request needs. Anonymous callers are told to
/// authenticate; a token lacking a scope gets distribution's `insufficient_scope` (also 401,
/// so docker and containerd fetch a token with the scope and retry).
fn lacking(access: &Access, headers: &HeaderMap, required: &Required, caller: &Caller) -> Response {
    match caller {
        Caller::Anonymous => challenge(access, headers, required, None, "authentication required"),
        Caller::Token(sub, _) => {
            tracing::debug!(
                user = sub.as_str(),
                "a token lacks the access a request needs"
            );
            challenge(
                access,
                headers,
                required,
                Some("insufficient_scope"),
                "the token does not grant this access",
            )
        }
        // Users may do everything; kept total all the same.
        Caller::User(user) => with_api_version(
            RegistryError::new(ErrorCode::Denied, format!("{user} may not do this"))
                .into_response(),
        ),
    }
}

/// 401 `UNAUTHORIZED` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, and the
/// access it lacks as the error's detail, as distribution sends it.
fn challenge(
    access: &Access,
    headers: &HeaderMap,
    required: &Required,
    error: Option<&str>,
    message: &str,
) -> Response {
    let scopes = required.challenge_scopes();
    let mut value = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        access.realm(headers),
        access.service()
    );
    if !scopes.is_empty() {
        let list: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        value.push_str(&format!(",scope=\"{}\"", list.join(" ")));
    }
    if let Some(error) = error {
        value.push_str(&format!(",error=\"{error}\""));
    }
    let detail: Vec<serde_json::Value> = required
        .needs
        .iter()
        .filter_map(|need| match need {
            Need::Scope(scope) => Some(scope),
            Need::Authenticated => None,
        })
        .flat_map(|scope| {
            let entry = super::scope::AccessEntry::from(scope);
            entry
                .actions
                .into_iter()
                .map(move |action| json!({ "Type": entry.kind, "Name": entry.name, "Action": action }))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut err = RegistryError::new(ErrorCode::Unauthorized, message)
        .with_header(header::WWW_AUTHENTICATE, header_value(&value));
    if !detail.is_empty() {
        err = err.with_detail(json!(detail));
    }
    with_api_version(err.into_response())
}

/// 429 `TOOMANYREQUESTS` with `Retry-After`.
fn throttled(t: super::Throttled) -> Response {
    let secs = retry_after_secs(t.retry_after);
    RegistryError::new(
        ErrorCode::TooManyRequests,
        format!("too many failed logins from this address; try again in {secs} s"),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    .into_response()
}

fn with_api_version(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// A header value from text built of validated parts (the realm's host is filtered, the
/// service has no quotes); an unexpected character yields an empty value, never a panic.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
