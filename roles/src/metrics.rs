//! `GET /metrics` of every role and `shoal dev`, in the Prometheus text format: the process
//! (start time, build), the HTTP listeners' requests, then what the role adds (its backends'
//! calls and plugins, its pull-through cache, its scheduler's pieces, peers and announces, its
//! queues, its ring). Each part owns its counters and writes them through the one renderer of
//! `shoal_metrics`; served on the role's main port and, when `metrics.listen` is set, on a
//! listener of its own with the same `server:` limits.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use shoal_metrics::{Collect, Exposition, Kind, Process};
use shoal_p2p::{Scheduler, Tasks};
use shoal_registry::Registry;
use tokio::net::TcpListener;

use crate::ring::Ring;
use crate::serve::{HttpMetrics, ServeOptions};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one role shows on `/metrics`; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    parts: Vec<Arc<dyn Collect>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl Metrics {
    /// The process's metrics and the requests counted in `http` (a listener's
    /// [`ServeOptions::metrics`]).
    pub fn new(http: Arc<HttpMetrics>) -> Metrics {
        Metrics {
            parts: vec![
                Arc::new(Process {
                    version: env!("CARGO_PKG_VERSION"),
                }),
                http,
            ],
        }
    }

    /// Adds a part.
    pub fn with(mut self, part: Arc<dyn Collect>) -> Metrics {
        self.parts.push(part);
        self
    }

    /// Adds families written at scrape time by `write`.
    pub fn with_fn(self, write: impl Fn(&mut Exposition) + Send + Sync + 'static) -> Metrics {
        self.with(Arc::new(Written(write)))
    }

    /// One scrape.
    pub fn render(&self) -> String {
        let mut out = Exposition::new();
        for part in &self.parts {
            part.collect(&mut out);
        }
        out.finish()
    }

    /// `GET /metrics`.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response() }
            }),
        )
    }

    /// Serves `/metrics` alone on `listener` (`metrics.listen`), with `options` (the role's
    /// `server:` limits and TLS, any client), in `tasks`: it stops with the role.
    pub fn serve_on(&self, listener: Option<TcpListener>, options: &ServeOptions, tasks: &Tasks) {
        let Some(listener) = listener else {
            return;
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "metrics listening (metrics.listen)");
        }
        let options = options.clone().allowing(None);
        let router = self.router();
        tasks.spawn(async move {
            let served =
                crate::serve::serve(listener, router, &options, std::future::pending()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
}

/// Families written by a closure.
struct Written<F>(F);

impl<F: Fn(&mut Exposition) + Send + Sync> Collect for Written<F> {
    fn collect(&self, out: &mut Exposition) {
        (self.0)(out);
    }
}

/// An agent's or origin's scheduler: pieces, peers, torrents and announces.
pub struct P2p(pub Scheduler);

impl Collect for P2p {
    fn collect(&self, out: &mut Exposition) {
        let s = self.0.stats();
        out.counter(
            "shoal_p2p_piece_bytes_sent_total",
            "Piece payload bytes sent to peers.",
            s.piece_bytes_sent,
        );
        out.counter(
            "shoal_p2p_piece_bytes_received_total",
            "Piece payload bytes received from peers.",
            s.piece_bytes_received,
        );
        out.counter(
            "shoal_p2p_pieces_sent_total",
            "Pieces sent to peers.",
            s.pieces_sent,
        );
        out.family(
            "shoal_p2p_pieces_received_total",
            "Pieces received from peers, by result: verified against their hash, or corrupt (the sender is blacklisted).",
            Kind::Counter,
        )
        .add(&[("result", "verified")], s.pieces_verified as f64)
        .add(&[("result", "corrupt")], s.pieces_corrupt as f64);
        out.counter(
            "shoal_p2p_piece_requests_refused_busy_total",
            "Piece requests refused because the asking peer already had 16 pieces on their way to it.",
            s.requests_refused_busy,
        );
        out.gauge(
            "shoal_p2p_upload_bytes_buffered",
            "Bytes of pieces read for peers and not yet sent, besides each peer's first (256 MiB at most).",
            s.upload_bytes_buffered as f64,
        );
        out.gauge("shoal_p2p_torrents", "Torrents running.", s.torrents as f64);
        out.gauge("shoal_p2p_peers", "Peer connections open.", s.peers as f64);
        out.counter(
            "shoal_p2p_peers_blacklisted_total",
            "Peers blacklisted for a corrupt piece or a protocol violation.",
            s.blacklisted,
        );
        out.family(
            "shoal_p2p_announces_total",
            "Announces to the tracker, by result: ok, or error (no tracker answered, or it refused).",
            Kind::Counter,
        )
        .add(&[("result", "ok")], s.announces_ok as f64)
        .add(&[("result", "error")], s.announces_failed as f64);
    }
}

/// A registry's pull-through cache (the agent's, the proxy's, `shoal dev`'s).
pub struct Cache(pub Arc<Registry>);

impl Collect for Cache {
    fn collect(&self, out: &mut Exposition) {
        let c = self.0.cache_stats();
        out.family(
            "shoal_registry_cache_hits_total",
            "Blob and manifest reads the local store answered, by kind.",
            Kind::Counter,
        )
        .add(&[("kind", "blob")], c.blob_hits as f64)
        .add(&[("kind", "manifest")], c.manifest_hits as f64);
        out.family(
            "shoal_registry_cache_misses_total",
            "Blob and manifest reads the local store lacked and asked its backing (backends, peers, origins) for, by kind.",
            Kind::Counter,
        )
        .add(&[("kind", "blob")], c.blob_misses as f64)
        .add(&[("kind", "manifest")], c.manifest_misses as f64);
    }
}

/// A ring's members as its active check sees them.
pub fn ring_health(ring: &Ring, out: &mut Exposition) {
    let mut members = out.family(
        "shoal_ring_member_healthy",
        "Whether the active check counts a ring member healthy (1) or not (0).",
        Kind::Gauge,
    );
    for (host, ok) in ring.health() {
        members.add(&[("member", &host.to_string())], f64::from(u8::from(ok)));
    }
}
