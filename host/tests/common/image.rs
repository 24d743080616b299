//! OCI image layouts built on the spot, so the client tests need no network and no base image.
//!
//! An image here is three gzip'd tar layers of a few files each, a config whose `rootfs.diff_ids`
//! are the digests of the uncompressed tars (containerd and dockerd check them when they unpack),
//! and an OCI image manifest. Everything is deterministic for a given label: tar entries carry a
//! fixed mtime and the gzip header has no timestamp, so a test can rebuild an image and expect
//! the same digests.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation the OCI layout uses to name a manifest; `oci:DIR:TAG` in skopeo looks it up.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// 2023-11-14T22:13:20Z, the mtime of every tar entry, so layers do not change between runs.
const MTIME: u64 = 1_700_000_000;

/// A `sha256:<hex>` content digest. Only this module makes them, from bytes or from a checked
/// string, so a test cannot compare a digest with something that is not one.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// Parses `sha256:<64 lowercase hex>`, as registries and clients print it.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{s:?}: not sha256:<hex>"))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "{s:?}: the hex part is not 64 lowercase hex digits"
            ));
        }
        Ok(Digest(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, which is also the blob's file name in an OCI layout.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One image manifest written into a layout, with the digests a test checks against.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest_digest: Digest,
    /// The exact manifest bytes; a registry must hand these back unchanged.
    pub manifest: Vec<u8>,
    pub config_digest: Digest,
    /// Digests of the gzip'd layers, in manifest order.
    pub layer_digests: Vec<Digest>,
    /// Digests of the uncompressed layers, as in the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<Digest>,
    pub architecture: &'static str,
}

impl BuiltImage {
    /// The manifest, config and layer digests: every blob a registry must hold for this image.
    pub fn all_digests(&self) -> Vec<Digest> {
        let mut all = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        all.extend(self.layer_digests.iter().cloned());
        all
    }
}

/// An image index written into a layout, with one image per platform.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub index_digest: Digest,
    pub index: Vec<u8>,
    /// In index order: amd64, then arm64.
    pub images: Vec<BuiltImage>,
}

/// Writes an OCI image layout at `dir` holding one linux/amd64 image tagged `tag`. `label` goes
/// into the file contents, so different labels give different digests.
pub fn write_image_layout(dir: &Path, tag: &str, label: &str) -> BuiltImage {
    let mut layout = LayoutWriter::create(dir);
    let image = layout.add_image(label, "amd64");
    layout.finish(
        OCI_MANIFEST,
        &image.manifest_digest,
        image.manifest.len(),
        tag,
    );
    image
}

/// Writes an OCI image layout at `dir` holding an image index tagged `tag` with a linux/amd64
/// and a linux/arm64/v8 image. The two share their first two layers, as multi-platform images
/// built from one Dockerfile often do, so a registry sees the same blob under two manifests.
pub fn write_index_layout(dir: &Path, tag: &str, label: &str) -> BuiltIndex {
    let mut layout = LayoutWriter::create(dir);
    let images = vec![
        layout.add_image(label, "amd64"),
        layout.add_image(label, "arm64"),
    ];
    let manifests: Vec<Value> = images
        .iter()
        .map(|image| {
            let mut platform = json!({ "architecture": image.architecture, "os": "linux" });
            if image.architecture == "arm64" {
                platform["variant"] = json!("v8");
            }
            json!({
                "mediaType": OCI_MANIFEST,
                "digest": image.manifest_digest.as_str(),
                "size": image.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    let index = pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "annotations": { "org.opencontainers.image.title": label },
    }));
    let index_digest = layout.add_blob(&index);
    layout.finish(OCI_INDEX, &index_digest, index.len(), tag);
    BuiltIndex {
        index_digest,
        index,
        images,
    }
}

/// Every blob of the OCI layout at `dir`, by digest, after checking that each file's content
/// hashes to its name (so a client that wrote a corrupt blob is caught here).
pub fn read_layout_blobs(dir: &Path) -> BTreeMap<Digest, Vec<u8>> {
    let blobs_dir = dir.join("blobs/sha256");
    let mut blobs = BTreeMap::new();
    for entry in
        std::fs::read_dir(&blobs_dir).unwrap_or_else(|e| panic!("{}: {e}", blobs_dir.display()))
    {
        let path = entry.expect("reading a layout directory entry").path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let digest = Digest::of(&bytes);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(
            digest.hex(),
            name,
            "{}: content does not match the file name",
            path.display()
        );
        blobs.insert(digest, bytes);
    }
    blobs
}

/// The digest that the layout at `dir` names `tag` in its index.json.
pub fn layout_digest_for_tag(dir: &Path, tag: &str) -> Digest {
    let path = dir.join("index.json");
    let index: Value = serde_json::from_slice(&std::fs::read(&path).expect("reading index.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("{}: no manifest named {tag:?} in {index:#}", path.display()));
    Digest::parse(entry["digest"].as_str().unwrap_or_default()).expect("index.json digest")
}

/// Packs the layout at `dir` into an OCI archive (a tar of the layout), the format
/// `ctr images import` reads.
pub fn layout_to_archive(dir: &Path, archive: &Path) -> PathBuf {
    let file =
        std::fs::File::create(archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let mut tar = tar::Builder::new(file);
    tar.append_dir_all(".", dir).expect("archiving the layout");
    tar.into_inner()
        .expect("finishing the archive")
        .sync_all()
        .expect("syncing the archive");
    archive.to_owned()
}

/// Writes blobs into a layout directory and the index.json that names its top manifest.
struct LayoutWriter {
    dir: PathBuf,
}

impl LayoutWriter {
    fn create(dir: &Path) -> LayoutWriter {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("creating the layout directory");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("writing oci-layout");
        LayoutWriter {
            dir: dir.to_owned(),
        }
    }

    fn add_blob(&mut self, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(digest.hex()), bytes)
            .expect("writing a blob");
        digest
    }

    fn add_image(&mut self, label: &str, architecture: &'static str) -> BuiltImage {
        let tars = layer_tars(label, architecture);
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in &tars {
            diff_ids.push(Digest::of(tar));
            let gz = gzip(tar);
            layers.push((self.add_blob(&gz), gz.len()));
        }
        let mut config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": architecture,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/hello"],
                "WorkingDir": "/app",
                "Labels": { "org.opencontainers.image.title": label },
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": diff_ids.iter().map(Digest::as_str).collect::<Vec<_>>(),
            },
            "history": [
                { "created": "2023-11-14T22:13:20Z", "created_by": "shoal test: base files" },
                { "created": "2023-11-14T22:13:20Z", "created_by": "shoal test: data" },
                { "created": "2023-11-14T22:13:20Z", "created_by": "shoal test: app" },
            ],
        });
        if architecture == "arm64" {
            config["variant"] = json!("v8");
        }
        let config = pretty(&config);
        let config_digest = self.add_blob(&config);
        let manifest = pretty(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest.as_str(), "size": config.len() },
            "layers": layers
                .iter()
                .map(|(digest, size)| json!({ "mediaType": OCI_LAYER_GZIP, "digest": digest.as_str(), "size": size }))
                .collect::<Vec<_>>(),
            "annotations": { "org.opencontainers.image.title": label },
        }));
        let manifest_digest = self.add_blob(&manifest);
        BuiltImage {
            manifest_digest,
            manifest,
            config_digest,
            layer_digests: layers.into_iter().map(|(d, _)| d).collect(),
            diff_ids,
            architecture,
        }
    }

    fn finish(self, media_type: &str, digest: &Digest, size: usize, tag: &str) {
        let index = pretty(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type,
                "digest": digest.as_str(),
                "size": size,
                "annotations": { REF_NAME: tag },
            }],
        }));
        std::fs::write(self.dir.join("index.json"), index).expect("writing index.json");
    }
}

