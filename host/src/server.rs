//! Serving the API on a listener: the accept loop, its limits on slow
//! clients and open connections, TLS, and graceful shutdown.
//!
//! axum's own `serve` offers no header read timeout and no connection limit,
//! so the host runs a small accept loop on hyper's HTTP/1 connection instead:
//! one tokio task per connection, a semaphore slot per connection, hyper's
//! `header_read_timeout` against clients that never finish their headers,
//! and hyper-util's graceful shutdown. Everything above the connection (body
//! and request timeouts, the panic net) is a tower layer, in [`layers`].

mod layers;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::App;

pub use layers::{Guarded, with_limits};

/// How long the host waits for clients and for its own handlers, and how
/// many connections it serves at once. The `serve` command's flags set
/// these; [`Limits::DEFAULT`] holds the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection that has not sent a whole request head this long after
    /// it opened, or after its previous answer, is closed without an answer.
    /// This ends slow-header clients and idle keep-alive connections alike;
    /// it also bounds the TLS handshake.
    pub header_timeout: Duration,
    /// A request body that delivers nothing for this long is answered 408.
    /// The clock restarts with every chunk, so a slow but steady upload is
    /// fine.
    pub body_timeout: Duration,
    /// A request not answered this long after its head arrived is answered
    /// 503 and its handler is dropped. Also the grace period at shutdown,
    /// since no request in flight can need longer.
    pub request_timeout: Duration,
    /// Connections served at once. Past it the host stops accepting: new
    /// connections wait in the kernel's listen backlog until a served one
    /// closes (and are refused by the kernel once the backlog is full).
    pub max_connections: usize,
}

impl Limits {
    /// The defaults: 30 s for headers and for each body chunk, as hyper
    /// and common proxies use; 60 s for a whole request, because a plugin
    /// upload compiles its component before it answers, which takes several
    /// seconds on two cores; 512 connections, below the usual limit of 1024
    /// open files so the host keeps descriptors for its own files.
    pub const DEFAULT: Self = Self {
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(60),
        max_connections: 512,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Serves `app` on `listener` within `limits`, over TLS when `tls` is
/// given, until `shutdown` completes. Then it stops accepting, lets the
/// requests in flight finish for up to [`Limits::request_timeout`], and
/// returns.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let service = TowerToHyperService::new(with_limits(crate::api::router(app), &limits));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Waiting for a slot before accepting leaves the connections past
        // the limit to the kernel's backlog, where they cost the host
        // nothing.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the slot semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    wait_after_accept_error(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            http: http.clone(),
            service: service.clone(),
            watcher: graceful.watcher(),
            tls: tls.clone(),
            handshake_timeout: limits.header_timeout,
        };
        tokio::spawn(async move {
            connection.run(stream, peer).await;
            drop(slot);
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, "waiting for requests in flight");
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.request_timeout) => {
            tracing::warn!(
                grace_secs = limits.request_timeout.as_secs(),
                "requests still in flight after the grace period are dropped"
            );
        }
    }
}

/// After a failed `accept`: a connection that died before it was accepted
/// is that client's problem; anything else (out of file descriptors, most
/// often) would fail again at once, so the loop pauses instead of spinning.
async fn wait_after_accept_error(err: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::debug!(error = %err, "connection lost before accept");
        return;
    }
    tracing::error!(error = %err, "accepting connections failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Everything one connection's task needs.
struct Connection {
    http: http1::Builder,
    service: TowerToHyperService<Guarded>,
    watcher: Watcher,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
}

impl Connection {
    /// Runs the TLS handshake, if any, then serves requests until the
    /// client leaves, a timeout closes the connection, or shutdown ends it.
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        let Some(acceptor) = self.tls.clone() else {
            return self.serve(TokioIo::new(stream), peer).await;
        };
        // A handshake is part of the request head as far as slow clients go:
        // without this bound a client that never says hello holds its slot.
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(TokioIo::new(stream), peer).await,
            Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    async fn serve<I>(self, io: TokioIo<I>, peer: SocketAddr)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let connection = self.http.serve_connection(io, self.service);
        if let Err(err) = self.watcher.watch(connection).await {
            // Header timeouts, resets and malformed requests: routine on an
            // open port, and nothing the operator can act on.
            tracing::debug!(%peer, error = %err, "connection ended");
        }
    }
}

/// Why a certificate or key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not PEM, or holds nothing of the kind asked for.
    #[error("{} holds no PEM {what}: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// What the parser said.
        message: String,
    },
    /// rustls refused the pair, e.g. a key that does not belong to the
    /// certificate.
    #[error("cannot use the certificate and key: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor for the PEM certificate chain in `cert` (the host's
/// certificate first) and the PEM private key in `key` (PKCS#8, PKCS#1 or
/// SEC1). TLS 1.2 and 1.3 with rustls' safe defaults, HTTP/1.1 only.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let pem_error = |path: &Path, what, message: String| TlsError::Pem {
        path: path.to_owned(),
        what,
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(cert, "certificate", err.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            cert,
            "certificate",
            "no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|err| pem_error(key, "private key", err.to_string()))?;
    // The ring provider is named outright: it is the one already built for
    // plugins' outbound HTTPS, and naming it keeps the process-wide default
    // provider out of the picture.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received, shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
