//! Images and tags for the cluster tests: a small image stored in the shared backend, and
//! tags set and deleted through the build-index's API, as the proxy does.

use super::{Cluster, digest_of};

/// A minimal OCI image manifest naming `config` and `layer`.
pub fn image_manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
        digest_of(config),
        config.len(),
        digest_of(layer),
        layer.len()
    )
    .into_bytes()
}

/// An image stored in the backend: its manifest's digest and its config's.
pub struct Image {
    pub manifest: String,
    pub config: String,
}

impl Cluster {
    /// Stores an image whose config says `n` in the backend under `namespace` (manifest and
    /// config, no layers): images with different `n` have different digests.
    pub fn store_image(&self, namespace: &str, n: u32) -> Image {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{n}}}"#).into_bytes();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
            digest_of(&config),
            config.len()
        )
        .into_bytes();
        let image = Image {
            manifest: digest_of(&manifest),
            config: digest_of(&config),
        };
        for (digest, bytes) in [(&image.manifest, manifest), (&image.config, config)] {
            let hex = digest.strip_prefix("sha256:").unwrap();
            self.backend.insert(namespace, hex, bytes);
        }
        image
    }

    /// `PUT /tags/{repo}:{tag}/digest/{digest}` at the build-index; its status.
    pub async fn put_tag(&self, repo: &str, tag: &str, digest: &str) -> u16 {
        let url = format!(
            "http://{}/tags/{}/digest/{digest}",
            self.build_index.http,
            shoal_roles::http::segment(&format!("{repo}:{tag}"))
        );
        let resp = self.http.put(url).send().await.expect("PUT a tag");
        resp.status().as_u16()
    }

    /// `DELETE /tags/{repo}:{tag}` at the build-index; its status.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> u16 {
        let url = format!(
            "http://{}/tags/{}",
            self.build_index.http,
            shoal_roles::http::segment(&format!("{repo}:{tag}"))
        );
        let resp = self.http.delete(url).send().await.expect("DELETE a tag");
        resp.status().as_u16()
    }

    /// What agent `i` serves for `path` (a manifest): the digest of the body on a 200, or the
    /// status and body.
    pub async fn manifest_at(&self, agent: usize, path: &str) -> Result<String, (u16, String)> {
        let (status, body) = self.get(agent, path).await;
        if status == 200 {
            Ok(digest_of(&body))
        } else {
            Err((status, String::from_utf8_lossy(&body).into_owned()))
        }
    }

    /// What every agent serves for `path`, in order (see [`Cluster::manifest_at`]).
    pub async fn manifest_everywhere(&self, path: &str) -> Vec<Result<String, (u16, String)>> {
        let all = (0..self.agents.len()).map(|i| self.manifest_at(i, path));
        futures_util::future::join_all(all).await
    }
}
