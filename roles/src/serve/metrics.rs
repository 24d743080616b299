//! The HTTP side of `/metrics`: every request a listener serves, counted by method, route and
//! status, timed, and its body bytes summed both ways, recorded with its log line ([`super::log`])
//! so the two never disagree.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use shoal_metrics::{Collect, Counter, Exposition, Family, Histogram, LATENCY_BUCKETS};

/// The `route` of a request no route matched: one series for every such path, however many
/// paths clients try.
pub const UNMATCHED: &str = "unmatched";

/// The `status` of a request dropped before it was answered (the client left while the
/// handler ran).
pub const NO_STATUS: &str = "none";

/// One listener's requests (or several listeners', when they share it: a role's main port
/// and its `metrics.listen`).
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<Counter, 3>,
    seconds: Family<Histogram, 2>,
    received: Family<Counter, 2>,
    sent: Family<Counter, 2>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::new(["method", "route", "status"]),
            seconds: Family::with(["method", "route"], || Histogram::new(LATENCY_BUCKETS)),
            received: Family::new(["method", "route"]),
            sent: Family::new(["method", "route"]),
        }
    }
}

/// A request's outcome, as its log line has it.
pub(super) struct Served<'a> {
    pub method: &'a Method,
    pub route: Option<&'a str>,
    pub status: Option<StatusCode>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub elapsed: Duration,
}

impl HttpMetrics {
    pub(super) fn record(&self, r: &Served<'_>) {
        let method = method_label(r.method);
        let route = r.route.unwrap_or(UNMATCHED);
        let status = r.status.map(|s| s.as_u16().to_string());
        let status = status.as_deref().unwrap_or(NO_STATUS);
        self.requests.get([method, route, status]).inc();
        self.seconds
            .get([method, route])
            .observe_duration(r.elapsed);
        self.received.get([method, route]).add(r.bytes_in);
        self.sent.get([method, route]).add(r.bytes_out);
    }
}

/// The standard methods by name; anything else (a client's invention) as `other`, so a
/// client cannot make series up.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Collect for HttpMetrics {
    fn collect(&self, out: &mut Exposition) {
        out.counters(
            "shoal_http_requests_total",
            "HTTP requests served, by method, route template (unmatched: no route) and status (none: dropped before an answer).",
            &self.requests,
        );
        out.histograms(
            "shoal_http_request_duration_seconds",
            "HTTP request latency, from the request head to the last response byte handed to the connection.",
            &self.seconds,
        );
        out.counters(
            "shoal_http_request_bytes_total",
            "HTTP request body bytes read.",
            &self.received,
        );
        out.counters(
            "shoal_http_response_bytes_total",
            "HTTP response body bytes handed to the connection.",
            &self.sent,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_and_unmatched_paths_share_one_series_each() {
        let m = HttpMetrics::default();
        for method in ["BREW", "WHEN"] {
            m.record(&Served {
                method: &Method::from_bytes(method.as_bytes()).unwrap(),
                route: None,
                status: Some(StatusCode::NOT_FOUND),
                bytes_in: 1,
                bytes_out: 2,
                elapsed: Duration::from_millis(3),
            });
        }
        let mut out = Exposition::new();
        m.collect(&mut out);
        let scrape = shoal_metrics::parse::parse(&out.finish()).unwrap();
        let labels = [("method", "other"), ("route", UNMATCHED), ("status", "404")];
        assert_eq!(
            scrape.value("shoal_http_requests_total", &labels),
            Some(2.0)
        );
        assert_eq!(scrape.matching("shoal_http_requests_total", &[]).count(), 1);
        assert_eq!(scrape.sum("shoal_http_response_bytes_total", &[]), 4.0);
    }
}
