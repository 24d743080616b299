//! `fs`: blobs and tags as files in a local folder, the default backend of `shoal dev`.
//!
//! The host preopens the backend's `root` as this component's `/` and grants nothing else,
//! so the plugin addresses every file relative to `/` and cannot reach outside the folder.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, Body, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
    Reader, StreamError,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::config;
use shoal_plugin_sdk::name_path::NamePath;

/// The keys of the `fs:` block this plugin reads; `root` is the host's business.
#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    name_path: NamePath,
}

/// Where the host mounts the backend's root.
const ROOT: &str = "/";
/// The most a single `read` hands back, whatever the host asks for.
const MAX_CHUNK: u64 = 1 << 20;
/// Upload files in progress end with this, after a leading `.`; listings skip them.
const PART_SUFFIX: &str = ".part";

struct Fs;

thread_local! {
    /// The config, read once per instance: it cannot change while the instance lives, and a
    /// warm instance serves many calls.
    static SETTINGS: RefCell<Option<NamePath>> = const { RefCell::new(None) };
}

fn name_path() -> Result<NamePath, Error> {
    if let Some(scheme) = SETTINGS.with(|s| *s.borrow()) {
        return Ok(scheme);
    }
    let config: Config = config::load().map_err(Error::Invalid)?;
    SETTINGS.with(|s| *s.borrow_mut() = Some(config.name_path));
    Ok(config.name_path)
}

fn object(name: &str) -> Result<PathBuf, Error> {
    let scheme = name_path()?;
    let relative = scheme
        .object_path("", name)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(Path::new(ROOT).join(relative))
}

fn open_file(path: &Path, what: &str) -> Result<File, Error> {
    let file = File::open(path).map_err(|e| Error::from_io(&e, what))?;
    let meta = file.metadata().map_err(|e| Error::from_io(&e, what))?;
    if meta.is_file() {
        Ok(file)
    } else {
        Err(Error::NotFound)
    }
}

impl Guest for Fs {
    type Reader = FileReader;

    fn stat(_namespace: String, name: String) -> Result<BlobInfo, Error> {
        let file = open_file(&object(&name)?, "stat")?;
        let size = file
            .metadata()
            .map_err(|e| Error::from_io(&e, "stat"))?
            .len();
        Ok(BlobInfo { size })
    }

    fn download(
        _namespace: String,
        name: String,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        let mut file = open_file(&object(&name)?, "download")?;
        let size = file
            .metadata()
            .map_err(|e| Error::from_io(&e, "download"))?
            .len();
        let (offset, length) = match range {
            None => (0, size),
            Some(ByteRange { offset, length }) => {
                if offset > size {
                    return Err(Error::Invalid(format!(
                        "range starts at {offset}, past the end of the {size}-byte blob"
                    )));
                }
                let left = size - offset;
                (offset, length.map_or(left, |l| l.min(left)))
            }
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::from_io(&e, "download"))?;
        let reader = FileReader {
            state: RefCell::new((file, length)),
        };
        Ok(BlobStream {
            length: Some(length),
            body: Body::Reader(Reader::new(reader)),
        })
    }

    fn upload(_namespace: String, name: String, size: u64, body: InputStream) -> Result<(), Error> {
        let path = object(&name)?;
        let dir = path.parent().unwrap_or(Path::new(ROOT));
        fs::create_dir_all(dir).map_err(|e| Error::from_io(&e, "upload"))?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
        let part = dir.join(format!(".{file_name}.{}{PART_SUFFIX}", unique()));
        let result = write_part(&part, size, &body).and_then(|()| {
            // Rename is atomic: readers see the old file or the whole new one.
            fs::rename(&part, &path).map_err(|e| Error::from_io(&e, "upload"))
        });
        if result.is_err() {
            let _ = fs::remove_file(&part);
        }
        result
    }

