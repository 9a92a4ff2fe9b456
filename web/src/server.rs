//! Serving a router over TLS: ALPN offers `h2` and `http/1.1` and
//! hyper-util's auto builder speaks whichever was chosen (browsers allow
//! about six HTTP/1.1 connections per site and every open page holds an
//! event stream). At most [`MAX_CONNECTIONS`] at once; each request carries
//! the peer address as `ConnectInfo<SocketAddr>`. Shutdown stops accepting,
//! lets requests in flight finish for a short grace, then drops the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The protocols offered by ALPN, preferred first.
pub fn with_alpn(
    tls: &tokio_rustls::rustls::ServerConfig,
) -> Arc<tokio_rustls::rustls::ServerConfig> {
    let mut config = tls.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves `app` over TLS on `listener` until `shutdown` completes.
pub async fn launch(
    listener: TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(with_alpn(&tls));
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (hard_stop, hard_stopped) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // e.g. out of file descriptors: log and keep serving
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: too many connections");
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let mut hard_stopped = hard_stopped.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let app = app.map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
            let service = TowerToHyperService::new(app);
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(CloseNotify(tls)), service);
            tokio::select! {
                r = watcher.watch(conn.into_owned()) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = hard_stopped.wait_for(|stop| *stop) => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("connections still open after the shutdown grace are dropped");
    }
    let _ = hard_stop.send(true);
    Ok(())
}

/// A TLS stream that says goodbye: when hyper drops a connection after an
/// error (a malformed request it answered with 400), the client still gets
/// TLS's `close_notify` before the TCP close, so it sees a clean end
/// instead of "EOF occurred in violation of protocol". Best effort: the
/// alert is written only if the socket takes it at once.
struct CloseNotify(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl Drop for CloseNotify {
    fn drop(&mut self) {
        let (tcp, conn) = self.0.get_mut();
        conn.send_close_notify();
        let mut out = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        if !out.is_empty() {
            let _ = tcp.try_write(&out);
        }
    }
}

impl tokio::io::AsyncRead for CloseNotify {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CloseNotify {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
