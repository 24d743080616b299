//! Everything one store holds: the WASI and wasi-http contexts, the resource table, the
//! memory limits and what the operator granted (config, secrets, hosts). One struct per
//! instance; an instance that trapped is dropped with it, so nothing survives a trap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::p2::bindings::http::types as p2;

use http_body_util::BodyExt;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::allow::AllowedHosts;
use super::bindings::backend::shoal::backend::{config, log};

/// How the SDK's panic hook starts the line it logs.
const PANIC_PREFIX: &str = "panicked at ";
/// The most of a panic message a trap error carries.
const MAX_LAST_WORDS: usize = 1024;

/// What the operator's YAML grants one plugin; shared by all its stores.
#[derive(Debug)]
pub(crate) struct Grants {
    /// The plugin's name in logs and errors (`fs`, `http`, or the file name of a custom one).
    pub(crate) name: Arc<str>,
    /// The backend's YAML block, as JSON.
    pub(crate) config_json: String,
    /// Secrets from the matching `auth:` entry.
    pub(crate) secrets: BTreeMap<String, String>,
    /// Where outbound HTTP may go.
    pub(crate) hosts: AllowedHosts,
    /// The only directory the plugin sees, as its `/` (the `fs` backend's root).
    pub(crate) preopen: Option<std::path::PathBuf>,
    /// Timeout for each outbound request (connect, first byte, between bytes).
    pub(crate) http_timeout: Duration,
}

/// The `T` of `Store<T>` for every plugin.
pub(crate) struct PluginState {
    pub(crate) grants: Arc<Grants>,
    pub(crate) limits: StoreLimits,
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: Outbound,
    /// The first panic message the plugin logged during this store's life (the SDK's panic
    /// hook logs `panicked at FILE:LINE:COL: MESSAGE` at error level just before the trap).
    last_words: Option<String>,
}

impl PluginState {
    pub(crate) fn new(grants: Arc<Grants>, memory_bytes: usize) -> wasmtime::Result<Self> {
        let mut wasi = WasiCtx::builder();
        // No environment, arguments, stdin, network sockets or name lookups: plugins reach
        // the outside only through `wasi:http`, and that passes `Outbound`.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(root) = &grants.preopen {
            // File calls run on the calling thread instead of a `spawn_blocking` round trip
            // each: a `stat` is an open, an fstat and a close, and the three thread hand-offs
            // cost about 10x the syscalls (p50 227 us against 14 us native, bench/RESULTS.md).
            // Reads are bounded (1 MiB per `reader.read`), so a worker blocks briefly at most.
            wasi.allow_blocking_current_thread(true);
            wasi.preopened_dir(root, "/", wasmtime_wasi::FsPerms::ReadWrite)?;
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .instances(64)
            .tables(64)
            .memories(8)
            .trap_on_grow_failure(true)
            .build();
        Ok(PluginState {
            outbound: Outbound {
                hosts: grants.hosts.clone(),
                timeout: grants.http_timeout,
                plugin: grants.name.clone(),
                denied: None,
            },
            grants,
            limits,
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            last_words: None,
        })
    }

    /// Readies a store whose call returned for the next call: what the last call was
    /// refused must not be blamed on the next.
    pub(crate) fn reuse(&mut self) {
        self.outbound.denied = None;
    }

    /// What the plugin said as it panicked, when it did (see `last_words`).
    pub(crate) fn last_words(&self) -> Option<&str> {
        self.last_words.as_deref()
    }

    /// The first URL the allow-list refused during this store's life, if any: a plugin that
    /// tried to leave its grant is at fault whatever error it then reports.
    pub(crate) fn denied(&self) -> Option<&str> {
        self.outbound.denied.as_deref()
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The one choke point of a plugin's outgoing HTTP: the allow-list, then the default client.
struct Outbound {
    hosts: AllowedHosts,
    timeout: Duration,
    plugin: Arc<str>,
    denied: Option<String>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if !self.hosts.permits(request.uri()) {
            tracing::warn!(
                plugin = %self.plugin,
                uri = %request.uri(),
                allowed = %self.hosts,
                "plugin request denied: host not granted"
            );
            self.denied.get_or_insert_with(|| request.uri().to_string());
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // A plugin may shorten the timeouts, never drop them.
        let t = self.timeout;
        let cap = |v: Option<Duration>| Some(v.map_or(t, |v| v.min(t)));
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: cap(options.connect_timeout),
            first_byte_timeout: cap(options.first_byte_timeout),
            between_bytes_timeout: cap(options.between_bytes_timeout),
        };
        // Only where to: the path and query may carry signatures.
        let upstream = match (request.uri().scheme_str(), request.uri().authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => request.uri().to_string(),
        };
        let plugin = self.plugin.clone();
        Box::new(async move {
            let sent = wasmtime_wasi_http::default_send_request(request, Some(options)).await;
            let (response, io) = sent.inspect_err(|e| {
                // One line naming the upstream, in place of wasi-http's own, which does not.
                tracing::warn!(%plugin, %upstream, error = %e, "plugin request failed");
            })?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> p2::ErrorCode {
        Outbound::quiet_connect(err)
    }

    fn p2_error_from_tls(&mut self, _: &std::io::Error) -> p2::ErrorCode {
        p2::ErrorCode::TlsProtocolError
    }

    fn p2_error_from_hyper(&mut self, _: &hyper::Error) -> p2::ErrorCode {
        p2::ErrorCode::HttpProtocolError
    }
}

/// wasi-http's mapping of transport errors to WASI error codes, without its log line: the
/// failure is logged once, with the plugin and the upstream, where the request was sent.
impl Outbound {
    fn quiet_connect(err: &std::io::Error) -> p2::ErrorCode {
        match err.kind() {
            std::io::ErrorKind::TimedOut => p2::ErrorCode::ConnectionTimeout,
            _ => p2::ErrorCode::ConnectionRefused,
        }
    }
}

impl config::Host for PluginState {
    fn get_config(&mut self) -> String {
        self.grants.config_json.clone()
    }

    fn get_secret(&mut self, key: String) -> Option<String> {
        self.grants.secrets.get(&key).cloned()
    }
}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) {
        if level == log::Level::Error
            && self.last_words.is_none()
            && message.starts_with(PANIC_PREFIX)
        {
            // Bounded: a plugin decides how long its panic message is.
            let mut words = message.clone();
            if words.len() > MAX_LAST_WORDS {
                let mut cut = MAX_LAST_WORDS;
                while !words.is_char_boundary(cut) {
                    cut -= 1;
                }
                words.truncate(cut);
                words.push_str("...");
            }
            self.last_words = Some(words);
        }
        let plugin = &*self.grants.name;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
