//! Credentials in front of any registry router (`shoal dev`, the proxy): htpasswd users
//! (bcrypt), Docker's bearer token flow with a token endpoint the registry serves itself,
//! anonymous pull per namespace, and failed logins throttled per client address.
//!
//! [`protect`] wraps a router. Every request but `/health` and `/token` is mapped to the access
//! it needs ([`scope::required`], over the pure [`crate::api::route::parse`]); a caller without
//! it gets `401 UNAUTHORIZED` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`,
//! the challenge that sends docker, skopeo and containerd to `GET /token` with their
//! credentials. `Authorization: Basic` is accepted on every request too (curl, scripts).

mod guard;
pub mod scope;
mod throttle;
pub mod token;
mod users;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use shoal_config::{
    AccessConfig, HtpasswdError, HtpasswdUsers, MIN_TOKEN_KEY_BYTES, NamespacePattern,
};

use self::scope::{Actions, Grant, Need, Scope};
use self::throttle::{LoginThrottle, Throttled};
use self::token::{TokenError, TokenKey};
pub use self::users::HASH_COST;
use self::users::Users;
use crate::name::RepoName;

/// Why credentials could not be set up; each names the file or key to fix.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The htpasswd file is missing, unreadable or has a bad line.
    #[error("access.htpasswd: {0}")]
    Htpasswd(#[from] HtpasswdError),
    /// The token key file cannot be read.
    #[error("access.token.key_file: cannot read {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The token key file is too short to be a key.
    #[error("access.token.key_file: {} holds {len} bytes; a key needs {MIN_TOKEN_KEY_BYTES} or more", path.display())]
    ShortKey {
        /// The file.
        path: std::path::PathBuf,
        /// Its length.
        len: usize,
    },
    /// bcrypt could not hash (only when the system has no randomness).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Who may do what on one registry listener; built once at start and shared by requests.
pub struct Access {
    users: Users,
    anonymous_pull: Vec<NamespacePattern>,
    key: TokenKey,
    /// Token lifetime, in seconds.
    expiry: u64,
    realm: Option<String>,
    /// The scheme of the derived realm: `https` on a TLS listener.
    scheme: &'static str,
    throttle: LoginThrottle,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("users", &self.users)
            .field("anonymous_pull", &self.anonymous_pull)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A caller, once its credentials are checked.
#[derive(Debug)]
pub(crate) enum Caller {
    /// No credentials: pull on the `anonymous_pull` namespaces, nothing else.
    Anonymous,
    /// An htpasswd user with Basic credentials: everything.
    User(String),
    /// A bearer token issued to a user (`sub`, empty for anonymous): what it grants, plus what
    /// anonymous callers may.
    Token(String, Grant),
}

/// Why credentials were refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Too many failed logins from this address: 429.
    Throttled(Throttled),
    /// Wrong user or password: 401.
    BadLogin,
    /// A bearer token that is not ours, or is no longer valid: 401 with `invalid_token`.
    BadToken(TokenError),
}

impl Access {
    /// The access control `config` describes; `None` when it names no htpasswd file, so
    /// nothing is checked (anyone may push, pull and delete).
    pub fn load(config: &AccessConfig) -> Result<Option<Access>, AccessError> {
        let Some(path) = &config.htpasswd else {
            return Ok(None);
        };
        let users = shoal_config::read_htpasswd(path)?;
        if users.is_empty() {
            tracing::warn!(
                file = %path.display(),
                "the htpasswd file names no user: nobody can push"
            );
        }
        let key = match &config.token.key_file {
            Some(path) => {
                let key = std::fs::read(path).map_err(|source| AccessError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                if (key.len() as u64) < MIN_TOKEN_KEY_BYTES {
                    return Err(AccessError::ShortKey {
                        path: path.clone(),
                        len: key.len(),
                    });
                }
                key
            }
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Ok(Some(Access::new(users, key, config)))
    }

    /// Access for `users`, signing tokens with `key`, with the rest of `config`'s settings
    /// (its `htpasswd` and `key_file` are not read): for tests and embedders that hold the
    /// users already.
    pub fn new(users: HtpasswdUsers, key: Vec<u8>, config: &AccessConfig) -> Access {
        Access {
            users: Users::new(users),
            anonymous_pull: config.anonymous_pull.clone(),
            key: TokenKey::new(key, config.token.service.clone()),
            expiry: config.token.expiry.get().as_secs(),
            realm: config.token.realm.clone(),
            scheme: "http",
            throttle: LoginThrottle::new(
                config.max_failed_logins,
                config.failed_login_window.get(),
            ),
        }
    }

    /// The listener speaks TLS: the derived token realm is `https://`.
    pub fn over_tls(mut self) -> Self {
        self.scheme = "https";
        self
    }

    /// How many htpasswd users there are, for the start-up log line.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The namespaces anyone may pull, for the start-up log line.
    pub fn anonymous_pull(&self) -> &[NamespacePattern] {
        &self.anonymous_pull
    }

    /// The actions an anonymous caller has on `name`.
    fn anonymous_actions(&self, name: &RepoName) -> Actions {
        if self.anonymous_pull.iter().any(|p| p.matches(name.as_str())) {
            Actions::PULL
        } else {
            Actions::NONE
        }
    }

    /// The actions `caller` has on `name`.
    pub(crate) fn actions_of(&self, caller: &Caller, name: &RepoName) -> Actions {
        let anonymous = self.anonymous_actions(name);
        match caller {
            Caller::Anonymous => anonymous,
            Caller::User(_) => Actions::ALL,
            Caller::Token(_, grant) => grant.actions_on(name).union(anonymous),
        }
    }

    /// Whether `caller` meets `need`.
    pub(crate) fn allows(&self, caller: &Caller, need: &Need) -> bool {
        match need {
            Need::Authenticated => !matches!(caller, Caller::Anonymous),
            Need::Scope(Scope::Repository(name, actions)) => {
                self.actions_of(caller, name).contains(*actions)
            }
            Need::Scope(Scope::Catalog) => match caller {
                Caller::Anonymous => false,
                Caller::User(_) => true,
                Caller::Token(_, grant) => grant.catalog(),
            },
        }
    }

    /// What a token for `caller` may carry of what it asked for: the intersection of the
    /// requested scopes and the caller's rights. Scopes granted nothing are left out.
    pub(crate) fn grant(&self, caller: &Caller, requested: &[Scope]) -> Vec<Scope> {
        requested
            .iter()
            .filter_map(|scope| match scope {
                Scope::Repository(name, asked) => {
                    let granted = asked.intersect(self.actions_of(caller, name));
                    (!granted.is_empty()).then(|| Scope::Repository(name.clone(), granted))
                }
                Scope::Catalog => self
                    .allows(caller, &Need::Scope(Scope::Catalog))
                    .then_some(Scope::Catalog),
            })
            .collect()
    }

    /// Checks a user and password, throttled per client address.
    pub(crate) async fn login(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<(), Refusal> {
        let now = Instant::now();
        self.throttle
            .check(client, now)
            .map_err(Refusal::Throttled)?;
        if self.users.recently_verified(user, password, now) {
            return Ok(());
        }
        self.throttle
            .begin(client, now)
            .map_err(Refusal::Throttled)?;
        if self.users.verify(user, password).await {
            self.throttle.succeeded(client);
            Ok(())
        } else {
            tracing::info!(user, %client, "failed login");
            Err(Refusal::BadLogin)
        }
    }

    /// The caller a request's `Authorization` header names; no header is anonymous.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Caller, Refusal> {
        match credentials(headers) {
            Credentials::None => Ok(Caller::Anonymous),
            Credentials::Basic(user, password) => {
                self.login(&user, &password, client).await?;
                Ok(Caller::User(user))
            }
            Credentials::Bearer(token) => {
                let claims = self
                    .key
                    .verify(&token, unix_now())
                    .map_err(Refusal::BadToken)?;
                let grant = Grant::from_entries(&claims.access);
                Ok(Caller::Token(claims.sub, grant))
            }
            Credentials::Malformed => Err(Refusal::BadLogin),
        }
    }

    /// A signed token for `caller` granting `scopes`, and its lifetime in seconds.
    pub(crate) fn issue(&self, caller: &Caller, scopes: &[Scope], now: u64) -> (String, u64) {
        let sub = match caller {
            Caller::User(user) => user.as_str(),
            Caller::Anonymous | Caller::Token(..) => "",
        };
        let access = scopes.iter().map(Into::into).collect();
        (self.key.issue(sub, access, now, self.expiry), self.expiry)
    }

    /// The service name of challenges and tokens.
    pub(crate) fn service(&self) -> &str {
        self.key.service()
    }

    /// Where clients fetch tokens: the configured realm, or `/token` on the host the client
    /// addressed (kept only if it looks like a host name or address, since it is echoed).
    pub(crate) fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(realm) = &self.realm {
            return realm.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        format!("{}://{host}/token", self.scheme)
    }
}

/// What an `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
    Malformed,
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Credentials::Malformed;
    };
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        basic(rest).map_or(Credentials::Malformed, |(u, p)| Credentials::Basic(u, p))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Credentials::Bearer(rest.to_owned())
    } else {
        Credentials::Malformed
    }
}

