//! A WebHDFS fake (a mock, named as such: no real HDFS runs here): two name nodes sharing one
//! namespace, each of which can be made a standby, and a data node, each on its own free
//! port of 127.0.0.1, served by axum on a thread of their own (so sync and async tests alike
//! can own one). Files live in memory.
//!
//! Written from the WebHDFS REST API reference (hadoop-hdfs `WebHDFS.md`):
//! - `PUT ?op=CREATE[&overwrite=]` on a name node: 307 with `Location` on the data node and
//!   no body; `PUT` of the bytes there: 201 with `Location: webhdfs://...`. Parents are
//!   created; an existing file without `overwrite=true` is a 403 `FileAlreadyExistsException`.
//! - `GET ?op=OPEN[&offset=][&length=]`: 307 to the data node, which answers 200 with
//!   `length` bytes from `offset` (to the end without `length`, cut at the end).
//! - `GETFILESTATUS` (`{"FileStatus": {...}}`, `pathSuffix` empty), `LISTSTATUS`
//!   (`{"FileStatuses": {"FileStatus": [...]}}`, children in name order; a file lists
//!   itself), `MKDIRS`, `RENAME&destination=` and `DELETE[&recursive=]`, answering
//!   `{"boolean": ...}` with `FileSystem.rename`'s and `delete`'s semantics (a rename onto
//!   an existing file or into a missing folder is `false`; so is deleting nothing).
//! - Errors as `{"RemoteException": {"exception", "javaClassName", "message"}}` with the
//!   reference's status table: IllegalArgumentException 400, IOException and its subclasses
//!   403, FileNotFoundException 404.
//! - `user.name=` is recorded, for tests to check what was sent.
//!
//! Behaviour only this fake has checked, not any real HDFS (the reference does not say):
//! - a standby name node's answer, 403 `StandbyException` to every operation (as Hadoop's
//!   HA name nodes do, and Kraken's client fails over on);
//! - OPEN with an offset at or past the end of a non-empty file refused by the name node
//!   with a 403 `IOException` (what `NamenodeWebHdfsMethods` does);
//! - a `:` in a path component refused with 400 (HDFS's `DFSUtil.isValidName`);
//! - the data node's 200 carrying a `Content-Length`, and its body written all at once
//!   (a real data node makes the file visible while the bytes still arrive, which is why
//!   the plugin writes a hidden part and renames it).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// One node of the namespace.
#[derive(Clone)]
enum Node {
    Dir,
    File(Bytes),
}

/// The namespace both name nodes share, by absolute path (`/` for the root).
struct Namespace {
    nodes: BTreeMap<String, Node>,
}

/// Which node a request reached.
#[derive(Clone, Copy)]
enum Role {
    NameNode(usize),
    DataNode,
}

struct Shared {
    ns: Mutex<Namespace>,
    /// Per name node: answering as a standby.
    standby: [AtomicBool; 2],
    /// Requests each name node received, and the data node.
    namenode_hits: [AtomicUsize; 2],
    datanode_hits: AtomicUsize,
    /// Every `user.name` sent.
    users: Mutex<Vec<String>>,
    /// `127.0.0.1:PORT` of the data node, for redirects.
    datanode: Mutex<Option<SocketAddr>>,
}