/// The three uncompressed layer tars of an image: base files, a data layer big enough to take
/// more than one read or chunk (256 KiB of noise that gzip cannot shrink), and an app layer that
/// names the architecture (so the two platforms of an index differ only there).
fn layer_tars(label: &str, architecture: &str) -> [Vec<u8>; 3] {
    let hello = format!("#!/bin/sh\necho 'hello from {label}'\n");
    let base = tar_of(&[
        ("bin/hello", hello.as_bytes(), 0o755),
        (
            "etc/shoal-test/base.conf",
            format!("label = {label:?}\n").as_bytes(),
            0o644,
        ),
        (
            "usr/share/doc/shoal-test/README",
            b"Built by shoal's integration tests.\n",
            0o644,
        ),
    ]);
    let data = tar_of(&[
        ("srv/data/noise.bin", &noise(label, 256 * 1024), 0o644),
        (
            "srv/data/small.txt",
            b"a small file next to a big one\n",
            0o644,
        ),
    ]);
    let app = tar_of(&[
        ("app/VERSION", format!("{label}\n").as_bytes(), 0o644),
        ("app/arch", format!("{architecture}\n").as_bytes(), 0o644),
        (
            "app/config.json",
            format!("{{\"label\":{label:?},\"arch\":{architecture:?}}}\n").as_bytes(),
            0o644,
        ),
    ]);
    [base, data, app]
}

/// A tar with `files` and a directory entry for each parent, as `docker build` writes them
/// (some unpackers refuse a file whose directory has no entry of its own).
fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs_done = std::collections::BTreeSet::new();
    for (path, content, mode) in files {
        let mut parent = Path::new(path).parent();
        let mut dirs = Vec::new();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(dir.to_owned());
            parent = dir.parent();
        }
        for dir in dirs.into_iter().rev() {
            if dirs_done.insert(dir.clone()) {
                let mut header = header(tar::EntryType::Directory, 0o755, 0);
                builder
                    .append_data(&mut header, &dir, std::io::empty())
                    .expect("tar dir entry");
            }
        }
        let mut header = header(tar::EntryType::Regular, *mode, content.len() as u64);
        builder
            .append_data(&mut header, path, *content)
            .expect("tar file entry");
    }
    builder.into_inner().expect("finishing a tar")
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// `len` bytes of xorshift64 noise seeded from `label`: incompressible and reproducible.
pub fn noise(label: &str, len: usize) -> Vec<u8> {
    let mut state = u64::from_le_bytes(
        Sha256::digest(label.as_bytes())[..8]
            .try_into()
            .expect("8 bytes"),
    ) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serializing JSON");
    bytes.push(b'\n');
    bytes
}
