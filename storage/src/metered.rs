//! The wrapper every backend of a [`crate::NamespaceRouter`] is called through: it counts each
//! call by plugin, operation and result, times it, and counts the bytes that cross, whatever
//! the backend is (a plugin, a native one in tests).

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use shoal_metrics::{Collect, Counter, Exposition, Family, Histogram, Kind, LATENCY_BUCKETS};

use crate::{Backend, BackendError, BlobInfo, ByteRange, ByteStream, Download, ListPage};

/// What a plugin says of its own health, for metrics: the traps so far and whether its
/// breaker refuses calls now. Native backends have none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginHealth {
    /// Calls that trapped (panic, deadline, memory cap) since start.
    pub traps: u64,
    /// Whether the breaker is open, refusing calls.
    pub breaker_open: bool,
}

/// The backend metrics of one router.
#[derive(Debug)]
pub struct BackendMetrics {
    calls: Family<Counter, 3>,
    seconds: Family<Histogram, 2>,
    downloaded: Family<Counter, 1>,
    uploaded: Family<Counter, 1>,
}

impl Default for BackendMetrics {
    fn default() -> Self {
        BackendMetrics {
            calls: Family::new(["plugin", "operation", "result"]),
            seconds: Family::with(["plugin", "operation"], || Histogram::new(LATENCY_BUCKETS)),
            downloaded: Family::new(["plugin"]),
            uploaded: Family::new(["plugin"]),
        }
    }
}

impl BackendMetrics {
    fn record<T>(
        &self,
        plugin: &str,
        operation: &str,
        started: Instant,
        result: &Result<T, BackendError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => result_label(e),
        };
        self.calls.get([plugin, operation, outcome]).inc();
        self.seconds
            .get([plugin, operation])
            .observe_duration(started.elapsed());
    }

    /// Writes the families, then each plugin's traps and breaker from `health`.
    pub(crate) fn collect_with(&self, out: &mut Exposition, health: &[(String, PluginHealth)]) {
        out.counters(
            "shoal_backend_calls_total",
            "Storage backend calls by plugin, operation (stat, download, upload, list, delete, link) and result (ok, not_found, unauthorized, throttled, unavailable, invalid, other, trapped, host_denied, breaker_open).",
            &self.calls,
        );
        out.histograms(
            "shoal_backend_call_duration_seconds",
            "Storage backend call latency by plugin and operation, until the call returned (for a download, until its body started).",
            &self.seconds,
        );
        out.counters(
            "shoal_backend_downloaded_bytes_total",
            "Bytes read from storage backends.",
            &self.downloaded,
        );
        out.counters(
            "shoal_backend_uploaded_bytes_total",
            "Bytes written to storage backends.",
            &self.uploaded,
        );
        let mut traps = out.family(
            "shoal_plugin_traps_total",
            "Backend plugin calls that trapped (panic, deadline, memory cap) since start.",
            Kind::Counter,
        );
        for (plugin, h) in health {
            traps.add(&[("plugin", plugin)], h.traps as f64);
        }
        let mut open = out.family(
            "shoal_plugin_breaker_open",
            "1 while a backend plugin's breaker refuses calls after repeated traps, else 0.",
            Kind::Gauge,
        );
        for (plugin, h) in health {
            open.add(&[("plugin", plugin)], f64::from(u8::from(h.breaker_open)));
        }
    }
}

/// The `result` label of a failed call.
fn result_label(e: &BackendError) -> &'static str {
    match e {
        BackendError::NotFound { .. } => "not_found",
        BackendError::Unauthorized { .. } => "unauthorized",
        BackendError::Throttled { .. } => "throttled",
        BackendError::Unavailable { .. } => "unavailable",
        BackendError::Invalid { .. } => "invalid",
        BackendError::Other { .. } => "other",
        BackendError::Trapped { .. } => "trapped",
        BackendError::HostDenied { .. } => "host_denied",
        BackendError::BreakerOpen { .. } => "breaker_open",
    }
}

/// A backend whose calls are recorded in `metrics`.
pub(crate) struct Metered {
    pub(crate) inner: Arc<dyn Backend>,
    pub(crate) metrics: Arc<BackendMetrics>,
}

impl Metered {
    /// `backend`, recorded in `metrics`.
    pub(crate) fn wrap(
        backend: Arc<dyn Backend>,
        metrics: &Arc<BackendMetrics>,
    ) -> Arc<dyn Backend> {
        Arc::new(Metered {
            inner: backend,
            metrics: metrics.clone(),
        })
    }

