//! The WebHDFS wire format without I/O: request paths, `RemoteException` answers, file
//! statuses, and the order and bounds of a listing walk. Pure, so it is tested natively.
//!
//! Source: the WebHDFS REST API reference (hadoop-hdfs `WebHDFS.md`): "/webhdfs/v1" before
//! the path, `op=` and the other parameters in the query, `user.name=` when security is off,
//! errors as a JSON `RemoteException` whose `exception` names the Java class, mapped to
//! status codes by the reference's table (IllegalArgumentException 400, SecurityException
//! 401, IOException 403, FileNotFoundException 404, RuntimeException 500).

use serde::Deserialize;
use shoal_plugin_sdk::backend::Error;
use shoal_plugin_sdk::url::percent_encode;

/// The most of an error document quoted in a message.
const QUOTE: usize = 300;

/// `/webhdfs/v1/<path>?op=<op>&<params>[&user.name=<user>]`, every part percent-encoded (the
/// path's `/` kept): a name with `+`, `%`, `&`, `=` or spaces arrives as written.
pub fn request_path(path: &str, op: &str, params: &[(&str, String)], user: Option<&str>) -> String {
    let mut out = format!(
        "/webhdfs/v1/{}?op={op}",
        percent_encode(path.trim_start_matches('/'), "/")
    );
    for (key, value) in params {
        out.push('&');
        out.push_str(key);
        out.push('=');
        out.push_str(&percent_encode(value, ""));
    }
    if let Some(user) = user {
        out.push_str("&user.name=");
        out.push_str(&percent_encode(user, ""));
    }
    out
}

/// What a name node or data node answered instead of doing what was asked.
#[derive(Debug)]
pub enum Refusal {
    /// A standby name node of an HA pair (403 `StandbyException`): ask the next one.
    Standby(String),
    /// Anything else, as the WIT error.
    Error(Error),
}

/// `{"RemoteException": {"exception": ..., "javaClassName": ..., "message": ...}}`; the
/// short class name is what the mapping needs.
#[derive(Debug, Default, Deserialize)]
pub struct RemoteException {
    #[serde(default)]
    pub exception: String,
    #[serde(default)]
    pub message: String,
}

/// The `RemoteException` of an error body, when it is one.
pub fn remote_exception(body: &[u8]) -> Option<RemoteException> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "RemoteException")]
        remote: RemoteException,
    }
    serde_json::from_slice::<Doc>(body).ok().map(|d| d.remote)
}

/// Classifies an answer that was not the one wanted, by status and exception class.
///
/// A standby name node answers every operation with 403 `StandbyException` (Hadoop's HA
/// name nodes; Kraken's client fails over on it); `RetriableException` and
/// `SafeModeException` say "not now" (a name node starting up) and are retried.
pub fn refusal(status: u16, body: &[u8], what: &str) -> Refusal {
    let remote = remote_exception(body);
    let detail = match &remote {
        Some(r) => format!("{what}: HTTP {status} {}: {}", r.exception, r.message),
        None => {
            let text: String = String::from_utf8_lossy(body).chars().take(QUOTE).collect();
            if text.trim().is_empty() {
                format!("{what}: HTTP {status}")
            } else {
                format!("{what}: HTTP {status}: {}", text.trim())
            }
        }
    };
    let exception = remote.as_ref().map_or("", |r| r.exception.as_str());
    Refusal::Error(match (status, exception) {
        (403, "StandbyException") => return Refusal::Standby(detail),
        (_, "RetriableException" | "SafeModeException") => Error::Unavailable(detail),
        (404 | 410, _) | (_, "FileNotFoundException") => Error::NotFound,
        (401, _) | (_, "AccessControlException" | "SecurityException") => {
            Error::Unauthorized(detail)
        }
        (429, _) => Error::Throttled(detail),
        (400, _) => Error::Invalid(detail),
        (500..=599, _) => Error::Unavailable(detail),
        _ => Error::Other(detail),
    })
}

/// One entry of `GETFILESTATUS` or `LISTSTATUS`; the keys this plugin reads.
#[derive(Debug, Deserialize)]
pub struct FileStatus {
    /// The entry's name in its directory (empty for `GETFILESTATUS`).
    #[serde(default, rename = "pathSuffix")]
    pub path_suffix: String,
    /// `FILE`, `DIRECTORY` or `SYMLINK`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes, for a file.
    #[serde(default)]
    pub length: u64,
}

impl FileStatus {
    pub fn is_dir(&self) -> bool {
        self.kind == "DIRECTORY"
    }

    pub fn is_file(&self) -> bool {
        self.kind == "FILE"
    }
}

