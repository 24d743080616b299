//! `/ready`: whether a role can do its job now, for load balancers and Kubernetes readiness
//! probes; `/health` stays liveness only (the process serves HTTP).
//!
//! A role lists its [`Readiness`] checks (an agent: a tracker answers, a build-index answers;
//! an origin: its backends and its ring; ...). Every `/ready` runs them all at once, each
//! within [`CHECK_TIMEOUT`], and answers 200 `ready`, or 503 with one line per failing check,
//! `NAME: why`. Nothing is cached: a check is one cheap request or call, and a probe every
//! few seconds costs a handful of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use shoal_config::HostPort;
use shoal_p2p::tls::{ClusterHttp, ClusterTls};
use shoal_storage::{BackendError, NamespaceRouter};

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The namespace and name a backend is asked about (with `stat`): nothing is stored under
/// them, so "not found" is the expected answer.
const PROBE_NAME: &str = "shoal-ready-probe";

type CheckFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The checks behind a role's `/ready`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, CheckFn)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

impl Readiness {
    /// No checks: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the check `name`: `check` says why the role cannot work, or nothing.
    pub fn check<F, Fut>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name.into(), Arc::new(move || Box::pin(check()))));
        self
    }

    /// Adds a check that at least one of `hosts` answers `GET /health` with a success
    /// (`what` names them: `tracker`, `build-index`); with no hosts it fails, naming `key`,
    /// the setting that lists them.
    pub fn any_answers(
        self,
        what: &str,
        key: &'static str,
        hosts: Vec<HostPort>,
        tls: &ClusterTls,
    ) -> Result<Self, reqwest::Error> {
        if hosts.is_empty() {
            return Ok(self.check(
                what,
                move || async move { Err(format!("{key} is not set")) },
            ));
        }
        let http = tls.http(Some(CHECK_TIMEOUT))?;
        let what_owned = what.to_owned();
        Ok(self.check(what, move || {
            let (http, hosts, what) = (http.clone(), hosts.clone(), what_owned.clone());
            async move { any_answers(&http, &what, &hosts).await }
        }))
    }

    /// Adds a check of every `backends:` entry: each answers a `stat`.
    pub fn backends(mut self, backends: Arc<NamespaceRouter>) -> Self {
        for (i, route) in backends.routes().iter().enumerate() {
            let name = format!("backends[{i}] ({})", route.backend.name());
            let backends = backends.clone();
            self = self.check(name, move || {
                let backends = backends.clone();
                async move { backend_answers(&backends, i).await }
            });
        }
        self
    }

    /// Runs every check at once; the lines of those that failed, in the order added.
    pub async fn failures(&self) -> Vec<String> {
        let runs = self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            outcome
                .err()
                .map(|why| format!("{name}: {}", one_line(&why)))
        });
        futures_util::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// `GET /ready` over these checks.
    pub fn router(self) -> Router {
        let readiness = Arc::new(self);
        Router::new().route(
            "/ready",
            get(move || {
                let readiness = readiness.clone();
                async move { readiness.answer().await }
            }),
        )
    }

    async fn answer(&self) -> (StatusCode, String) {
        let failures = self.failures().await;
        if failures.is_empty() {
            return (StatusCode::OK, "ready\n".to_owned());
        }
        tracing::debug!(failing = ?failures, "not ready");
        let mut body = failures.join("\n");
        body.push('\n');
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// A reason on one line, however the error printed itself.
fn one_line(why: &str) -> String {
    why.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) use shoal_p2p::with_causes;

async fn any_answers(http: &ClusterHttp, what: &str, hosts: &[HostPort]) -> Result<(), String> {
    let asks = hosts.iter().map(|host| async move {
        match http.get(http.url(host, "/health")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{host} answered {}", r.status())),
            Err(e) => Err(format!("{host}: {}", with_causes(&e))),
        }
    });
    let outcomes = futures_util::future::join_all(asks).await;
    if outcomes.iter().any(Result::is_ok) {
        return Ok(());
    }
    let whys: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    Err(format!("no {what} answered ({})", whys.join("; ")))
}

/// Whether backend `i` of `backends` answers: any answer about the probe name counts (it is
/// not found, or the backend finds the name invalid or the credentials wanting); not reaching
/// the storage, a trap, an open breaker or a denied host do not.
async fn backend_answers(backends: &NamespaceRouter, i: usize) -> Result<(), String> {
    let Some(route) = backends.routes().get(i) else {
        return Ok(());
    };
    match route.backend.stat(PROBE_NAME, PROBE_NAME).await {
        Ok(_)
        | Err(BackendError::NotFound { .. })
        | Err(BackendError::Invalid { .. })
        | Err(BackendError::Unauthorized { .. })
        | Err(BackendError::Throttled { .. })
        | Err(BackendError::Other { .. }) => Ok(()),
        Err(
            e @ (BackendError::Unavailable { .. }
            | BackendError::Trapped { .. }
            | BackendError::HostDenied { .. }
            | BackendError::BreakerOpen { .. }),
        ) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use shoal_storage::{Backend, MemoryBackend};
    use tower::ServiceExt;

    async fn get_ready(router: Router) -> (StatusCode, String) {
        let r = router
            .oneshot(Request::get("/ready").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn every_failing_check_is_a_line_and_ready_needs_none() {
        let readiness = Readiness::new()
            .check("store", || async { Ok(()) })
            .check("tracker", || async { Err("down\nand out".to_owned()) })
            .check("build-index", || async { Err("gone".to_owned()) });
        let (status, body) = get_ready(readiness.router()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "tracker: down and out\nbuild-index: gone\n");
        let (status, body) = get_ready(Readiness::new().router()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_hangs_fails_at_the_timeout() {
        let readiness = Readiness::new().check("slow", std::future::pending);
        let (status, body) = get_ready(readiness.router()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, format!("slow: no answer within {CHECK_TIMEOUT:?}\n"));
    }

    #[tokio::test]
    async fn a_backend_that_answers_not_found_is_ready() {
        let backend = Arc::new(MemoryBackend::new("memory")) as Arc<dyn Backend>;
        let readiness = Readiness::new().backends(Arc::new(NamespaceRouter::single(backend)));
        assert!(readiness.failures().await.is_empty());
    }

    #[tokio::test]
    async fn nobody_answering_names_each_host_and_why() {
        // Free, and out of the range the kernel hands to other tests' listeners.
        let port = shoal_p2p::testing::daemon_port();
        let readiness = Readiness::new()
            .any_answers(
                "tracker",
                "tracker.hosts",
                vec![HostPort::new("127.0.0.1", port)],
                &ClusterTls::plain(),
            )
            .unwrap();
        let failures = readiness.failures().await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        let line = &failures[0];
        assert!(
            line.starts_with(&format!("tracker: no tracker answered (127.0.0.1:{port}: ")),
            "{line}"
        );
        assert!(line.to_lowercase().contains("connection refused"), "{line}");
        let unset = Readiness::new().any_answers(
            "build-index",
            "build_index.hosts",
            Vec::new(),
            &ClusterTls::plain(),
        );
        assert_eq!(
            unset.unwrap().failures().await,
            ["build-index: build_index.hosts is not set"]
        );
    }
}