/// The running fake; dropping it stops the servers.
pub struct WebHdfs {
    /// The two name nodes; which one is active is up to [`WebHdfs::set_standby`].
    pub namenodes: [SocketAddr; 2],
    pub datanode: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebHdfs {
    /// Starts two name nodes (both active) and a data node.
    pub fn start() -> WebHdfs {
        let shared = Arc::new(Shared {
            ns: Mutex::new(Namespace {
                nodes: BTreeMap::from([("/".to_owned(), Node::Dir)]),
            }),
            standby: [AtomicBool::new(false), AtomicBool::new(false)],
            namenode_hits: [AtomicUsize::new(0), AtomicUsize::new(0)],
            datanode_hits: AtomicUsize::new(0),
            users: Mutex::new(Vec::new()),
            datanode: Mutex::new(None),
        });
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let listeners = [bind(), bind(), bind()];
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr"))
            .collect();
        *shared.datanode.lock().unwrap() = Some(addrs[2]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the WebHDFS fake");
            runtime.block_on(async move {
                let mut servers = tokio::task::JoinSet::new();
                for (listener, role) in listeners.into_iter().zip([
                    Role::NameNode(0),
                    Role::NameNode(1),
                    Role::DataNode,
                ]) {
                    listener.set_nonblocking(true).expect("nonblocking");
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = Router::new()
                        .fallback(handle)
                        .layer(DefaultBodyLimit::disable())
                        .with_state((state.clone(), role));
                    servers.spawn(async move { axum::serve(listener, app).await });
                }
                let _ = stopped.await;
                servers.abort_all();
            });
        });
        WebHdfs {
            namenodes: [addrs[0], addrs[1]],
            datanode: addrs[2],
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Makes name node `index` answer as a standby (or as the active node again).
    pub fn set_standby(&self, index: usize, standby: bool) {
        self.shared.standby[index].store(standby, Ordering::SeqCst);
    }

    /// Requests name node `index` has received.
    pub fn namenode_hits(&self, index: usize) -> usize {
        self.shared.namenode_hits[index].load(Ordering::SeqCst)
    }

    /// Requests the data node has received.
    pub fn datanode_hits(&self) -> usize {
        self.shared.datanode_hits.load(Ordering::SeqCst)
    }

    /// Every `user.name` the name nodes were sent.
    pub fn users(&self) -> Vec<String> {
        self.shared.users.lock().unwrap().clone()
    }

    /// The bytes of the file at absolute `path`, if there is one.
    pub fn file(&self, path: &str) -> Option<Bytes> {
        match self.shared.ns.lock().unwrap().nodes.get(path) {
            Some(Node::File(bytes)) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Every path in the namespace, folders included.
    pub fn paths(&self) -> Vec<String> {
        self.shared
            .ns
            .lock()
            .unwrap()
            .nodes
            .keys()
            .cloned()
            .collect()
    }

    /// Stores `bytes` at absolute `path` directly (parents created), as another HDFS
    /// client would have.
    pub fn put(&self, path: &str, bytes: &[u8]) {
        let mut ns = self.shared.ns.lock().unwrap();
        ns.mkdirs(parent(path)).expect("parents of a seeded file");
        ns.nodes
            .insert(path.to_owned(), Node::File(Bytes::copy_from_slice(bytes)));
    }
}

impl Drop for WebHdfs {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `RemoteException` answer: the fake's one error type.
#[derive(Debug)]
struct Remote {
    status: StatusCode,
    exception: &'static str,
    package: &'static str,
    message: String,
}

impl IntoResponse for Remote {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "RemoteException": {
                "exception": self.exception,
                "javaClassName": format!("{}.{}", self.package, self.exception),
                "message": self.message,
            }
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

fn remote(
    status: StatusCode,
    exception: &'static str,
    package: &'static str,
    message: &str,
) -> Remote {
    Remote {
        status,
        exception,
        package,
        message: message.to_owned(),
    }
}

fn not_found(path: &str) -> Remote {
    remote(
        StatusCode::NOT_FOUND,
        "FileNotFoundException",
        "java.io",
        &format!("File does not exist: {path}"),
    )
}

/// An IOException or one of its subclasses: 403 in the reference's table.
fn io_error(exception: &'static str, message: &str) -> Remote {
    let package = match exception {
        "IOException" | "FileNotFoundException" => "java.io",
        _ => "org.apache.hadoop.fs",
    };
    remote(StatusCode::FORBIDDEN, exception, package, message)
}

fn bad_request(message: &str) -> Remote {
    remote(
        StatusCode::BAD_REQUEST,
        "IllegalArgumentException",
        "java.lang",
        message,
    )
}

fn json(value: &serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn boolean(value: bool) -> Response {
    json(&serde_json::json!({ "boolean": value }))
}

fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

impl Namespace {
    /// Creates `path` and its parents as folders; a file in the way is an error answer.
    fn mkdirs(&mut self, path: &str) -> Result<(), Remote> {
        let mut at = String::new();
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            at.push('/');
            at.push_str(segment);
            match self.nodes.get(&at) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => {
                    return Err(io_error(
                        "ParentNotDirectoryException",
                        &format!("{at} (is not a directory)"),
                    ));
                }
                None => {
                    self.nodes.insert(at.clone(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    /// Everything at or under `path`.
    fn subtree(&self, path: &str) -> Vec<String> {
        let folder = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        self.nodes
            .keys()
            .filter(|k| *k == path || k.starts_with(&folder))
            .cloned()
            .collect()
    }

    fn status(&self, path: &str, suffix: &str) -> serde_json::Value {
        let (kind, length) = match self.nodes.get(path) {
            Some(Node::File(b)) => ("FILE", b.len()),
            _ => ("DIRECTORY", 0),
        };
        serde_json::json!({
            "accessTime": 0, "blockSize": 134217728, "childrenNum": 0, "fileId": 16386,
            "group": "supergroup", "length": length, "modificationTime": 0, "owner": "hdfs",
            "pathSuffix": suffix, "permission": "644", "replication": 1,
            "storagePolicy": 0, "type": kind,
        })
    }

    /// The children of folder `path`, in name order.
    fn children(&self, path: &str) -> Vec<String> {
        let folder = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        let mut names: Vec<String> = self
            .nodes
            .keys()
            .filter_map(|k| k.strip_prefix(&folder))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }
}

/// Decodes `%XX` escapes of a URL path (a `+` stays a `+`).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The HDFS path of a `/webhdfs/v1/...` request: absolute, no empty, `.` or `..` segments.
fn hdfs_path(uri: &Uri) -> Result<String, Remote> {
    let raw = uri
        .path()
        .strip_prefix("/webhdfs/v1")
        .ok_or_else(|| bad_request(&format!("not a WebHDFS path: {}", uri.path())))?;
    let decoded = percent_decode(raw).ok_or_else(|| bad_request("bad percent-encoding"))?;
    normalize(&decoded)
}

fn normalize(path: &str) -> Result<String, Remote> {
    if !path.starts_with('/') && !path.is_empty() {
        return Err(bad_request(&format!(
            "Invalid path name {path}: not absolute"
        )));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .iter()
        .any(|s| *s == "." || *s == ".." || s.contains(':'))
    {
        return Err(bad_request(&format!("Invalid path name {path}")));
    }
    Ok(format!("/{}", segments.join("/")))
}

type AppState = (Arc<Shared>, Role);

async fn handle(
    State((shared, role)): State<AppState>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let op = query.get("op").cloned().unwrap_or_default().to_uppercase();
    let path = match hdfs_path(&uri) {
        Ok(path) => path,
        Err(e) => return e.into_response(),
    };
    match role {
        Role::NameNode(index) => {
            shared.namenode_hits[index].fetch_add(1, Ordering::SeqCst);
            if let Some(user) = query.get("user.name") {
                shared.users.lock().unwrap().push(user.clone());
            }
            if shared.standby[index].load(Ordering::SeqCst) {
                let category = if method == Method::GET {
                    "READ"
                } else {
                    "WRITE"
                };
                return remote(
                    StatusCode::FORBIDDEN,
                    "StandbyException",
                    "org.apache.hadoop.ipc",
                    &format!("Operation category {category} is not supported in state standby"),
                )
                .into_response();
            }
            let datanode = shared.datanode.lock().unwrap().expect("data node address");
            namenode(&shared, &method, &op, &path, &query, datanode)
        }
        Role::DataNode => {
            shared.datanode_hits.fetch_add(1, Ordering::SeqCst);
            datanode(&shared, &method, &op, &path, &query, body)
        }
    }
}

fn flag(query: &HashMap<String, String>, key: &str) -> Result<bool, Remote> {
    match query.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(bad_request(&format!(
            "Invalid value for webhdfs parameter \"{key}\": Failed to parse \"{other}\" to Boolean."
        ))),
    }
}

fn number(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, Remote> {
    query
        .get(key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                bad_request(&format!(
                    "Invalid value for webhdfs parameter \"{key}\": {v}"
                ))
            })
        })
        .transpose()
}

/// The data node URL a name node redirects `op` on `path` to, with the query the client
/// sent (Hadoop adds `namenoderpcaddress`; the client must not care what it says).
fn redirect(datanode: SocketAddr, path: &str, query: &HashMap<String, String>) -> Response {
    let mut pairs: Vec<(&String, &String)> = query.iter().collect();
    pairs.sort();
    let mut url = format!(
        "http://{datanode}/webhdfs/v1{}?namenoderpcaddress=127.0.0.1:8020",
        encode_path(path)
    );
    for (k, v) in pairs {
        url.push('&');
        url.push_str(&encode_query(k));
        url.push('=');
        url.push_str(&encode_query(v));
    }
    (
        StatusCode::TEMPORARY_REDIRECT,
        [
            (header::LOCATION, url),
            (header::CONTENT_LENGTH, "0".into()),
        ],
    )
        .into_response()
}

fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn encode_query(s: &str) -> String {
    encode_path(s).replace('/', "%2F")
}

fn namenode(
    shared: &Shared,
    method: &Method,
    op: &str,
    path: &str,
    query: &HashMap<String, String>,
    datanode: SocketAddr,
) -> Response {
    let mut ns = shared.ns.lock().unwrap();
    let result = (|| -> Result<Response, Remote> {
        Ok(match (method.as_str(), op) {
            ("GET", "GETFILESTATUS") => {
                if !ns.nodes.contains_key(path) {
                    return Err(not_found(path));
                }
                let status = ns.status(path, "");
                json(&serde_json::json!({ "FileStatus": status }))
            }
            ("GET", "LISTSTATUS") => {
                let statuses: Vec<serde_json::Value> = match ns.nodes.get(path) {
                    None => return Err(not_found(path)),
                    Some(Node::File(_)) => vec![ns.status(path, "")],
                    Some(Node::Dir) => ns
                        .children(path)
                        .iter()
                        .map(|name| {
                            let child = if path == "/" {
                                format!("/{name}")
                            } else {
                                format!("{path}/{name}")
                            };
                            ns.status(&child, name)
                        })
                        .collect(),
                };
                json(&serde_json::json!({ "FileStatuses": { "FileStatus": statuses } }))
            }
            ("GET", "OPEN") => {
                let len = match ns.nodes.get(path) {
                    None => return Err(not_found(path)),
                    Some(Node::Dir) => {
                        return Err(remote(
                            StatusCode::NOT_FOUND,
                            "FileNotFoundException",
                            "java.io",
                            &format!("Path is not a file: {path}"),
                        ));
                    }
                    Some(Node::File(b)) => b.len() as i64,
                };
                let offset = number(query, "offset")?.unwrap_or(0);
                if offset < 0 || (offset >= len && len > 0) {
                    return Err(io_error(
                        "IOException",
                        &format!("Offset={offset} out of the range [0, {len}); OPEN, path={path}"),
                    ));
                }
                if number(query, "length")?.is_some_and(|l| l < 0) {
                    return Err(bad_request(
                        "Invalid value for webhdfs parameter \"length\"",
                    ));
                }
                redirect(datanode, path, query)
            }
            ("PUT", "CREATE") => {
                let overwrite = flag(query, "overwrite")?;
                match ns.nodes.get(path) {
                    Some(Node::Dir) => {
                        return Err(io_error(
                            "FileAlreadyExistsException",
                            &format!("{path} already exists as a directory"),
                        ));
                    }
                    Some(Node::File(_)) if !overwrite => {
                        return Err(io_error(
                            "FileAlreadyExistsException",
                            &format!("{path} for client 127.0.0.1 already exists"),
                        ));
                    }
                    _ => {}
                }
                if let Some(Node::File(_)) = ns.nodes.get(parent(path)) {
                    return Err(io_error(
                        "ParentNotDirectoryException",
                        &format!("{} (is not a directory)", parent(path)),
                    ));
                }
                redirect(datanode, path, query)
            }
            ("PUT", "MKDIRS") => {
                if let Some(Node::File(_)) = ns.nodes.get(path) {
                    return Err(io_error(
                        "FileAlreadyExistsException",
                        &format!("Path is not a directory: {path}"),
                    ));
                }
                ns.mkdirs(path)?;
                boolean(true)
            }
            ("PUT", "RENAME") => {
                let destination = query
                    .get("destination")
                    .ok_or_else(|| bad_request("RENAME needs a destination"))?;
                if !destination.starts_with('/') {
                    return Err(bad_request(&format!(
                        "Invalid value for webhdfs parameter \"destination\": {destination} is not absolute"
                    )));
                }
                let mut to = normalize(destination)?;
                // FileSystem.rename: into a folder that exists, under the source's name;
                // never onto a file; never into a missing folder.
                if !ns.nodes.contains_key(path) || path == "/" {
                    return Ok(boolean(false));
                }
                if let Some(Node::Dir) = ns.nodes.get(&to) {
                    to = format!("{}/{}", to.trim_end_matches('/'), base(path));
                }
                if to == path {
                    return Ok(boolean(true));
                }
                if ns.nodes.contains_key(&to)
                    || !matches!(ns.nodes.get(parent(&to)), Some(Node::Dir))
                    || to.starts_with(&format!("{path}/"))
                {
                    return Ok(boolean(false));
                }
                for from in ns.subtree(path) {
                    let node = ns.nodes.remove(&from).expect("listed");
                    let moved = format!("{to}{}", &from[path.len()..]);
                    ns.nodes.insert(moved, node);
                }
                boolean(true)
            }
            ("DELETE", "DELETE") => {
                let recursive = flag(query, "recursive")?;
                let tree = ns.subtree(path);
                if tree.is_empty() || path == "/" {
                    return Ok(boolean(false));
                }
                if tree.len() > 1 && !recursive {
                    return Err(io_error(
                        "PathIsNotEmptyDirectoryException",
                        &format!("`{path} is non empty': Directory is not empty"),
                    ));
                }
                for p in tree {
                    ns.nodes.remove(&p);
                }
                boolean(true)
            }
            (m, op) => {
                return Err(bad_request(&format!(
                    "Invalid value for webhdfs parameter \"op\": {op} is not a {m} operation"
                )));
            }
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

fn datanode(
    shared: &Shared,
    method: &Method,
    op: &str,
    path: &str,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Response {
    let mut ns = shared.ns.lock().unwrap();
    let result = (|| -> Result<Response, Remote> {
        Ok(match (method.as_str(), op) {
            ("PUT", "CREATE") => {
                let overwrite = flag(query, "overwrite")?;
                match ns.nodes.get(path) {
                    Some(Node::Dir) => {
                        return Err(io_error(
                            "FileAlreadyExistsException",
                            &format!("{path} already exists as a directory"),
                        ));
                    }
                    Some(Node::File(_)) if !overwrite => {
                        return Err(io_error(
                            "FileAlreadyExistsException",
                            &format!("{path} already exists"),
                        ));
                    }
                    _ => {}
                }
                ns.mkdirs(parent(path))?;
                ns.nodes.insert(path.to_owned(), Node::File(body));
                (
                    StatusCode::CREATED,
                    [
                        (header::LOCATION, format!("webhdfs://127.0.0.1:8020{path}")),
                        (header::CONTENT_LENGTH, "0".to_owned()),
                    ],
                )
                    .into_response()
            }
            ("GET", "OPEN") => {
                let bytes = match ns.nodes.get(path) {
                    Some(Node::File(b)) => b.clone(),
                    _ => return Err(not_found(path)),
                };
                let len = bytes.len() as i64;
                let offset = number(query, "offset")?.unwrap_or(0);
                if offset < 0 || offset > len {
                    return Err(io_error("IOException", "Cannot seek after EOF"));
                }
                let end = match number(query, "length")? {
                    Some(l) => (offset + l).min(len),
                    None => len,
                };
                let part = bytes.slice(offset as usize..end as usize);
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    Body::from(part),
                )
                    .into_response()
            }
            (m, op) => {
                return Err(bad_request(&format!(
                    "Invalid value for webhdfs parameter \"op\": {op} is not a {m} operation on a data node"
                )));
            }
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}