/// `{"FileStatus": {...}}`.
pub fn parse_status(body: &[u8]) -> Result<FileStatus, String> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "FileStatus")]
        status: FileStatus,
    }
    serde_json::from_slice::<Doc>(body)
        .map(|d| d.status)
        .map_err(|e| format!("not a GETFILESTATUS answer: {e}"))
}

/// `{"FileStatuses": {"FileStatus": [...]}}`.
pub fn parse_listing(body: &[u8]) -> Result<Vec<FileStatus>, String> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "FileStatuses")]
        statuses: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default, rename = "FileStatus")]
        list: Vec<FileStatus>,
    }
    serde_json::from_slice::<Doc>(body)
        .map(|d| d.statuses.list)
        .map_err(|e| format!("not a LISTSTATUS answer: {e}"))
}

/// `{"boolean": true|false}`, the answer of RENAME, DELETE and MKDIRS.
pub fn parse_boolean(body: &[u8]) -> Result<bool, String> {
    #[derive(Deserialize)]
    struct Doc {
        boolean: bool,
    }
    serde_json::from_slice::<Doc>(body)
        .map(|d| d.boolean)
        .map_err(|e| format!("not a boolean answer: {e}"))
}

/// The suffix of the hidden file an upload writes before it is renamed onto its name.
pub const PART_SUFFIX: &str = ".shoal-upload";

/// The hidden sibling an upload of `path` writes first: `<dir>/.<base>.<unique>.shoal-upload`.
/// Same directory, so the rename never crosses directories and the parent exists.
pub fn part_path(path: &str, unique: u64) -> String {
    let (dir, base) = path.rsplit_once('/').map_or(("", path), |(d, b)| (d, b));
    let part = format!(".{base}.{unique:016x}{PART_SUFFIX}");
    if dir.is_empty() {
        part
    } else {
        format!("{dir}/{part}")
    }
}

/// True for a file an upload has not renamed into place yet; listings skip them.
pub fn is_part(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.ends_with(PART_SUFFIX)
}

/// A child of a listed directory, by its full path (no leading `/`).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub dir: bool,
}

