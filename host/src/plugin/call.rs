//! `shoal plugin call`: runs one export of a component under the sandbox a role would give it
//! (the same engine, limits, outbound hook and error mapping), with the grants named on the
//! command line instead of a YAML file, and prints the result. For plugin authors: try an
//! export against a real store without writing a config or starting a registry.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;

use super::allow::AllowedHosts;
use super::check::{WorldKind, inspect};
use super::engine::{PluginEngine, PluginLimits};
use super::state::Grants;
use super::{Backend, BackendError, ByteRange, HealthPolicy};

/// Timeout of each outbound request the plugin makes.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// What `shoal plugin call` runs: the component, its grants, and one export.
#[derive(clap::Args, Debug)]
pub struct CallArgs {
    /// The component (`.wasm`): a storage backend or a health policy.
    pub file: PathBuf,
    /// The plugin's settings as JSON, what the `config:` block of its YAML would hold.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub config: String,
    /// A secret the plugin reads with `get-secret`, as KEY=VALUE (repeatable).
    #[arg(long = "secret", value_name = "KEY=VALUE")]
    pub secrets: Vec<String>,
    /// A secret taken from an environment variable, as KEY=VAR, so it stays out of the
    /// process list (repeatable).
    #[arg(long = "secret-env", value_name = "KEY=VAR")]
    pub secret_envs: Vec<String>,
    /// A host the plugin may reach over HTTP, as in `allowed_hosts:` (repeatable); nothing
    /// else is allowed.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_hosts: Vec<String>,
    /// A folder the plugin sees as its `/`, as the `fs` backend sees its root.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// `plugins.memory_bytes` for this call.
    #[arg(long, value_name = "BYTES")]
    pub memory_bytes: Option<usize>,
    /// The export to run.
    #[command(subcommand)]
    pub export: Export,
}

