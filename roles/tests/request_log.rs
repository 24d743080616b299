//! The request log across a cluster in one process: a pull through an agent and a refused push
//! each leave exactly one request line per request, and the origin's and tracker's own request
//! lines appear with their route fields too. Lines are read from a JSON subscriber installed
//! for the whole test process (the roles run on several threads).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Cluster, Spec, noise, poll_until};
use serde_json::Value;

/// Everything logged in this process, as `log.format: json` writes it.
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

fn logs() -> &'static Buffer {
    static LOGS: OnceLock<Buffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter("warn,shoal=info")
            .with_writer(move || sink.clone())
            .init();
        buffer
    })
}

fn request_lines() -> Vec<Value> {
    let text = String::from_utf8(logs().0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["target"] == "shoal::request")
        .collect()
}

/// The request lines with `id`, once there is at least one (up to 20 s).
async fn lines_of(id: &str) -> Vec<Value> {
    let with_id = || {
        request_lines()
            .into_iter()
            .filter(|l| l["request_id"] == id)
            .collect::<Vec<_>>()
    };
    poll_until(Duration::from_secs(20), || async { !with_id().is_empty() }).await;
    with_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_an_agent_and_a_refused_push_are_one_line_each() {
    logs();
    let cluster = Cluster::start(Spec {
        trackers: 1,
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let agent = cluster.agents[0].http;
    let bytes = noise(3 << 20, 9);
    let digest = cluster.push(0, "library/logged", bytes.clone()).await;

    // The origin logged the push with the namespace and digest of its route.
    let pushed: Vec<Value> = request_lines()
        .into_iter()
        .filter(|l| l["method"] == "PUT" && l["digest"] == digest.as_str())
        .collect();
    assert_eq!(pushed.len(), 1, "{pushed:#?}");
    assert_eq!(pushed[0]["route"], "/namespace/{ns}/blobs/{digest}");
    assert_eq!(pushed[0]["repository"], "library/logged");
    assert_eq!(pushed[0]["status"], 201);
    assert_eq!(pushed[0]["bytes_in"], bytes.len() as u64);

    // A pull of the blob through the agent.
    let r = cluster
        .http
        .get(format!("http://{agent}/v2/library/logged/blobs/{digest}"))
        .header("x-request-id", "agent-pull-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "agent-pull-1");
    assert_eq!(r.bytes().await.unwrap().len(), bytes.len());
    let lines = lines_of("agent-pull-1").await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(line["route"], "/v2/{name}/blobs/{digest}");
    assert_eq!(
        (line["repository"].as_str(), line["digest"].as_str()),
        (Some("library/logged"), Some(digest.as_str()))
    );
    assert_eq!(
        (line["status"].as_u64(), line["bytes_out"].as_u64()),
        (Some(200), Some(bytes.len() as u64))
    );
    assert!(
        line.get("aborted").is_none() && line.get("error").is_none(),
        "{line}"
    );
    // The agent's announces reached the tracker, which logged them as requests of its own.
    assert!(
        request_lines()
            .iter()
            .any(|l| l["route"] == "/announce/{info_hash}" && l["status"] == 200),
        "no announce line"
    );

    // A push to the agent is refused: one line with the OCI code.
    let r = cluster
        .http
        .put(format!("http://{agent}/v2/library/logged/manifests/v1"))
        .header("x-request-id", "agent-push-1")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(status >= 400, "{status}");
    let lines = lines_of("agent-push-1").await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["status"], status);
    assert_eq!(lines[0]["error"], "UNSUPPORTED");
    assert_eq!(lines[0]["tag"], "v1");
}
