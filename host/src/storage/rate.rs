//! A token bucket in bits per second, as a backend's `bandwidth:` block and the P2P
//! scheduler configure it, and a stream adapter that paces bytes through one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::plugin::ByteStream;

/// A rate limit shared by every transfer in one direction of one backend.
///
/// Implemented as GCRA (a token bucket kept as one timestamp): `next` is when the bucket
/// will have paid for everything admitted so far; a transfer waits until `next` is less than
/// one burst ahead of now. The burst is one token, `token_size` bits, as Kraken's limiter.
#[derive(Debug)]
pub struct RateLimit {
    /// Nanoseconds one byte costs.
    nanos_per_byte: f64,
    /// How far ahead of now the bucket may run before a caller waits.
    burst: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A limit of `bits_per_sec`, with bursts of `token_size_bits`.
    pub fn new(bits_per_sec: u64, token_size_bits: u64) -> Self {
        let bytes_per_sec = (bits_per_sec.max(8) / 8) as f64;
        let nanos_per_byte = 1e9 / bytes_per_sec;
        let burst_bytes = (token_size_bits / 8).max(1) as f64;
        RateLimit {
            nanos_per_byte,
            burst: Duration::from_nanos((burst_bytes * nanos_per_byte) as u64),
            next: Mutex::new(None),
        }
    }

    /// The limits of a `bandwidth:` block, `(ingress, egress)`; `None`s when it is off.
    pub fn from_config(
        c: &shoal_config::BandwidthConfig,
    ) -> (Option<Arc<Self>>, Option<Arc<Self>>) {
        if !c.enable {
            return (None, None);
        }
        (
            Some(Arc::new(RateLimit::new(
                c.ingress_bits_per_sec,
                c.token_size,
            ))),
            Some(Arc::new(RateLimit::new(
                c.egress_bits_per_sec,
                c.token_size,
            ))),
        )
    }

    /// Waits until `bytes` more may pass.
    pub async fn acquire(&self, bytes: u64) {
        let wait_until = {
            let mut next = self.next.lock().expect("rate lock");
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            let cost = Duration::from_nanos((bytes as f64 * self.nanos_per_byte) as u64);
            let done = start + cost;
            *next = Some(done);
            done.checked_sub(self.burst).filter(|t| *t > now)
        };
        if let Some(t) = wait_until {
            tokio::time::sleep_until(t).await;
        }
    }

    /// `body`, paced by this limit.
    pub fn pace(self: Arc<Self>, body: ByteStream) -> ByteStream {
        Box::pin(body.then(move |chunk| {
            let limit = self.clone();
            async move {
                if let Ok(c) = &chunk {
                    limit.acquire(c.len() as u64).await;
                }
                chunk
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const MIB: u64 = 1 << 20;

    #[tokio::test(start_paused = true)]
    async fn bytes_pass_at_the_configured_rate() {
        // 8 Mbit/s = 1 MiB/s with 1 Mbit tokens; 8 MiB take about 8 s of (virtual) time.
        let limit = Arc::new(RateLimit::new(8 * MIB, MIB));
        let start = Instant::now();
        for _ in 0..64 {
            limit.acquire(128 << 10).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(7800) && took <= Duration::from_millis(8100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_bucket_is_shared_by_concurrent_transfers() {
        let limit = Arc::new(RateLimit::new(8 * MIB, MIB));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let limit = limit.clone();
            tasks.spawn(async move {
                let chunks: Vec<std::io::Result<Bytes>> = (0..16)
                    .map(|_| Ok(Bytes::from(vec![0u8; 64 << 10])))
                    .collect();
                let mut body = limit.pace(Box::pin(futures_util::stream::iter(chunks)));
                while body.next().await.is_some() {}
            });
        }
        while tasks.join_next().await.is_some() {}
        // 4 x 1 MiB through a 1 MiB/s bucket.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(3800) && took <= Duration::from_millis(4100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_does_not_bank_more_than_one_burst() {
        let limit = RateLimit::new(8 * MIB, MIB);
        limit.acquire(MIB).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        limit.acquire(2 * MIB).await;
        // 2 MiB cost 2 s; the idle minute buys only the 128 KiB burst.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1800) && took <= Duration::from_millis(2000),
            "{took:?}"
        );
    }
}
