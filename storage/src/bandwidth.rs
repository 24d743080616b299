//! Egress and ingress rate limits: token buckets in bits per second, as the seed's
//! `scheduler.conn.bandwidth` (peer connections) and a backend's `bandwidth:` block define
//! them. One limiter for both, so a fix reaches both.
//!
//! A token is `token_size` bits (8 Mbit by default), so a 4 MiB piece costs four tokens and
//! large rates never overflow a counter. The bucket holds one second of tokens and starts full,
//! as Kraken's (Go `rate.Limiter` with burst = rate). A reservation takes its tokens at once,
//! going into debt if needed, then waits until the debt is repaid: callers are served in the
//! order they reserve, and a piece larger than the burst is slowed, not refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_config::BandwidthConfig;
use tokio::time::Instant;

use futures_util::StreamExt;

use crate::{BandwidthError, ByteStream};

#[derive(Debug)]
struct Bucket {
    /// Tokens available; negative while reservations are waiting to be paid for.
    tokens: f64,
    last: Instant,
}

/// One direction's bucket. Shared behind an `Arc` by every connection of the peer, since the
/// limit is per host, not per connection.
#[derive(Debug)]
pub struct TokenBucket {
    token_bits: u64,
    /// Tokens added per second.
    rate: f64,
    /// Most tokens held: one second's worth, and at least one token.
    burst: f64,
    state: Mutex<Bucket>,
}

impl TokenBucket {
    /// A full bucket allowing `bits_per_sec`, counted in tokens of `token_size` bits.
    pub fn new(
        bits_per_sec: u64,
        token_size: u64,
        direction: &'static str,
    ) -> Result<Self, BandwidthError> {
        if bits_per_sec == 0 {
            return Err(BandwidthError::ZeroRate { direction });
        }
        if token_size == 0 {
            return Err(BandwidthError::ZeroTokenSize);
        }
        let rate = bits_per_sec as f64 / token_size as f64;
        let burst = rate.max(1.0);
        Ok(TokenBucket {
            token_bits: token_size,
            rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
        })
    }

    /// Tokens `bytes` cost, in fractions of a token: a piece smaller than `token_size` pays
    /// for its own bits, not a whole token (rounding up made 256 KiB pieces under 1 MiB tokens
    /// cost four times their size, so the measured rate fell to a quarter of the cap).
    fn tokens_for(&self, bytes: u64) -> f64 {
        (bytes as f64 * 8.0) / self.token_bits as f64
    }

    /// Takes the tokens for `bytes` at `now` and returns how long the caller must wait.
    fn take(&self, bytes: u64, now: Instant) -> Duration {
        let cost = self.tokens_for(bytes);
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now.max(b.last);
        b.tokens -= cost;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }

    /// Waits until `bytes` may be sent (or have been received). The tokens are taken when this
    /// is first polled: dropping the future early does not give them back, so a cancelled
    /// transfer still counts against the rate (it may have been partly sent).
    pub async fn reserve(&self, bytes: u64) {
        let wait = self.take(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A peer's egress and ingress limits; cheap to clone, every clone shares the same buckets.
#[derive(Clone, Debug, Default)]
pub struct BandwidthLimiter {
    egress: Option<Arc<TokenBucket>>,
    ingress: Option<Arc<TokenBucket>>,
}

impl BandwidthLimiter {
    /// Limits as configured; no limits when `enable` is false.
    pub fn new(config: &BandwidthConfig) -> Result<Self, BandwidthError> {
        if !config.enable {
            return Ok(Self::unlimited());
        }
        Ok(BandwidthLimiter {
            egress: Some(Arc::new(TokenBucket::new(
                config.egress_bits_per_sec,
                config.token_size,
                "egress",
            )?)),
            ingress: Some(Arc::new(TokenBucket::new(
                config.ingress_bits_per_sec,
                config.token_size,
                "ingress",
            )?)),
        })
    }

    /// No limits, for tests and for `enable: false`.
    pub fn unlimited() -> Self {
        BandwidthLimiter::default()
    }

    /// Waits until `bytes` may be sent.
    pub async fn reserve_egress(&self, bytes: u64) {
        if let Some(b) = &self.egress {
            b.reserve(bytes).await;
        }
    }

    /// Waits until `bytes` may be received.
    pub async fn reserve_ingress(&self, bytes: u64) {
        if let Some(b) = &self.ingress {
            b.reserve(bytes).await;
        }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.egress.is_some() || self.ingress.is_some()
    }

    /// `body` paced by the ingress bucket (bytes coming in, e.g. a backend download).
    pub fn pace_ingress(&self, body: ByteStream) -> ByteStream {
        pace(self.ingress.clone(), body)
    }

    /// `body` paced by the egress bucket (bytes going out, e.g. a backend upload).
    pub fn pace_egress(&self, body: ByteStream) -> ByteStream {
        pace(self.egress.clone(), body)
    }
}

/// `body`, each chunk admitted by `bucket` before it is passed on; unchanged without one.
fn pace(bucket: Option<Arc<TokenBucket>>, body: ByteStream) -> ByteStream {
    let Some(bucket) = bucket else {
        return body;
    };
    Box::pin(body.then(move |chunk| {
        let bucket = bucket.clone();
        async move {
            if let Ok(c) = &chunk {
                bucket.reserve(c.len() as u64).await;
            }
            chunk
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT: u64 = 1 << 20;
    const MB: u64 = 1 << 20;

    /// 8 Mbit/s in 1 Mbit tokens: one MiB a second, a burst of one MiB.
    fn config() -> BandwidthConfig {
        BandwidthConfig {
            enable: true,
            egress_bits_per_sec: 8 * MBIT,
            ingress_bits_per_sec: 16 * MBIT,
            token_size: MBIT,
        }
    }

    fn assert_elapsed(start: Instant, expected: Duration) {
        let elapsed = start.elapsed();
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(1),
            "elapsed {elapsed:?}, expected {expected:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_burst_is_free_then_the_rate_applies() {
        let l = BandwidthLimiter::new(&config()).unwrap();
        let start = Instant::now();
        l.reserve_egress(MB).await;
        assert_elapsed(start, Duration::ZERO);
        l.reserve_egress(MB).await;
        assert_elapsed(start, Duration::from_secs(1));
        for _ in 0..10 {
            l.reserve_egress(MB / 2).await;
        }
        assert_elapsed(start, Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn ingress_and_egress_are_separate_buckets() {
        let l = BandwidthLimiter::new(&config()).unwrap();
        let start = Instant::now();
        l.reserve_egress(MB).await;
        l.reserve_ingress(2 * MB).await;
        assert_elapsed(start, Duration::ZERO);
        l.reserve_ingress(2 * MB).await;
        assert_elapsed(start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_only_up_to_the_burst() {
        let l = BandwidthLimiter::new(&config()).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        l.reserve_egress(3 * MB).await;
        assert_elapsed(start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn shared_across_tasks() {
        let l = BandwidthLimiter::new(&config()).unwrap();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let l = l.clone();
            tasks.spawn(async move { l.reserve_egress(2 * MB).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        // 8 MiB at 1 MiB/s with a 1 MiB burst.
        assert_elapsed(start, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn pieces_smaller_than_a_token_pay_for_their_bits() {
        // 1 MiB/s in 8 Mbit (1 MiB) tokens; 256 KiB pieces.
        let b = TokenBucket::new(8 * MBIT, 8 * MBIT, "egress").unwrap();
        let start = Instant::now();
        for _ in 0..12 {
            b.reserve(256 * 1024).await;
        }
        // The burst (one token, four pieces) is free; eight more pieces take two seconds.
        assert_elapsed(start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_stream_shares_its_bucket_with_concurrent_transfers() {
        // 1 MiB/s with a 1 MiB burst; 4 bodies of 1 MiB in 64 KiB chunks.
        let l = BandwidthLimiter::new(&config()).unwrap();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let l = l.clone();
            tasks.spawn(async move {
                let chunks: Vec<std::io::Result<bytes::Bytes>> = (0..16)
                    .map(|_| Ok(bytes::Bytes::from(vec![0u8; 64 << 10])))
                    .collect();
                let mut body = l.pace_egress(Box::pin(futures_util::stream::iter(chunks)));
                let mut n = 0;
                while let Some(c) = body.next().await {
                    n += c.unwrap().len();
                }
                assert_eq!(n, 1 << 20);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        // 4 MiB, the first MiB free: 3 s.
        assert_elapsed(start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_limits_never_wait() {
        let l = BandwidthLimiter::new(&BandwidthConfig::default()).unwrap();
        let start = Instant::now();
        for _ in 0..100 {
            l.reserve_egress(1 << 30).await;
            l.reserve_ingress(1 << 30).await;
        }
        assert_elapsed(start, Duration::ZERO);
    }

    #[test]
    fn rejects_zero_rates_and_token_sizes() {
        let mut c = config();
        c.ingress_bits_per_sec = 0;
        assert_eq!(
            BandwidthLimiter::new(&c).unwrap_err(),
            BandwidthError::ZeroRate {
                direction: "ingress"
            }
        );
        assert_eq!(
            TokenBucket::new(1, 0, "egress").unwrap_err(),
            BandwidthError::ZeroTokenSize
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_below_one_token_a_second_still_flows() {
        // 1 Mbit/s in 8 Mbit tokens: one token every 8 s, a burst of one token.
        let b = TokenBucket::new(MBIT, 8 * MBIT, "egress").unwrap();
        let start = Instant::now();
        b.reserve(MB).await;
        b.reserve(MB).await;
        assert_elapsed(start, Duration::from_secs(8));
    }
}