/// The children of `dir` in the order of the full paths beneath them, upload parts left out.
///
/// A directory sorts as its name plus `/`: `a-c` comes before everything in `a/` (`-` is
/// below `/`), so a depth-first walk in this order meets paths in plain string order, which
/// is what lets a path be the continuation of a listing.
pub fn walk_order(dir: &str, statuses: Vec<FileStatus>) -> Vec<Entry> {
    let mut keyed: Vec<(String, Entry)> = statuses
        .into_iter()
        .filter(|s| !s.path_suffix.is_empty() && !s.path_suffix.contains('/'))
        .filter(|s| s.is_dir() || !is_part(&s.path_suffix))
        .map(|s| {
            let path = if dir.is_empty() {
                s.path_suffix.clone()
            } else {
                format!("{dir}/{}", s.path_suffix)
            };
            let key = if s.is_dir() {
                format!("{}/", s.path_suffix)
            } else {
                s.path_suffix.clone()
            };
            (
                key,
                Entry {
                    path,
                    dir: s.is_dir(),
                },
            )
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// The paths one listing page may return: those starting with `prefix` and after `after`
/// (the last path of the page before).
#[derive(Clone, Copy, Debug)]
pub struct Window<'a> {
    pub prefix: &'a str,
    pub after: Option<&'a str>,
}

impl Window<'_> {
    /// Whether any path under directory `dir` can be in the window; the walk skips the
    /// directory otherwise (without listing it).
    pub fn may_hold(&self, dir: &str) -> bool {
        let folder = format!("{dir}/");
        let by_prefix = folder.starts_with(self.prefix) || self.prefix.starts_with(&folder);
        // Everything under `folder` is longer than it: past `after` when the folder is, or
        // when `after` lies inside the folder.
        let by_after = self
            .after
            .is_none_or(|a| folder.as_str() > a || a.starts_with(&folder));
        by_prefix && by_after
    }

    /// Whether the file at `path` is in the window.
    pub fn holds(&self, path: &str) -> bool {
        path.starts_with(self.prefix) && self.after.is_none_or(|a| path > a)
    }
}

/// The directory to start a walk for `prefix`: the prefix up to its last `/`.
pub fn start_dir(prefix: &str) -> &str {
    prefix.rsplit_once('/').map_or("", |(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, kind: &str) -> FileStatus {
        FileStatus {
            path_suffix: name.to_owned(),
            kind: kind.to_owned(),
            length: 0,
        }
    }

    #[test]
    fn request_paths_encode_names_and_keep_folders() {
        assert_eq!(
            request_path(
                "/r/a b/x+y%z",
                "OPEN",
                &[("offset", "5".into())],
                Some("hdfs")
            ),
            "/webhdfs/v1/r/a%20b/x%2By%25z?op=OPEN&offset=5&user.name=hdfs"
        );
        assert_eq!(
            request_path("r/f", "RENAME", &[("destination", "/r/ü&=".into())], None),
            "/webhdfs/v1/r/f?op=RENAME&destination=%2Fr%2F%C3%BC%26%3D"
        );
        assert_eq!(
            request_path("", "LISTSTATUS", &[], None),
            "/webhdfs/v1/?op=LISTSTATUS"
        );
    }

    #[test]
    fn remote_exceptions_map_by_class_and_status() {
        let doc = |class: &str| {
            format!(
                r#"{{"RemoteException":{{"exception":"{class}","javaClassName":"x.{class}","message":"m"}}}}"#
            )
            .into_bytes()
        };
        assert!(matches!(
            refusal(403, &doc("StandbyException"), "stat"),
            Refusal::Standby(m) if m.contains("StandbyException")
        ));
        assert!(matches!(
            refusal(404, &doc("FileNotFoundException"), "stat"),
            Refusal::Error(Error::NotFound)
        ));
        assert!(matches!(
            refusal(403, &doc("AccessControlException"), "x"),
            Refusal::Error(Error::Unauthorized(_))
        ));
        assert!(matches!(
            refusal(401, &doc("SecurityException"), "x"),
            Refusal::Error(Error::Unauthorized(_))
        ));
        assert!(matches!(
            refusal(403, &doc("RetriableException"), "x"),
            Refusal::Error(Error::Unavailable(_))
        ));
        assert!(matches!(
            refusal(400, &doc("IllegalArgumentException"), "x"),
            Refusal::Error(Error::Invalid(_))
        ));
        assert!(matches!(
            refusal(403, &doc("IOException"), "x"),
            Refusal::Error(Error::Other(m)) if m.contains("IOException: m")
        ));
        assert!(matches!(
            refusal(503, b"<html>busy</html>", "x"),
            Refusal::Error(Error::Unavailable(m)) if m.contains("busy")
        ));
    }

    #[test]
    fn statuses_and_answers_parse() {
        let s =
            parse_status(br#"{"FileStatus":{"length":42,"pathSuffix":"","type":"FILE"}}"#).unwrap();
        assert_eq!((s.length, s.is_file()), (42, true));
        let l = parse_listing(
            br#"{"FileStatuses":{"FileStatus":[{"pathSuffix":"a","type":"DIRECTORY","length":0}]}}"#,
        )
        .unwrap();
        assert!(l[0].is_dir());
        assert!(parse_listing(br#"{"FileStatuses":{}}"#).unwrap().is_empty());
        assert!(parse_boolean(br#"{"boolean": false}"#) == Ok(false));
        assert!(parse_status(b"{}").is_err());
    }

    #[test]
    fn upload_parts_are_hidden_siblings() {
        assert_eq!(
            part_path("r/d/blob", 0xab),
            "r/d/.blob.00000000000000ab.shoal-upload"
        );
        assert_eq!(part_path("blob", 1), ".blob.0000000000000001.shoal-upload");
        assert!(is_part(".blob.0000000000000001.shoal-upload"));
        assert!(!is_part("blob.shoal-upload"));
    }

    #[test]
    fn the_walk_meets_paths_in_string_order() {
        let entries = walk_order(
            "r",
            vec![
                status("a", "DIRECTORY"),
                status("a-c", "FILE"),
                status("a0", "FILE"),
                status(".a0.0000000000000001.shoal-upload", "FILE"),
                status("B", "FILE"),
            ],
        );
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["r/B", "r/a-c", "r/a", "r/a0"]);
        assert!(entries[2].dir);
    }

    #[test]
    fn the_window_prunes_folders_outside_the_prefix_and_before_the_continuation() {
        let w = Window {
            prefix: "r/page/",
            after: None,
        };
        assert!(w.may_hold("r"));
        assert!(w.may_hold("r/page"));
        assert!(w.may_hold("r/page/deeper"));
        assert!(!w.may_hold("r/page-outside"));
        assert!(w.holds("r/page/item-1"));
        assert!(!w.holds("r/page-outside"));

        let w = Window {
            prefix: "r/",
            after: Some("r/b/x"),
        };
        assert!(!w.may_hold("r/a"), "wholly before the continuation");
        assert!(w.may_hold("r/b"), "holds the continuation");
        assert!(w.may_hold("r/c"));
        assert!(!w.holds("r/b/x"));
        assert!(w.holds("r/b/y"));
        assert!(!w.holds("r/a-z"));
    }

    #[test]
    fn a_walk_starts_at_the_prefix_folder() {
        assert_eq!(start_dir("r/odd/with "), "r/odd");
        assert_eq!(start_dir("r/page/"), "r/page");
        assert_eq!(start_dir("blob"), "");
    }
}
