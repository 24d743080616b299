//! `hdfs`: blobs and tags as files in HDFS, through the WebHDFS REST API over `wasi:http`,
//! as Kraken's `hdfsbackend` uses it: `namenodes` tried in turn, `root_directory`,
//! `name_path`, and `user_name` (Kraken's `username`) sent as `user.name=`.
//!
//! - **Failover**: a request goes to the name node that answered last (warm instances keep
//!   it), then to the others in config order when one cannot be reached or answers 403
//!   `StandbyException` (the passive node of an HA pair), as Kraken's client does.
//! - **Upload**: `CREATE` of a hidden sibling (`.<name>.<unique>.shoal-upload`) on the name
//!   node, which answers 307 with a data node `Location`; the host's stream is spliced into
//!   a `PUT` there (201); then `RENAME` onto the name, so a partial upload is never visible
//!   under it (Kraken writes to an upload folder and renames too). `RENAME` does not replace
//!   a file (it answers `{"boolean": false}`): an overwrite deletes the old file and renames
//!   again.
//! - **Download**: `OPEN` with `offset` and `length` on the name node, 307 to a data node,
//!   whose body goes to the host untouched (`body.incoming`).
//! - Data nodes are other hosts than the name nodes: the operator grants them in
//!   `allowed_hosts:` (the host allows the name nodes and those, nothing else).
//!
//! Requests without a blob body are retried with backoff on 5xx and connection failures
//! (every name node down counts as one failure).

mod webhdfs;

use std::cell::Cell;

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::errors::retry;
use shoal_plugin_sdk::http::{self, ErrorCode, IncomingResponse, Method, Request};
use shoal_plugin_sdk::name_path::NamePath;
use shoal_plugin_sdk::url::{Scheme, Url};
use shoal_plugin_sdk::{config, log};

use webhdfs::{Entry, Refusal, Window};

/// The keys of the `hdfs:` block this plugin reads (`allowed_hosts` is the host's).
#[derive(Deserialize)]
struct Config {
    namenodes: Vec<String>,
    #[serde(default)]
    root_directory: String,
    #[serde(default)]
    name_path: NamePath,
    #[serde(default, alias = "username")]
    user_name: Option<String>,
}

/// The most of an error document or a status answer read into memory.
const SMALL_BODY_LIMIT: usize = 1 << 20;
/// The most of one directory's `LISTSTATUS` answer read into memory: about 60,000 entries
/// at Hadoop's usual ~270 bytes each. (`LISTSTATUS_BATCH`, Hadoop 2.8+, would page one
/// directory; the name schemes here keep directories small: 256 shards of blobs.)
const LISTING_LIMIT: usize = 16 << 20;
/// Rounds of "delete the old file, rename again" before an overwrite gives up to a writer
/// that keeps winning.
const RENAME_ROUNDS: u32 = 4;

thread_local! {
    /// The name node that answered last: the host reuses warm instances, so after the
    /// first failover the active node is asked first.
    static ACTIVE: Cell<usize> = const { Cell::new(0) };
}

/// Where requests go: the config, parsed once per call.
struct Cluster {
    namenodes: Vec<String>,
    root: String,
    name_path: NamePath,
    user: Option<String>,
}

impl Cluster {
    fn load() -> Result<Cluster, Error> {
        let c: Config = config::load().map_err(Error::Invalid)?;
        if c.namenodes.is_empty() {
            return Err(Error::Invalid("hdfs.namenodes lists no name node".into()));
        }
        Ok(Cluster {
            namenodes: c.namenodes,
            root: c.root_directory,
            name_path: c.name_path,
            user: c.user_name.filter(|u| !u.is_empty()),
        })
    }