    /// `body`, its bytes counted in `counter` as they pass.
    fn counted(body: ByteStream, counter: Arc<Counter>) -> ByteStream {
        Box::pin(body.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counter.add(bytes.len() as u64);
            }
        }))
    }
}

#[async_trait::async_trait]
impl Backend for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo, BackendError> {
        let started = Instant::now();
        let r = self.inner.stat(namespace, name).await;
        self.metrics.record(self.name(), "stat", started, &r);
        r
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, BackendError> {
        let started = Instant::now();
        let r = self.inner.download(namespace, name, range).await;
        self.metrics.record(self.name(), "download", started, &r);
        let mut download = r?;
        let counter = self.metrics.downloaded.get([self.name()]);
        download.body = Metered::counted(download.body, counter);
        Ok(download)
    }

    async fn upload(
        &self,
        namespace: &str,
        name: &str,
        size: u64,
        body: ByteStream,
    ) -> Result<(), BackendError> {
        let started = Instant::now();
        let body = Metered::counted(body, self.metrics.uploaded.get([self.name()]));
        let r = self.inner.upload(namespace, name, size, body).await;
        self.metrics.record(self.name(), "upload", started, &r);
        r
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, BackendError> {
        let started = Instant::now();
        let r = self
            .inner
            .list(namespace, prefix, continuation, limit)
            .await;
        self.metrics.record(self.name(), "list", started, &r);
        r
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), BackendError> {
        let started = Instant::now();
        let r = self.inner.delete(namespace, name).await;
        self.metrics.record(self.name(), "delete", started, &r);
        r
    }

    async fn link_file(
        &self,
        namespace: &str,
        name: &str,
        path: &std::path::Path,
    ) -> Result<bool, BackendError> {
        let started = Instant::now();
        let r = self.inner.link_file(namespace, name, path).await;
        // A backend that cannot link made no call: only links tried are counted.
        if !matches!(r, Ok(false)) {
            self.metrics.record(self.name(), "link", started, &r);
        }
        r
    }

    fn plugin_health(&self) -> Option<PluginHealth> {
        self.inner.plugin_health()
    }
}

impl Collect for crate::NamespaceRouter {
    fn collect(&self, out: &mut Exposition) {
        // One line per plugin name: two entries of one plugin (two `fs` folders) add up.
        let mut health: Vec<(String, PluginHealth)> = Vec::new();
        for route in self.routes() {
            let Some(h) = route.backend.plugin_health() else {
                continue;
            };
            let name = route.backend.name();
            match health.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => {
                    sum.traps += h.traps;
                    sum.breaker_open |= h.breaker_open;
                }
                None => health.push((name.to_owned(), h)),
            }
        }
        self.metrics().collect_with(out, &health);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;
    use shoal_metrics::parse::parse;

    use super::*;
    use crate::{MemoryBackend, NamespaceRouter};

    #[tokio::test]
    async fn every_call_through_a_router_is_counted_timed_and_its_bytes_summed() {
        let router = NamespaceRouter::single(Arc::new(MemoryBackend::new("memory")));
        let backend = &router.routes()[0].backend;
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(
            "12345",
        ))]));
        backend.upload("ns", "a", 5, body).await.unwrap();
        assert!(matches!(
            backend.stat("ns", "missing").await,
            Err(BackendError::NotFound { .. })
        ));
        let download = backend.download("ns", "a", None).await.unwrap();
        let got: Vec<bytes::Bytes> = download.body.try_collect().await.unwrap();
        assert_eq!(got.concat(), b"12345");

        let mut out = Exposition::new();
        router.collect(&mut out);
        let text = out.finish();
        let scrape = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let calls = |op: &str, result: &str| {
            scrape.sum(
                "shoal_backend_calls_total",
                &[("plugin", "memory"), ("operation", op), ("result", result)],
            )
        };
        assert_eq!(calls("upload", "ok"), 1.0, "{text}");
        assert_eq!(calls("stat", "not_found"), 1.0, "{text}");
        assert_eq!(calls("download", "ok"), 1.0, "{text}");
        assert_eq!(
            scrape.sum(
                "shoal_backend_call_duration_seconds_count",
                &[("operation", "download")]
            ),
            1.0
        );
        assert_eq!(scrape.sum("shoal_backend_uploaded_bytes_total", &[]), 5.0);
        assert_eq!(scrape.sum("shoal_backend_downloaded_bytes_total", &[]), 5.0);
        // A native backend has no traps or breaker to show.
        assert_eq!(scrape.value("shoal_plugin_traps_total", &[]), None);
    }
}