/// The user and password of a Basic credential (`base64(user:password)`).
fn basic(encoded: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Seconds since the Unix epoch, the clock of token claims.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Puts `access` in front of `router`: adds `GET`/`POST /token` and checks every other request
/// but `/health`. The peer address for throttling comes from axum's `ConnectInfo`, so serve
/// the result with `into_make_service_with_connect_info::<SocketAddr>()` (as
/// `shoal_roles::serve::serve` does); without it all clients share one throttle.
pub fn protect(router: Router, access: Arc<Access>) -> Router {
    use axum::routing::get;
    router
        .route(
            "/token",
            get(guard::token_get)
                .post(guard::token_post)
                .with_state(Arc::clone(&access)),
        )
        .layer(axum::middleware::from_fn_with_state(access, guard::guard))
}

/// A bcrypt hash of `password` for an htpasswd file, in the `$2y$` form Apache writes, at
/// [`HASH_COST`]: so `shoal devcluster` and tests can make credentials without `htpasswd`.
pub fn hash_password(password: &str) -> Result<String, AccessError> {
    bcrypt::hash_with_result(password, HASH_COST)
        .map(|h| h.format_for_version(bcrypt::Version::TwoY))
        .map_err(|e| AccessError::Hash(e.to_string()))
}

/// One htpasswd line, `user:hash`, for `user` and `password`.
pub fn htpasswd_line(user: &str, password: &str) -> Result<String, AccessError> {
    Ok(format!("{user}:{}", hash_password(password)?))
}

/// How long a throttled client should wait, in whole seconds, at least one.
fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