    fn list(
        _namespace: String,
        prefix: String,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let scheme = name_path()?;
        let mut names = Vec::new();
        walk(Path::new(ROOT), &mut |path| {
            let relative = path.strip_prefix(ROOT).unwrap_or(path);
            if let Some(name) = relative.to_str().and_then(|p| scheme.name_of("", p))
                && name.starts_with(&prefix)
                && continuation.as_ref().is_none_or(|after| name > *after)
            {
                names.push(name);
            }
        })
        .map_err(|e| Error::from_io(&e, "list"))?;
        names.sort();
        let limit = (limit.max(1)) as usize;
        let continuation = if names.len() > limit {
            names.truncate(limit);
            names.last().cloned()
        } else {
            None
        };
        Ok(ListPage {
            names,
            continuation,
        })
    }

    fn delete(_namespace: String, name: String) -> Result<(), Error> {
        let path = object(&name)?;
        open_file(&path, "delete")?;
        fs::remove_file(&path).map_err(|e| Error::from_io(&e, "delete"))
    }
}

/// Copies exactly `size` bytes of `body` into a new file at `part`.
fn write_part(part: &Path, size: u64, body: &InputStream) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::from_io(&e, "upload");
    let file = File::create_new(part).map_err(io)?;
    let mut written = 0u64;
    loop {
        match body.blocking_read(MAX_CHUNK) {
            Ok(chunk) => {
                written += chunk.len() as u64;
                if written > size {
                    return Err(Error::Invalid(format!(
                        "upload body is longer than the {size} bytes announced"
                    )));
                }
                write_at(&file, &chunk, written - chunk.len() as u64).map_err(io)?;
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Unavailable(format!(
                    "upload body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    if written != size {
        return Err(Error::Invalid(format!(
            "upload body has {written} bytes, {size} were announced"
        )));
    }
    file.sync_all().map_err(io)
}

/// Writes all of `buf` at `offset`, through `pwrite`.
///
/// Not `Write::write_all`: on wasm32-wasip2, wasi-libc's `write` goes through a
/// `wasi:io/streams` output stream and turns every stream error into `EIO` (WASI errno 29, so
/// a full disk read "I/O error (os error 29)") without asking `filesystem-error-code` what it
/// was. `pwrite` calls `wasi:filesystem` `descriptor.write`, which returns the error code
/// itself, so `ENOSPC` arrives as `ErrorKind::StorageFull`. The stable `FileExt::write_at` is
/// not available on WASI (`wasi_ext` is unstable), hence libc.
fn write_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        let at = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
        // SAFETY: the descriptor belongs to `file`, open for the whole call, and the pointer
        // and length describe `buf`, which outlives the call; pwrite only reads from it.
        #[allow(unsafe_code)]
        let n = unsafe { libc::pwrite(file.as_raw_fd(), buf.as_ptr().cast(), buf.len(), at) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        let n = n as usize;
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Calls `found` with every regular file under `dir`, skipping uploads in progress.
fn walk(dir: &Path, found: &mut dyn FnMut(&Path)) -> std::io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, found)?;
        } else if kind.is_file() {
            let hidden_part = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.ends_with(PART_SUFFIX));
            if !hidden_part {
                found(&path);
            }
        }
    }
    Ok(())
}

/// A name no concurrent upload picks: each call runs in its own instance, so mix the clock
/// with the randomly seeded std hasher.
fn unique() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one(nanos)
}

/// An open file and how many bytes of it are still to be read.
struct FileReader {
    state: RefCell<(File, u64)>,
}

impl GuestReader for FileReader {
    fn read(&self, max: u64) -> Result<Option<Vec<u8>>, Error> {
        let mut state = self.state.borrow_mut();
        let (file, left) = &mut *state;
        if *left == 0 {
            return Ok(None);
        }
        let want = max.clamp(1, MAX_CHUNK).min(*left) as usize;
        let mut buf = vec![0; want];
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::from_io(&e, "download"))?;
        if n == 0 {
            return Err(Error::Other(format!(
                "file ended with {left} bytes still expected"
            )));
        }
        buf.truncate(n);
        *left -= n as u64;
        Ok(Some(buf))
    }
}

export_backend!(Fs);
