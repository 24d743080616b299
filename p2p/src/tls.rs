//! TLS between the parts of a cluster, with rustls over ring: the certificates and keys of the
//! YAML's `tls` blocks loaded from PEM files ([`server_config`], [`client_config`]); how a role
//! reaches the other roles' HTTP ports ([`ClusterHttp`], `client_tls:`); and the P2P port's
//! TLS both ways ([`PeerTls`], `peer.tls`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shoal_config::{ClientTls, HostPort};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::TlsError;

/// Most time to open a connection to another role; a host that takes longer is treated as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn tls_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(path, e))
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| tls_error(ca, e))?;
    }
    Ok(roots)
}

/// A server configuration presenting `cert` (with its `key`); with `client_ca`, every client
/// must present a certificate chaining to it, or the handshake fails.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(cert)?;
    let key_der = private_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert, e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| tls_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key_der)
        .map_err(|e| tls_error(key, format!("does not fit the certificate: {e}")))
}

/// A client configuration trusting only `ca`, presenting `cert` and `key` when both are given.
pub fn client_config(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(ca, e))?
        .with_root_certificates(roots(ca)?);
    match (cert, key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| tls_error(key, format!("does not fit the certificate: {e}"))),
        (Some(cert), None) => Err(tls_error(cert, "is given without its key")),
        (None, Some(key)) => Err(tls_error(key, "is given without its certificate")),
        (None, None) => Ok(builder.with_no_client_auth()),
    }
}

/// How a role reaches the other roles' HTTP ports: plain HTTP, or HTTPS verified against
/// `client_tls.ca` (presenting `client_tls.cert` when given). Cheap to clone.
#[derive(Clone, Default)]
pub struct ClusterTls {
    client: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.client.is_some() {
            "ClusterTls(https)"
        } else {
            "ClusterTls(http)"
        })
    }
}

impl ClusterTls {
    /// Plain HTTP.
    pub fn plain() -> Self {
        ClusterTls::default()
    }

    /// From a role's `client_tls:`; `None` is plain HTTP.
    pub fn load(config: Option<&ClientTls>) -> Result<Self, TlsError> {
        let Some(c) = config else {
            return Ok(ClusterTls::plain());
        };
        let config = client_config(&c.ca, c.cert.as_deref(), c.key.as_deref())?;
        Ok(ClusterTls {
            client: Some(Arc::new(config)),
        })
    }

    /// Whether other roles are reached over HTTPS.
    pub fn is_https(&self) -> bool {
        self.client.is_some()
    }

    /// An HTTP client for calls to other roles: `overall` on every request when given (`None`
    /// for transfers whose length is not bounded, such as blob copies), connects bounded by
    /// [`CONNECT_TIMEOUT`], no proxy from the environment (roles are addressed directly), and
    /// URLs made by [`ClusterHttp::url`].
    pub fn http(&self, overall: Option<Duration>) -> Result<ClusterHttp, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(overall.map_or(CONNECT_TIMEOUT, |t| CONNECT_TIMEOUT.min(t)))
            .no_proxy();
        if let Some(t) = overall {
            b = b.timeout(t);
        }
        if let Some(client) = &self.client {
            b = b.use_preconfigured_tls((**client).clone()).https_only(true);
        }
        Ok(ClusterHttp {
            http: b.build()?,
            scheme: if self.is_https() { "https" } else { "http" },
        })
    }
}

/// An HTTP client for calls to other roles, and the scheme they speak; derefs to the
/// [`reqwest::Client`].
#[derive(Clone, Debug)]
pub struct ClusterHttp {
    http: reqwest::Client,
    scheme: &'static str,
}

impl ClusterHttp {
    /// `{scheme}://{host}{path}`; `path` starts with `/` and is already percent-encoded.
    pub fn url(&self, host: &HostPort, path: &str) -> String {
        format!("{}://{host}{path}", self.scheme)
    }

    /// `{scheme}://{host}/` as a parsed URL, for callers that add path segments.
    pub fn base(&self, host: &HostPort) -> Result<reqwest::Url, String> {
        reqwest::Url::parse(&self.url(host, "/"))
            .map_err(|e| format!("{host} does not make a URL: {e}"))
    }
}

impl std::ops::Deref for ClusterHttp {
    type Target = reqwest::Client;

    fn deref(&self) -> &reqwest::Client {
        &self.http
    }
}

/// TLS on the P2P port (`peer.tls`): both sides present a certificate from the same CA; the
/// dialling side also checks that the certificate names the IP address it dialled.
#[derive(Clone)]
pub struct PeerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// From `peer.tls`.
    pub fn load(config: &shoal_config::PeerTls) -> Result<Self, TlsError> {
        let server = server_config(&config.cert, &config.key, Some(&config.ca))?;
        let client = client_config(&config.ca, Some(&config.cert), Some(&config.key))?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// The server side of the handshake on an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<PeerStream> {
        let tls = self.acceptor.accept(tcp).await?;
        Ok(PeerStream::Tls(Box::new(tls.into())))
    }

    /// The client side of the handshake on a connection dialled to `addr`.
    pub async fn connect(&self, addr: SocketAddr, tcp: TcpStream) -> std::io::Result<PeerStream> {
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = self.connector.connect(name, tcp).await?;
        Ok(PeerStream::Tls(Box::new(tls.into())))
    }
}

/// A connection on the P2P port: plain TCP, or TLS over it.
pub enum PeerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl PeerStream {
    /// The TCP socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            PeerStream::Plain(s) => s,
            PeerStream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerStream::Plain(s) => s.is_write_vectored(),
            PeerStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