/// One export and its arguments.
#[derive(clap::Subcommand, Debug)]
pub enum Export {
    /// Backend `stat`: prints the blob's size.
    Stat {
        /// The namespace (a repository) the call passes.
        namespace: String,
        /// The object's name.
        name: String,
    },
    /// Backend `download`: writes the bytes to stdout, or to `--output`.
    Download {
        /// The namespace (a repository) the call passes.
        namespace: String,
        /// The object's name.
        name: String,
        /// Only these bytes: `START-END` (inclusive) or `START-`.
        #[arg(long, value_name = "START-END")]
        range: Option<String>,
        /// Write the bytes to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Backend `upload`: stores FILE (or stdin, with `-` or no FILE) under the name.
    Upload {
        /// The namespace (a repository) the call passes.
        namespace: String,
        /// The object's name.
        name: String,
        /// The content; `-` or none reads stdin.
        file: Option<PathBuf>,
    },
    /// Backend `list`: prints one name per line, then the continuation, if any.
    List {
        /// The namespace (a repository) the call passes.
        namespace: String,
        /// Names starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Where the page starts, from a previous page.
        #[arg(long)]
        continuation: Option<String>,
        /// The most names in the page.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Backend `delete`.
    Delete {
        /// The namespace (a repository) the call passes.
        namespace: String,
        /// The object's name.
        name: String,
    },
    /// A health policy's decisions: feeds it EVENTs in order, on one instance, and prints
    /// whether the host is healthy after each. An event is `HOST=ok` or `HOST=fail` (an
    /// observation) or `HOST` (a question), each optionally `@MS`, the time in milliseconds
    /// (default: the previous event's, starting at 0).
    Policy {
        /// `HOST=ok[@MS]`, `HOST=fail[@MS]` or `HOST[@MS]`.
        #[arg(required = true)]
        events: Vec<String>,
    },
}

/// Runs the call; exit 1 when the export returns an error (printed as the API would see it).
pub async fn run_call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let config: serde_json::Value = serde_json::from_str(&args.config)
        .with_context(|| format!("--config is not JSON: {}", args.config))?;
    let mut limits = PluginLimits::default();
    if let Some(bytes) = args.memory_bytes {
        limits.memory_bytes = bytes;
    }
    let engine = PluginEngine::new(limits, None)?;
    let name = args
        .file
        .file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    let inspection = inspect(&engine, &name, &wasm)?;
    if let Err(why) = &inspection.runnable {
        bail!("{} cannot run here: {why}", args.file.display());
    }
    match (&args.export, inspection.world) {
        (Export::Policy { events }, WorldKind::Policy) => {
            let policy = engine.policy(&name, &wasm, &config)?;
            run_policy(&policy, events).await
        }
        (Export::Policy { .. }, world) => {
            bail!(
                "`policy` runs a health policy; {} is {world}",
                args.file.display()
            )
        }
        (_, WorldKind::Backend) => {
            let grants = Grants {
                name: name.as_str().into(),
                config_json: config.to_string(),
                secrets: secrets(&args.secrets, &args.secret_envs)?,
                hosts: AllowedHosts::parse(args.allow_hosts.iter().map(String::as_str))?,
                preopen: match &args.dir {
                    Some(dir) => Some(
                        dir.canonicalize()
                            .with_context(|| format!("--dir {}", dir.display()))?,
                    ),
                    None => None,
                },
                http_timeout: HTTP_TIMEOUT,
            };
            let backend = engine.backend_with_grants(&wasm, grants)?;
            match run_backend(&backend, args.export).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("error: {}: {e}", variant(&e));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        (_, world) => bail!(
            "stat/download/upload/list/delete run a storage backend; {} is {world}",
            args.file.display()
        ),
    }
}

/// The WIT error variant (or host-side failure) an error is, as authors read it in the WIT.
fn variant(e: &BackendError) -> &'static str {
    match e {
        BackendError::NotFound { .. } => "not-found",
        BackendError::Unauthorized { .. } => "unauthorized",
        BackendError::Throttled { .. } => "throttled",
        BackendError::Unavailable { .. } => "unavailable",
        BackendError::Invalid { .. } => "invalid",
        BackendError::Other { .. } => "other",
        BackendError::Trapped { .. } => "trap",
        BackendError::HostDenied { .. } => "host denied",
        BackendError::BreakerOpen { .. } => "breaker open",
    }
}

/// `--secret KEY=VALUE` and `--secret-env KEY=VAR`, as the `auth:` entry would grant them.
fn secrets(pairs: &[String], envs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--secret {pair:?}: expected KEY=VALUE"))?;
        out.insert(key.to_owned(), value.to_owned());
    }
    for pair in envs {
        let (key, var) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--secret-env {pair:?}: expected KEY=VAR"))?;
        let value = std::env::var(var)
            .map_err(|_| anyhow!("--secret-env {pair:?}: the variable {var} is not set"))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

async fn run_backend(backend: &dyn Backend, export: Export) -> Result<(), BackendError> {
    let local = |plugin: &str, message: String| BackendError::Invalid {
        plugin: plugin.to_owned(),
        message,
    };
    let plugin = backend.name().to_owned();
    match export {
        Export::Stat { namespace, name } => {
            let info = backend.stat(&namespace, &name).await?;
            println!("size: {}", info.size);
        }
        Export::Download {
            namespace,
            name,
            range,
            output,
        } => {
            let range = range
                .as_deref()
                .map(parse_range)
                .transpose()
                .map_err(|m| local(&plugin, m))?;
            let download = backend.download(&namespace, &name, range).await?;
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
                    local(&plugin, format!("cannot create {}: {e}", path.display()))
                })?),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut body = download.body;
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BackendError::Unavailable {
                    plugin: plugin.clone(),
                    message: format!("the body broke off after {written} bytes: {e}"),
                })?;
                sink.write_all(&chunk)
                    .map_err(|e| local(&plugin, format!("writing the bytes: {e}")))?;
                written += chunk.len() as u64;
            }
            sink.flush()
                .map_err(|e| local(&plugin, format!("writing the bytes: {e}")))?;
            let announced = download
                .length
                .map_or_else(String::new, |n| format!(" (announced {n})"));
            eprintln!("downloaded {written} bytes{announced}");
        }
        Export::Upload {
            namespace,
            name,
            file,
        } => {
            let (size, body) = upload_body(file.as_deref())
                .await
                .map_err(|m| local(&plugin, m))?;
            backend.upload(&namespace, &name, size, body).await?;
            println!("uploaded {size} bytes");
        }
        Export::List {
            namespace,
            prefix,
            continuation,
            limit,
        } => {
            let page = backend
                .list(&namespace, &prefix, continuation, limit)
                .await?;
            for name in &page.names {
                println!("{name}");
            }
            if let Some(next) = page.continuation {
                println!("continuation: {next}");
            }
        }
        Export::Delete { namespace, name } => {
            backend.delete(&namespace, &name).await?;
            println!("deleted");
        }
        Export::Policy { .. } => unreachable!("dispatched to run_policy"),
    }
    Ok(())
}

