//! `GET /metrics` of the P2P roles: the scheduler's counters in the Prometheus text format, then
//! whatever the role adds (the origin's ring health).

use shoal_p2p::Scheduler;

/// The route; `extra` is appended to every scrape.
pub fn router(
    scheduler: Scheduler,
    extra: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (sent, received) = scheduler.traffic();
            let torrents = scheduler.active_torrents();
            let blacklisted = scheduler.blacklisted();
            let extra = extra();
            async move {
                format!(
                    "# HELP shoal_p2p_piece_bytes_sent_total Piece payload bytes sent to peers.\n\
                     # TYPE shoal_p2p_piece_bytes_sent_total counter\n\
                     shoal_p2p_piece_bytes_sent_total {sent}\n\
                     # HELP shoal_p2p_piece_bytes_received_total Piece payload bytes received from peers.\n\
                     # TYPE shoal_p2p_piece_bytes_received_total counter\n\
                     shoal_p2p_piece_bytes_received_total {received}\n\
                     # HELP shoal_p2p_torrents Torrents running.\n\
                     # TYPE shoal_p2p_torrents gauge\n\
                     shoal_p2p_torrents {torrents}\n\
                     # HELP shoal_p2p_peers_blacklisted_total Peers blacklisted for a corrupt piece or a protocol violation.\n\
                     # TYPE shoal_p2p_peers_blacklisted_total counter\n\
                     shoal_p2p_peers_blacklisted_total {blacklisted}\n{extra}"
                )
            }
        }),
    )
}
