//! `shoal preload IMAGE --agents ADDR,...`: asks every agent at once to fetch an image ahead of
//! a rollout (`POST /preload`, `shoal_roles::agent::preload`) and shows each one's progress as
//! its stream of JSON lines comes in: a line per agent redrawn in place, with a bar, when
//! stdout is a terminal; plain lines otherwise (a log, CI). The exit code is 0 when every agent
//! has the image and 1 otherwise, after a line per agent saying how it ended and why.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use shoal_config::{ClientTls, HostPort};
use shoal_p2p::tls::{ClusterHttp, ClusterTls};
use shoal_roles::agent::preload::{KEEPALIVE, PATH, PreloadEvent, PreloadRequest};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::PreloadArgs;

/// Longest wait for an agent to start answering: it resolves the image (the tag at the
/// build-index, the manifests over P2P) before it sends its first byte.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest silence once the stream runs; the agent sends a line at least every
/// [`KEEPALIVE`], so this many missed lines mean it is gone.
const STALL_TIMEOUT: Duration = Duration::from_secs(KEEPALIVE.as_secs() * 6);
/// Longest line taken from an agent (they are under 1 KiB).
const MAX_LINE: usize = 64 * 1024;
/// Longest error body read from an agent.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How often a terminal is redrawn, at most.
const REDRAW: Duration = Duration::from_millis(100);
/// How often a plain line reports bytes alone for one agent, at most.
const PLAIN_PROGRESS: Duration = Duration::from_secs(5);
/// Width of the bar, in characters.
const BAR: usize = 24;

