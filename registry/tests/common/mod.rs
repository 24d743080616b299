//! The in-process client the API tests share: a router over a temporary store, driven
//! through `tower::ServiceExt::oneshot`.
#![allow(dead_code)] // each test binary uses its own subset

pub mod gc;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use shoal_registry::{Backing, Digest, LocalStore, Registry};
use tower::ServiceExt;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub app: Router,
    /// The registry behind `app`, for what the HTTP surface does not reach (GC).
    pub registry: Arc<Registry>,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let registry = Arc::new(Registry::new(store));
    Fixture {
        app: shoal_registry::router(registry.clone()),
        registry,
        dir,
    }
}

/// A registry whose local store (in a fresh folder) caches `backing`.
pub async fn backed(backing: Arc<dyn Backing>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let registry = Arc::new(Registry::with_backing(store, backing));
    Fixture {
        app: shoal_registry::router(registry.clone()),
        registry,
        dir,
    }
}

/// A registry whose local store caches `backing`, which says what each repository holds (as
/// the cluster behind an agent or the proxy does, and an upstream registry that a pull-through
/// namespace mirrors): tags are asked of it on every request.
pub async fn backed_by_authority(backing: Arc<dyn Backing>) -> Fixture {
    backed_as(backing, |r| r.tags_from_backing(std::time::Duration::ZERO)).await
}

/// A registry whose local store (in a fresh folder) caches `backing`, configured by `build`.
pub async fn backed_as(
    backing: Arc<dyn Backing>,
    build: impl FnOnce(Registry) -> Registry,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let registry = Arc::new(build(Registry::with_backing(store, backing)));
    Fixture {
        app: shoal_registry::router(registry.clone()),
        registry,
        dir,
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Fixture {
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.call(Method::GET, uri, &[], vec![]).await
    }

    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        d
    }

    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media: &str,
        body: &str,
    ) -> Resp {
        self.call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media)],
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// Pushes a config and one layer, returns an image manifest referencing them.
    pub async fn image(&self, repo: &str, media: &str, layer: &[u8]) -> String {
        let config = self
            .push_blob(repo, b"{\"architecture\":\"amd64\",\"os\":\"linux\"}")
            .await;
        let l = self.push_blob(repo, layer).await;
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":38}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":{}}}]}}"#,
            layer.len()
        )
    }
}