    /// The file path (no leading `/`) of a blob or tag name.
    fn path(&self, name: &str) -> Result<String, Error> {
        self.name_path
            .object_path(&self.root, name)
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Sends `op` on `path` to the active name node, failing over to the next on a
    /// connection failure or a standby answer. `Ok` when the status is one of `wanted`.
    fn namenode(
        &self,
        what: &str,
        method: Method,
        path: &str,
        op: &str,
        params: &[(&str, String)],
        wanted: &[u16],
    ) -> Result<IncomingResponse, Error> {
        let count = self.namenodes.len();
        let first = ACTIVE.get() % count;
        let path_with_query = webhdfs::request_path(path, op, params, self.user.as_deref());
        let mut failures = Vec::new();
        for i in 0..count {
            let index = (first + i) % count;
            let node = &self.namenodes[index];
            let url = Url {
                scheme: Scheme::Http,
                authority: node.clone(),
                path_with_query: path_with_query.clone(),
            };
            let response = match Request::new(method.clone(), &url).send() {
                Ok(response) => response,
                Err(ErrorCode::HttpRequestDenied) => {
                    return Err(Error::from_http(&ErrorCode::HttpRequestDenied, what));
                }
                Err(e) => {
                    failures.push(format!("{node}: {e:?}"));
                    continue;
                }
            };
            let status = response.status();
            if wanted.contains(&status) {
                ACTIVE.set(index);
                return Ok(response);
            }
            let body = http::read_small_body(response, SMALL_BODY_LIMIT).unwrap_or_default();
            match webhdfs::refusal(status, &body, what) {
                Refusal::Standby(detail) => failures.push(format!("{node}: {detail}")),
                Refusal::Error(e) => {
                    ACTIVE.set(index);
                    return Err(e);
                }
            }
        }
        Err(Error::Unavailable(format!(
            "{what}: no active name node ({})",
            failures.join("; ")
        )))
    }

    /// `op` on `path`, answered 200 with a small JSON document.
    fn json(
        &self,
        what: &str,
        method: Method,
        path: &str,
        op: &str,
        params: &[(&str, String)],
        limit: usize,
    ) -> Result<Vec<u8>, Error> {
        retry(what, || {
            let response = self.namenode(what, method.clone(), path, op, params, &[200])?;
            http::read_small_body(response, limit).map_err(|e| Error::from_http(&e, what))
        })
    }

    /// `GETFILESTATUS`; a folder is not a blob, so it is not-found too.
    fn status(&self, what: &str, path: &str) -> Result<webhdfs::FileStatus, Error> {
        let body = self.json(
            what,
            Method::Get,
            path,
            "GETFILESTATUS",
            &[],
            SMALL_BODY_LIMIT,
        )?;
        let status =
            webhdfs::parse_status(&body).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        if status.is_file() {
            Ok(status)
        } else {
            Err(Error::NotFound)
        }
    }

    /// `{"boolean": ...}` of a `PUT` or `DELETE` op.
    fn boolean(
        &self,
        what: &str,
        method: Method,
        path: &str,
        op: &str,
        params: &[(&str, String)],
    ) -> Result<bool, Error> {
        let body = self.json(what, method, path, op, params, SMALL_BODY_LIMIT)?;
        webhdfs::parse_boolean(&body).map_err(|e| Error::Other(format!("{what}: {e}")))
    }

    /// Moves the finished part onto `path`. RENAME never replaces a file, so `false` with
    /// the part still there means the name is taken: delete it and rename again. `false`
    /// with the part gone means an earlier try of this rename went through but its answer
    /// was lost.
    fn rename_into_place(&self, part: &str, path: &str) -> Result<(), Error> {
        let destination = [("destination", format!("/{path}"))];
        for _ in 0..RENAME_ROUNDS {
            if self.boolean("upload", Method::Put, part, "RENAME", &destination)? {
                return Ok(());
            }
            match self.status("upload", part) {
                Err(Error::NotFound) => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            // Another writer's file, or ours from before: either way this body replaces it.
            self.boolean(
                "upload",
                Method::Delete,
                path,
                "DELETE",
                &[("recursive", "false".into())],
            )?;
        }
        Err(Error::Other(format!(
            "upload: {path:?} was recreated by other writers {RENAME_ROUNDS} times while this upload renamed onto it"
        )))
    }

    /// Walks the tree under `dir` in path order, collecting up to `want` file paths in
    /// `window`; `Ok(true)` once it has them.
    fn walk(
        &self,
        dir: &str,
        window: Window<'_>,
        want: usize,
        out: &mut Vec<String>,
    ) -> Result<bool, Error> {
        let listing = match self.json("list", Method::Get, dir, "LISTSTATUS", &[], LISTING_LIMIT) {
            Ok(body) => body,
            // A folder nothing was written to yet holds nothing.
            Err(Error::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        let statuses =
            webhdfs::parse_listing(&listing).map_err(|e| Error::Other(format!("list: {e}")))?;
        for Entry { path, dir } in webhdfs::walk_order(dir, statuses) {
            if dir {
                if window.may_hold(&path) && self.walk(&path, window, want, out)? {
                    return Ok(true);
                }
            } else if window.holds(&path) {
                out.push(path);
                if out.len() >= want {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// The data node a name node redirected to (`Location` of its 307).
fn redirect(response: &IncomingResponse, what: &str) -> Result<Url, Error> {
    let location = http::header(response, "location").ok_or_else(|| {
        Error::Other(format!(
            "{what}: the name node answered 307 without a Location"
        ))
    })?;
    Url::parse(&location).map_err(|e| Error::Other(format!("{what}: the data node Location: {e}")))
}

/// The error for a request to a data node that did not get through.
fn datanode_error(e: &ErrorCode, url: &Url, what: &str) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::Unauthorized(format!(
            "{what}: the name node sent the request to data node {}, which this backend may not reach: add it to hdfs.allowed_hosts",
            url.authority
        )),
        other => Error::from_http(other, &format!("{what}: data node {}", url.authority)),
    }
}

/// The error for a data node's answer other than `wanted`.
fn datanode_refusal(response: IncomingResponse, what: &str) -> Error {
    let status = response.status();
    let body = http::read_small_body(response, SMALL_BODY_LIMIT).unwrap_or_default();
    match webhdfs::refusal(status, &body, &format!("{what}: data node")) {
        Refusal::Standby(m) => Error::Unavailable(m),
        Refusal::Error(e) => e,
    }
}

/// A fresh number for an upload's part name.
fn unique() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one(nanos)
}

struct Hdfs;

impl Guest for Hdfs {
    type Reader = NoReader;

    fn stat(_namespace: String, name: String) -> Result<BlobInfo, Error> {
        let cluster = Cluster::load()?;
        let status = cluster.status("stat", &cluster.path(&name)?)?;
        Ok(BlobInfo {
            size: status.length,
        })
    }

    fn download(
        _namespace: String,
        name: String,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        let cluster = Cluster::load()?;
        let path = cluster.path(&name)?;
        let mut params = Vec::new();
        if let Some(r) = range {
            if r.length == Some(0) {
                return Err(Error::Invalid(
                    "an empty range has no bytes to download".into(),
                ));
            }
            params.push(("offset", r.offset.to_string()));
            if let Some(len) = r.length {
                params.push(("length", len.to_string()));
            }
        }
        let opened = retry("download", || {
            let response =
                cluster.namenode("download", Method::Get, &path, "OPEN", &params, &[307])?;
            let url = redirect(&response, "download")?;
            drop(response);
            let data = Request::new(Method::Get, &url)
                .send()
                .map_err(|e| datanode_error(&e, &url, "download"))?;
            if data.status() == 200 {
                Ok(data)
            } else {
                Err(datanode_refusal(data, "download"))
            }
        });
        let response = match (opened, range) {
            (Ok(response), _) => response,
            // A name node refuses an offset at or past the end with a plain IOException
            // (403); say which it was.
            (Err(Error::Other(m)), Some(r)) => {
                let size = cluster.status("download", &path)?.length;
                return Err(if r.offset >= size && size > 0 {
                    Error::Invalid(format!(
                        "download: the range starts at {} of a {size}-byte blob",
                        r.offset
                    ))
                } else {
                    Error::Other(m)
                });
            }
            (Err(e), _) => return Err(e),
        };
        // The range went as `offset` and `length`: the answer is a 200 with just those bytes.
        http::passthrough(response, None)
    }

    fn upload(_namespace: String, name: String, size: u64, body: InputStream) -> Result<(), Error> {
        let cluster = Cluster::load()?;
        let path = cluster.path(&name)?;
        let part = webhdfs::part_path(&path, unique());
        let create = [("overwrite", "true".to_owned())];
        let url = retry("upload", || {
            let response =
                cluster.namenode("upload", Method::Put, &part, "CREATE", &create, &[307])?;
            redirect(&response, "upload")
        })?;
        let written = Request::new(Method::Put, &url)
            .header("content-type", "application/octet-stream")
            .send_with_body(&body, size)
            .map_err(|e| datanode_error(&e, &url, "upload"))
            .and_then(|response| match response.status() {
                201 | 200 => Ok(()),
                _ => Err(datanode_refusal(response, "upload")),
            });
        let result = written.and_then(|()| cluster.rename_into_place(&part, &path));
        if result.is_err() {
            // The part may hold some of the bytes; it is hidden from listings either way.
            let removed = cluster.boolean(
                "upload",
                Method::Delete,
                &part,
                "DELETE",
                &[("recursive", "false".into())],
            );
            if let Err(e) = removed {
                log::warn(&format!("upload: removing the part {part:?}: {e:?}"));
            }
        }
        result
    }

    /// Paged over a depth-first walk of `LISTSTATUS` answers in path order (see
    /// [`webhdfs::walk_order`]): a page is the first `limit` file paths after the
    /// continuation, which is the last path of the page before. Folders wholly before it or
    /// outside the prefix are not listed at all.
    fn list(
        _namespace: String,
        prefix: String,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let cluster = Cluster::load()?;
        let path_prefix = cluster.name_path.list_prefix(&cluster.root, &prefix);
        let window = Window {
            prefix: &path_prefix,
            after: continuation.as_deref(),
        };
        let limit = limit.clamp(1, 10_000) as usize;
        let start = webhdfs::start_dir(&path_prefix);
        // One more than a page, to know whether another follows.
        let mut paths = Vec::new();
        cluster.walk(start, window, limit + 1, &mut paths)?;
        let more = paths.len() > limit;
        paths.truncate(limit);
        let next = more.then(|| paths.last().cloned()).flatten();
        let names = paths
            .iter()
            .filter_map(|p| cluster.name_path.name_of(&cluster.root, p))
            .filter(|n| n.starts_with(&prefix))
            .collect();
        Ok(ListPage {
            names,
            continuation: next,
        })
    }

    fn delete(_namespace: String, name: String) -> Result<(), Error> {
        let cluster = Cluster::load()?;
        let path = cluster.path(&name)?;
        // DELETE answers `{"boolean": false}` when there was nothing to delete.
        let deleted = cluster.boolean(
            "delete",
            Method::Delete,
            &path,
            "DELETE",
            &[("recursive", "false".into())],
        )?;
        if deleted {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }
}

/// Downloads always pass the data node's body through, so no reader is ever made.
struct NoReader;

impl GuestReader for NoReader {
    fn read(&self, _max: u64) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::Other("the hdfs backend has no reader".into()))
    }
}

export_backend!(Hdfs);