/// The upload's size and bytes: a file streamed from disk, or stdin read whole (its size must
/// be known before the call).
async fn upload_body(file: Option<&Path>) -> Result<(u64, super::ByteStream), String> {
    match file.filter(|f| *f != Path::new("-")) {
        Some(path) => {
            let opened = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let size = opened
                .metadata()
                .await
                .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
                .len();
            let stream = tokio_util::io::ReaderStream::with_capacity(opened, 1 << 20);
            Ok((size, Box::pin(stream)))
        }
        None => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .map_err(|e| format!("reading stdin: {e}"))?;
            let size = bytes.len() as u64;
            let chunk: std::io::Result<bytes::Bytes> = Ok(bytes.into());
            Ok((size, Box::pin(futures_util::stream::iter([chunk]))))
        }
    }
}

/// `START-END` (inclusive) or `START-`.
fn parse_range(text: &str) -> Result<ByteRange, String> {
    let bad = || format!("--range {text:?}: expected START-END or START-, in bytes");
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let offset: u64 = start.trim().parse().map_err(|_| bad())?;
    let length = match end.trim() {
        "" => None,
        end => {
            let end: u64 = end.parse().map_err(|_| bad())?;
            if end < offset {
                return Err(bad());
            }
            Some(end - offset + 1)
        }
    };
    Ok(ByteRange { offset, length })
}

/// One parsed policy event.
#[derive(Debug, PartialEq)]
struct Event {
    host: String,
    /// `Some(ok)` for an observation, `None` for a question.
    observed: Option<bool>,
    at_ms: Option<u64>,
}

fn parse_event(text: &str) -> Result<Event, String> {
    let (body, at_ms) = match text.rsplit_once('@') {
        Some((body, ms)) => (
            body,
            Some(
                ms.parse()
                    .map_err(|_| format!("event {text:?}: `@{ms}` is not milliseconds"))?,
            ),
        ),
        None => (text, None),
    };
    let (host, observed) = match body.split_once('=') {
        Some((host, "ok")) => (host, Some(true)),
        Some((host, "fail")) => (host, Some(false)),
        Some((_, other)) => {
            return Err(format!(
                "event {text:?}: `{other}` is not an outcome: expected ok or fail"
            ));
        }
        None => (body, None),
    };
    if host.is_empty() {
        return Err(format!("event {text:?} names no host"));
    }
    Ok(Event {
        host: host.to_owned(),
        observed,
        at_ms,
    })
}

async fn run_policy(policy: &dyn HealthPolicy, events: &[String]) -> anyhow::Result<ExitCode> {
    let events = events
        .iter()
        .map(|e| parse_event(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!(e))?;
    let mut now_ms = 0;
    for event in events {
        now_ms = event.at_ms.unwrap_or(now_ms);
        let now = UNIX_EPOCH + Duration::from_millis(now_ms);
        let result = async {
            if let Some(ok) = event.observed {
                policy.observe(&event.host, ok, now).await?;
            }
            policy.healthy(&event.host, now).await
        }
        .await;
        let what = match event.observed {
            Some(true) => "ok",
            Some(false) => "fail",
            None => "?",
        };
        match result {
            Ok(healthy) => println!(
                "@{now_ms} {} {what} -> {}",
                event.host,
                if healthy { "healthy" } else { "unhealthy" }
            ),
            Err(e) => {
                eprintln!("error: {}: {e}", variant(&e));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_events_parse_or_say_what_they_expect() {
        assert_eq!(
            parse_range("10-19"),
            Ok(ByteRange {
                offset: 10,
                length: Some(10)
            })
        );
        assert_eq!(
            parse_range("5-"),
            Ok(ByteRange {
                offset: 5,
                length: None
            })
        );
        assert!(parse_range("9-3").unwrap_err().contains("START-END"));
        assert!(parse_range("x").is_err());
        assert_eq!(
            parse_event("a:80=fail@1500"),
            Ok(Event {
                host: "a:80".into(),
                observed: Some(false),
                at_ms: Some(1500)
            })
        );
        assert_eq!(
            parse_event("a:80"),
            Ok(Event {
                host: "a:80".into(),
                observed: None,
                at_ms: None
            })
        );
        assert!(parse_event("a=maybe").unwrap_err().contains("ok or fail"));
        assert!(parse_event("=ok").unwrap_err().contains("no host"));
        assert!(parse_event("a@soon").unwrap_err().contains("milliseconds"));
    }
}
