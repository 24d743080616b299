//! Where log lines go and which are written: stderr, as text or JSON (`log.format`), filtered by
//! `log.level` (see [`shoal_config::LogLevel::directives`]: shoal's crates at the level,
//! libraries at `warn` unless named), or by `RUST_LOG` when it is set.

use shoal_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Starts logging as `config` says, once per process, and raises the file-descriptor limit.
pub(crate) fn init(config: &LogConfig) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, bad_env) = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(config.level.directives()), Some(e)),
        None => (EnvFilter::new(config.level.directives()), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // The event's fields at the top level, the request's span (its request id) under
        // "span"; never colour codes.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .try_init(),
    };
    if let Some(e) = bad_env {
        tracing::warn!(error = %e, "RUST_LOG is not a tracing filter; using log.level instead");
    }
    // Every command that logs serves or works on many files: the soft file-descriptor limit
    // goes up to the hard one before anything is opened (logged with the figure).
    shoal_roles::serve::raise_fd_limit();
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use shoal_config::LogLevel;
    use tracing_subscriber::EnvFilter;

    /// A writer into a shared buffer, for a subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The targets of the events that pass `level`'s filter, of a debug and an info event
    /// from each of a few targets.
    fn written(level: &str) -> String {
        let level: LogLevel = level.parse().unwrap();
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::try_new(level.directives()).unwrap())
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "shoal_p2p::wire", "p2p-debug");
            tracing::info!(target: "shoal_p2p::wire", "p2p-info");
            tracing::debug!(target: "shoal_registry::api", "registry-debug");
            tracing::info!(target: "shoal::request", "request-info");
            tracing::debug!(target: "cranelift_codegen", "cranelift-debug");
            tracing::warn!(target: "cranelift_codegen", "cranelift-warn");
            tracing::debug!(target: "wasmtime", "wasmtime-debug");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_level_is_for_shoal_and_libraries_stay_at_warn() {
        let out = written("debug");
        for line in [
            "p2p-debug",
            "registry-debug",
            "request-info",
            "cranelift-warn",
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
        assert!(!out.contains("cranelift-debug") && !out.contains("wasmtime-debug"));
    }

    #[test]
    fn a_filter_raises_what_it_names_only() {
        let out = written("info,shoal_p2p=debug,wasmtime=debug");
        for line in [
            "p2p-debug",
            "request-info",
            "wasmtime-debug",
            "cranelift-warn",
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
        assert!(!out.contains("registry-debug") && !out.contains("cranelift-debug"));
        // shoal=... is every shoal crate at once, and the request log with them.
        let out = written("warn,shoal=debug");
        assert!(out.contains("registry-debug") && out.contains("request-info"));
        let out = written("info,shoal::request=off");
        assert!(out.contains("p2p-info") && !out.contains("request-info"));
    }
}
