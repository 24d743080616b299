//! The minimum rate of a request body: a client that sends fewer than `min_body_rate` bytes a
//! second, measured over windows of `body_timeout`, gets an error instead of holding the
//! request open.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// The client sent too little for too long.
    #[error(
        "the request body brought {got} bytes in {window:?}, less than server.min_body_rate \
         ({rate} bytes a second)"
    )]
    TooSlow {
        got: u64,
        window: Duration,
        rate: u64,
    },
    /// The connection failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// A request body with a minimum rate.
pub(super) struct MinRate {
    inner: Incoming,
    window: Duration,
    rate: u64,
    /// Bytes in the current window.
    got: u64,
    /// The end of the current window; armed at the first poll.
    timer: Option<Pin<Box<Sleep>>>,
    /// Every byte read, for the request log.
    total: Arc<AtomicU64>,
}

impl MinRate {
    /// `inner` must bring `rate` bytes a second over each `window`; a zero window checks
    /// nothing. Every byte read is added to `total`.
    pub(super) fn new(inner: Incoming, window: Duration, rate: u64, total: Arc<AtomicU64>) -> Self {
        MinRate {
            inner,
            window,
            rate,
            got: 0,
            timer: None,
            total,
        }
    }
}

impl http_body::Body for MinRate {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.got += data.len() as u64;
                    this.total.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.window.is_zero() {
            return Poll::Pending;
        }
        // Nothing to read now: has the window ended with too little?
        let window = this.window;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(window)));
        while timer.as_mut().poll(cx).is_ready() {
            let needed = (this.rate as f64 * window.as_secs_f64()) as u64;
            if this.got < needed {
                return Poll::Ready(Some(Err(BodyError::TooSlow {
                    got: this.got,
                    window,
                    rate: this.rate,
                })));
            }
            this.got = 0;
            timer.as_mut().reset(tokio::time::Instant::now() + window);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
