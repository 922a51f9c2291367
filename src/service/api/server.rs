//! Serving the API: a bound listener and the router in; HTTP or HTTPS connections out, until told
//! to stop.
//!
//! In: a listener already bound (so the caller knows the address, and a port of 0 works), the
//! router, [`ServeOptions`] (TLS, the client timeout) and a stop token. Out: connections served
//! until the token is cancelled; then no new ones are accepted and the open ones get `grace` to
//! finish. A client that is slow to send its request head is disconnected after the client
//! timeout (hyper cannot answer it: it has no request yet); a slow body gets `408` from the guard;
//! a TLS handshake that does not finish in that time is dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the TLS certificate {cert} and key {key} cannot be used together: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The server's certificate chain and key, ready to serve HTTPS.
#[derive(Clone)]
pub struct Tls(RustlsConfig);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Tls {
    /// Reads a PEM certificate chain (the server's certificate first) and its PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let certificate = |reason: String| TlsError::Certificate {
            path: cert.to_path_buf(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| certificate(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| certificate(e.to_string()))?;
        if chain.is_empty() {
            return Err(certificate("no certificate in the file".into()));
        }
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
        // ring: the provider the MongoDB driver's rustls already uses.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = |reason: String| TlsError::Pair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| pair(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| pair(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls(RustlsConfig::from_config(Arc::new(config))))
    }
}

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// HTTPS with this certificate; plain HTTP without.
    pub tls: Option<Tls>,
    /// How long a client may take to send a request head (and to finish a TLS handshake).
    pub client_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets open requests finish within
/// `grace` (event streams end by themselves once their jobs have stopped).
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    options: ServeOptions,
    stop: CancellationToken,
    grace: Duration,
) -> io::Result<()> {
    let handle = Handle::new();
    let service = app.into_make_service();
    let timeout = options.client_timeout;
    let mut server = axum_server::from_tcp(listener)?
        .handle(handle.clone())
        .first_request_timeout(timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(timeout));
    let serving = async move {
        match options.tls {
            None => server.serve(service).await,
            Some(Tls(config)) => {
                let acceptor = RustlsAcceptor::new(config).handshake_timeout(timeout);
                server.acceptor(acceptor).serve(service).await
            }
        }
    };
    tokio::pin!(serving);
    tokio::select! {
        outcome = &mut serving => return outcome,
        _ = stop.cancelled() => handle.graceful_shutdown(Some(grace)),
    }
    serving.await
}
