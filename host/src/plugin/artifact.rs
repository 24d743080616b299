//! A shoal plugin as an OCI artifact (image-spec 1.1 "artifact" guidance): an image manifest
//! with its own `artifactType`, the empty config, the component as its one `application/wasm`
//! layer, and the world and imports `shoal plugin check` found as annotations, so a registry
//! UI or `oras discover` shows what a plugin is without running it.
//!
//! Pure: builds the manifest to push and checks a pulled one; the HTTP lives in `oci`.

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use shoal_config::Sha256Digest;

use super::check::Inspection;

/// The artifact type of a shoal plugin manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.shoal.plugin.v1+wasm";
/// The one layer: the component, as WebAssembly.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The manifest's own media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config an artifact without one points at (image-spec 1.1 "empty descriptor").
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's content: `{}`.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Annotation: the world the component implements (`shoal:backend/backend@0.1.0`).
pub const WORLD_ANNOTATION: &str = "dev.shoal.plugin.world";
/// Annotation: the component's imports, comma-separated.
pub const IMPORTS_ANNOTATION: &str = "dev.shoal.plugin.imports";
/// The layer's file name (`org.opencontainers.image.title`), which `oras pull` writes.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The largest manifest read: a plugin manifest is well under a kilobyte.
pub const MANIFEST_MAX: u64 = 4 << 20;
/// The largest component accepted: the built-in plugins are a few hundred KiB to a few MiB.
pub const COMPONENT_MAX: u64 = 64 << 20;

/// sha256 of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest::from_hex(&hex::encode(Sha256::digest(bytes))).expect("sha256 is 64 hex digits")
}

/// The manifest of `wasm` as a plugin artifact, `inspection` giving its annotations, with
/// `title` as the layer's file name.
pub fn manifest(wasm: &[u8], inspection: &Inspection, title: &str) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": sha256_of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": sha256_of(wasm).to_string(),
            "size": wasm.len(),
            "annotations": {TITLE_ANNOTATION: title},
        }],
        "annotations": {
            WORLD_ANNOTATION: inspection.world.id(),
            IMPORTS_ANNOTATION: inspection.imports.join(","),
        },
    });
    serde_json::to_vec_pretty(&doc).expect("a JSON value serializes")
}

/// What a pulled manifest says about its one layer.
#[derive(Debug, PartialEq, Eq)]
pub struct Layer {
    /// The component's digest.
    pub digest: Sha256Digest,
    /// Its size in bytes, at most [`COMPONENT_MAX`].
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
}

/// The component layer of a plugin manifest, or why `bytes` is not one.
pub fn plugin_layer(bytes: &[u8]) -> Result<Layer, String> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    if let Some(t) = raw
        .media_type
        .as_deref()
        .filter(|t| *t != MANIFEST_MEDIA_TYPE)
    {
        return Err(format!(
            "the manifest is a {t}, not an {MANIFEST_MEDIA_TYPE}"
        ));
    }
    match raw.artifact_type.as_deref() {
        Some(ARTIFACT_TYPE) => {}
        Some(other) => {
            return Err(format!(
                "its artifactType is {other}, not {ARTIFACT_TYPE} (`shoal plugin push` makes one)"
            ));
        }
        None => {
            return Err(format!(
                "it has no artifactType: a plugin's is {ARTIFACT_TYPE} (`shoal plugin push` makes one)"
            ));
        }
    }
    let [layer] = raw.layers.as_slice() else {
        return Err(format!(
            "it has {} layers, not the one component",
            raw.layers.len()
        ));
    };
    if layer.media_type != LAYER_MEDIA_TYPE {
        return Err(format!(
            "its layer is a {}, not {LAYER_MEDIA_TYPE}",
            layer.media_type
        ));
    }
    let digest: Sha256Digest = layer
        .digest
        .parse()
        .map_err(|e| format!("its layer's digest: {e}"))?;
    if layer.size > COMPONENT_MAX {
        return Err(format!(
            "its component is {} bytes, over the {COMPONENT_MAX}-byte limit",
            layer.size
        ));
    }
    Ok(Layer {
        digest,
        size: layer.size,
    })
}

#[cfg(test)]
mod tests {
    use super::super::check::WorldKind;
    use super::*;

    fn inspection() -> Inspection {
        Inspection {
            world: WorldKind::Backend,
            imports: vec![
                "wasi:io/streams@0.2.6".into(),
                "shoal:backend/log@0.1.0".into(),
            ],
            exports: vec![],
            runnable: Ok(()),
        }
    }

    #[test]
    fn a_pushed_manifest_reads_back_as_its_one_layer_with_annotations() {
        let wasm = b"\0asm component";
        let bytes = manifest(wasm, &inspection(), "fs.wasm");
        let layer = plugin_layer(&bytes).unwrap();
        assert_eq!(layer.digest, sha256_of(wasm));
        assert_eq!(layer.size, wasm.len() as u64);
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            doc["annotations"][WORLD_ANNOTATION],
            "shoal:backend/backend@0.1.0"
        );
        assert_eq!(
            doc["annotations"][IMPORTS_ANNOTATION],
            "wasi:io/streams@0.2.6,shoal:backend/log@0.1.0"
        );
        assert_eq!(
            doc["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn an_image_or_another_artifact_is_refused_saying_why() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":2},
            "layers":[]}"#;
        assert!(plugin_layer(image).unwrap_err().contains("no artifactType"));
        let other = br#"{"artifactType":"application/vnd.cncf.helm.chart","layers":[]}"#;
        assert!(plugin_layer(other).unwrap_err().contains("helm"));
        let two = format!(
            r#"{{"artifactType":"{ARTIFACT_TYPE}","layers":[
            {{"mediaType":"application/wasm","digest":"sha256:{0}","size":1}},
            {{"mediaType":"application/wasm","digest":"sha256:{0}","size":1}}]}}"#,
            "a".repeat(64)
        );
        assert!(
            plugin_layer(two.as_bytes())
                .unwrap_err()
                .contains("2 layers")
        );
        let huge = format!(
            r#"{{"artifactType":"{ARTIFACT_TYPE}","layers":[
            {{"mediaType":"application/wasm","digest":"sha256:{}","size":{}}}]}}"#,
            "a".repeat(64),
            COMPONENT_MAX + 1
        );
        assert!(plugin_layer(huge.as_bytes()).unwrap_err().contains("limit"));
        assert!(plugin_layer(b"not json").unwrap_err().contains("not JSON"));
    }
}