/// Runs `shoal preload`.
pub async fn run(args: PreloadArgs) -> anyhow::Result<ExitCode> {
    let tls = match &args.ca {
        None => ClusterTls::plain(),
        Some(ca) => ClusterTls::load(Some(&ClientTls {
            ca: ca.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
        }))
        .context("--ca, --cert, --key")?,
    };
    let http = tls.http(None).context("building the HTTP client")?;
    let mut agents: Vec<HostPort> = Vec::new();
    for a in args.agents {
        if !agents.contains(&a) {
            agents.push(a);
        }
    }
    let request = PreloadRequest {
        image: args.image.to_string(),
        platform: args.platform.as_ref().map(ToString::to_string),
    };
    let (tx, mut rx) = mpsc::channel(64);
    let mut runs = tokio::task::JoinSet::new();
    for (i, agent) in agents.iter().enumerate() {
        let (http, agent, request, tx) = (http.clone(), agent.clone(), request.clone(), tx.clone());
        runs.spawn(async move {
            let ended = preload_one(&http, &agent, &request, i, &tx).await;
            let _ = tx.send(Update::Ended(i, ended)).await;
        });
    }
    drop(tx);

    let mut view = View::new(agents, std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    while let Some(update) = rx.recv().await {
        for line in view.apply(update, Instant::now()) {
            writeln!(out, "{line}")?;
        }
        view.redraw(&mut out, Instant::now(), false)?;
    }
    while runs.join_next().await.is_some() {}
    view.redraw(&mut out, Instant::now(), true)?;
    // Plain: the last line of every agent. Terminal: the lines it had to cut, whole.
    for line in view.lines() {
        if !view.terminal || view.cut(&line).is_some() {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    let failed = view.failed();
    if failed.is_empty() {
        writeln!(
            out,
            "preloaded {} onto {} agents",
            args.image,
            view.agents.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<String> = failed.iter().map(ToString::to_string).collect();
    eprintln!(
        "error: preloading {} failed on {} of {} agents: {}",
        args.image,
        failed.len(),
        view.agents.len(),
        names.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

/// What a run tells the view.
#[derive(Debug)]
enum Update {
    /// Agent `.0` sent a line.
    Event(usize, PreloadEvent),
    /// Agent `.0`'s preload is over: `Err` says why it failed when the agent did not.
    Ended(usize, Result<(), String>),
}

/// Preloads onto `agent`, sending its lines on `tx`; `Err` when the request, the answer or
/// the stream failed (a failure the agent reports arrives as its `error` line instead).
async fn preload_one(
    http: &ClusterHttp,
    agent: &HostPort,
    request: &PreloadRequest,
    i: usize,
    tx: &mpsc::Sender<Update>,
) -> Result<(), String> {
    let url = http.url(agent, PATH);
    let sent = http
        .post(&url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(request).map_err(|e| e.to_string())?)
        .send();
    let mut resp = match tokio::time::timeout(ANSWER_TIMEOUT, sent).await {
        Err(_) => return Err(format!("no answer from {url} within {ANSWER_TIMEOUT:?}")),
        // reqwest's message names the URL; the chain under it says what failed.
        Ok(Err(e)) => return Err(format!("{:#}", anyhow::Error::from(e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(refusal(
            status,
            read_capped(&mut resp, MAX_ERROR_BODY).await,
        ));
    }
    let mut lines = Lines::default();
    let mut finished = false;
    loop {
        let chunk = match tokio::time::timeout(STALL_TIMEOUT, resp.chunk()).await {
            Err(_) => return Err(format!("the agent sent nothing for {STALL_TIMEOUT:?}")),
            Ok(Err(e)) => {
                return Err(format!(
                    "the stream broke off: {:#}",
                    anyhow::Error::from(e)
                ));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        for line in lines.push(&chunk)? {
            let event: PreloadEvent = serde_json::from_slice(&line).map_err(|e| {
                format!(
                    "the agent sent a line that is not a preload event ({e}): {:.200}",
                    String::from_utf8_lossy(&line)
                )
            })?;
            finished |= matches!(
                event,
                PreloadEvent::Done { .. } | PreloadEvent::Error { .. }
            );
            if tx.send(Update::Event(i, event)).await.is_err() {
                return Ok(());
            }
        }
    }
    if !finished {
        return Err("the agent ended the stream before the preload finished".to_owned());
    }
    Ok(())
}

/// Why an agent refused: its status, and the code and message of an OCI error body.
fn refusal(status: reqwest::StatusCode, body: Vec<u8>) -> String {
    let parsed: Option<(String, String)> = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some((
                e.get("code")?.as_str()?.to_owned(),
                e.get("message")?.as_str()?.to_owned(),
            ))
        });
    match parsed {
        Some((code, message)) => format!("{status}: {code}: {message}"),
        None => format!("{status}: {:.200}", String::from_utf8_lossy(&body).trim()),
    }
}

async fn read_capped(resp: &mut reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk[..chunk.len().min(cap - out.len())]);
        if out.len() >= cap {
            break;
        }
    }
    out
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// The lines `chunk` completes; `Err` when a line grows past [`MAX_LINE`].
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if line.len() > 1 {
                out.push(line);
            }
        }
        if self.pending.len() > MAX_LINE {
            return Err(format!(
                "the agent sent a line longer than {MAX_LINE} bytes"
            ));
        }
        Ok(out)
    }
}

/// Where one agent's preload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Asked; the image is not resolved yet.
    Waiting,
    /// Blobs are arriving.
    Running {
        done: u32,
        blobs: u32,
        bytes: u64,
        total: u64,
    },
    /// Every blob is on the agent.
    Done {
        blobs: u32,
        total: u64,
        fetched: u32,
    },
    /// It failed, for this reason.
    Failed(String),
}

struct Agent {
    addr: HostPort,
    state: State,
    /// When a plain line last reported this agent's bytes.
    reported: Option<Instant>,
}

/// Every agent's state, and how it is shown.
struct View {
    agents: Vec<Agent>,
    terminal: bool,
    /// Lines drawn on the terminal last time (to move back over them).
    drawn: usize,
    /// The terminal's columns when last drawn.
    width: Option<usize>,
    last_draw: Option<Instant>,
}

impl View {
    fn new(agents: Vec<HostPort>, terminal: bool) -> View {
        View {
            agents: agents
                .into_iter()
                .map(|addr| Agent {
                    addr,
                    state: State::Waiting,
                    reported: None,
                })
                .collect(),
            terminal,
            drawn: 0,
            width: None,
            last_draw: None,
        }
    }

    /// Takes `update` in; the plain lines it makes (none on a terminal, which is redrawn).
    fn apply(&mut self, update: Update, now: Instant) -> Vec<String> {
        let (i, plain) = match update {
            Update::Ended(i, Ok(())) => (i, false),
            Update::Ended(i, Err(why)) => {
                self.agents[i].state = State::Failed(why);
                (i, false)
            }
            Update::Event(i, event) => {
                let agent = &mut self.agents[i];
                let (state, plain) = match event {
                    PreloadEvent::Resolved { blobs, total, .. } => (
                        State::Running {
                            done: 0,
                            blobs,
                            bytes: 0,
                            total,
                        },
                        true,
                    ),
                    PreloadEvent::Blob {
                        done,
                        blobs,
                        bytes,
                        total,
                        ..
                    } => (
                        State::Running {
                            done,
                            blobs,
                            bytes,
                            total,
                        },
                        true,
                    ),
                    PreloadEvent::Progress {
                        done,
                        blobs,
                        bytes,
                        total,
                    } => {
                        let due = agent
                            .reported
                            .is_none_or(|t| now.duration_since(t) >= PLAIN_PROGRESS);
                        (
                            State::Running {
                                done,
                                blobs,
                                bytes,
                                total,
                            },
                            due,
                        )
                    }
                    PreloadEvent::Done {
                        blobs,
                        total,
                        fetched,
                    } => (
                        State::Done {
                            blobs,
                            total,
                            fetched,
                        },
                        false,
                    ),
                    PreloadEvent::Error { error, .. } => (State::Failed(error), false),
                };
                agent.state = state;
                (i, plain)
            }
        };
        if self.terminal || !plain {
            return Vec::new();
        }
        self.agents[i].reported = Some(now);
        vec![line(&self.agents[i], false)]
    }

    /// Redraws the terminal's lines when it is one, at most every [`REDRAW`] unless `force`.
    fn redraw(&mut self, out: &mut impl Write, now: Instant, force: bool) -> std::io::Result<()> {
        if !self.terminal
            || !force
                && self
                    .last_draw
                    .is_some_and(|t| now.duration_since(t) < REDRAW)
        {
            return Ok(());
        }
        if self.drawn > 0 {
            // Back to the first line drawn.
            write!(out, "\x1b[{}F", self.drawn)?;
        }
        // A line longer than the terminal would wrap and throw the next redraw off.
        self.width = terminal_width();
        for l in self.lines() {
            let l = self.cut(&l).unwrap_or(l);
            writeln!(out, "\x1b[2K{l}")?;
        }
        out.flush()?;
        self.drawn = self.agents.len();
        self.last_draw = Some(now);
        Ok(())
    }

    /// `line` cut to the terminal's width (`None`: it fits, or the width is unknown).
    fn cut(&self, line: &str) -> Option<String> {
        let width = self.width?;
        (line.chars().count() >= width).then(|| {
            line.chars()
                .take(width.saturating_sub(2))
                .chain(['…'])
                .collect()
        })
    }

    /// A line per agent, as it stands.
    fn lines(&self) -> Vec<String> {
        self.agents.iter().map(|a| line(a, self.terminal)).collect()
    }

    /// The agents whose preload failed, or never finished.
    fn failed(&self) -> Vec<&HostPort> {
        self.agents
            .iter()
            .filter(|a| !matches!(a.state, State::Done { .. }))
            .map(|a| &a.addr)
            .collect()
    }
}

/// Columns of the terminal stdout is, if it is one.
fn terminal_width() -> Option<usize> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// One agent's line: `agent ADDR: 2/4 blobs, 12.0 MiB/30.0 MiB`, with a bar on a terminal.
fn line(agent: &Agent, bar: bool) -> String {
    let what = match &agent.state {
        State::Waiting => "resolving the image".to_owned(),
        State::Running {
            done,
            blobs,
            bytes,
            total,
        } => {
            let counts = format!("{done}/{blobs} blobs, {}/{}", size(*bytes), size(*total));
            if bar {
                format!("{} {counts}", progress_bar(*bytes, *total))
            } else {
                counts
            }
        }
        State::Done {
            blobs,
            total,
            fetched,
        } => format!(
            "done, {blobs}/{blobs} blobs, {} ({fetched} fetched, {} already there)",
            size(*total),
            blobs - fetched
        ),
        State::Failed(why) => format!("failed: {why}"),
    };
    format!("agent {}: {what}", agent.addr)
}

/// `[#########---------------]  37%`
fn progress_bar(bytes: u64, total: u64) -> String {
    let share = if total == 0 {
        1.0
    } else {
        (bytes as f64 / total as f64).min(1.0)
    };
    let filled = (share * BAR as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        "-".repeat(BAR - filled),
        share * 100.0
    )
}

/// `n` bytes for people: `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`.
fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> HostPort {
        s.parse().unwrap()
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12 << 20), "12.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn bars_fill_with_the_bytes() {
        assert_eq!(progress_bar(0, 100), format!("[{}]   0%", "-".repeat(BAR)));
        assert_eq!(
            progress_bar(100, 100),
            format!("[{}] 100%", "#".repeat(BAR))
        );
        assert_eq!(progress_bar(1, 2).matches('#').count(), BAR / 2);
        assert_eq!(progress_bar(0, 0), format!("[{}] 100%", "#".repeat(BAR)));
    }

    #[test]
    fn lines_split_across_chunks_and_a_long_one_is_refused() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"a\"").unwrap().is_empty());
        assert_eq!(l.push(b":1}\n\n{\"b\":2}\n{").unwrap().len(), 2);
        assert!(l.push(&vec![b'x'; MAX_LINE]).is_err());
    }

    #[test]
    fn plain_lines_follow_the_events_and_progress_is_throttled() {
        let mut v = View::new(vec![addr("127.0.0.1:16000"), addr("[::1]:16001")], false);
        let t0 = Instant::now();
        let resolved = PreloadEvent::Resolved {
            repository: "team/app".parse().unwrap(),
            digest: shoal_registry::Digest::sha256_of(b"m"),
            manifests: 1,
            blobs: 4,
            total: 30 << 20,
        };
        assert_eq!(
            v.apply(Update::Event(0, resolved), t0),
            ["agent 127.0.0.1:16000: 0/4 blobs, 0 B/30.0 MiB"]
        );
        let progress = |bytes| PreloadEvent::Progress {
            bytes,
            total: 30 << 20,
            done: 0,
            blobs: 4,
        };
        assert!(v.apply(Update::Event(0, progress(1 << 20)), t0).is_empty());
        assert_eq!(
            v.apply(Update::Event(0, progress(12 << 20)), t0 + PLAIN_PROGRESS),
            ["agent 127.0.0.1:16000: 0/4 blobs, 12.0 MiB/30.0 MiB"]
        );
        let done = PreloadEvent::Done {
            total: 30 << 20,
            blobs: 4,
            fetched: 3,
        };
        assert!(v.apply(Update::Event(0, done), t0).is_empty());
        assert!(v.apply(Update::Ended(0, Ok(())), t0).is_empty());
        let refused = "connection refused".to_owned();
        assert!(v.apply(Update::Ended(1, Err(refused)), t0).is_empty());
        assert_eq!(
            v.lines(),
            [
                "agent 127.0.0.1:16000: done, 4/4 blobs, 30.0 MiB (3 fetched, 1 already there)",
                "agent [::1]:16001: failed: connection refused",
            ]
        );
        assert_eq!(v.failed(), [&addr("[::1]:16001")]);
    }

    #[test]
    fn a_line_wider_than_the_terminal_is_cut() {
        let mut v = View::new(vec![addr("127.0.0.1:1")], true);
        assert_eq!(v.cut(&"x".repeat(100)), None);
        v.width = Some(10);
        assert_eq!(v.cut("123456789"), None);
        assert_eq!(v.cut("1234567890").as_deref(), Some("12345678…"));
    }

    #[test]
    fn a_terminal_is_redrawn_in_place_with_bars() {
        let mut v = View::new(vec![addr("127.0.0.1:1"), addr("127.0.0.1:2")], true);
        let mut out = Vec::new();
        let t0 = Instant::now();
        v.redraw(&mut out, t0, false).unwrap();
        let first = String::from_utf8(std::mem::take(&mut out)).unwrap();
        assert_eq!(first.matches('\n').count(), 2);
        assert!(!first.contains("\x1b[2F"), "{first:?}");
        let event = PreloadEvent::Blob {
            digest: shoal_registry::Digest::sha256_of(b"l"),
            size: 5,
            fetched: true,
            bytes: 5,
            total: 10,
            done: 1,
            blobs: 2,
        };
        assert!(v.apply(Update::Event(1, event), t0).is_empty());
        // Too soon: nothing; forced, or later: back up two lines and draw both again.
        v.redraw(&mut out, t0, false).unwrap();
        assert!(out.is_empty());
        v.redraw(&mut out, t0 + REDRAW, false).unwrap();
        let again = String::from_utf8(out).unwrap();
        assert!(again.starts_with("\x1b[2F"), "{again:?}");
        assert!(
            again
                .contains("agent 127.0.0.1:2: [############------------]  50% 1/2 blobs, 5 B/10 B"),
            "{again:?}"
        );
    }
}
