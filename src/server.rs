//! Server mode: the same router on a TCP port (local work, ECS/Fargate behind a load balancer
//! with an ADOT collector sidecar), with graceful shutdown on SIGTERM or Ctrl-C, and the limits
//! a server facing the network needs against slow or greedy clients ([`ServerSettings`]):
//!
//! - **A header-read timeout.** A connection must send a whole request head within
//!   `SERVER_HEADER_READ_TIMEOUT_SECS` (10 s by default), counted from when the server starts
//!   waiting for it, so an idle keep-alive connection is closed after it too; otherwise the
//!   connection is closed. Without it, connections that never finished their headers stayed
//!   open for good (hyper applies none unless given a timer, and `axum::serve` gives it none).
//! - **A cap on connections.** At most `SERVER_MAX_CONNECTIONS` (1024) are served at once;
//!   further ones wait in the listen backlog until one closes, as Go's `LimitListener` does.
//!   Each connection's read buffer is bounded at 64 KiB (hyper's default is about 400 KB), so
//!   the cap bounds memory too.
//! - **A request timeout.** A request (its body included) must be answered within
//!   `SERVER_REQUEST_TIMEOUT_SECS` (30 s), else it gets a 408 problem; this one is applied by
//!   the router ([`crate::routes`]), so the answer is traced and rendered like any error.
//! - **A write timeout.** A response write that makes no progress for as long (a client that
//!   stops reading) fails and closes the connection ([`WriteDeadline`]), so a slot is never
//!   held by a reader that went away, and shutdown never waits on one.
//!
//! The accept loop is hyper's HTTP/1 connection builder driven directly (as axum's
//! `serve-with-hyper` example does), since `axum::serve` exposes none of these settings.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::env::{Env, EnvError};

/// The limits of server mode, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub request_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerSettings {
    pub fn from_env(env: Env<'_>) -> Result<Self, EnvError> {
        let defaults = Self::default();
        let number = |name: &'static str, default: u64, max: u64| -> Result<u64, EnvError> {
            match env.get(name) {
                None => Ok(default),
                Some(raw) => raw
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        EnvError::new(
                            name,
                            raw,
                            format!("expected a whole number from 1 to {max}"),
                        )
                    }),
            }
        };
        Ok(Self {
            header_read_timeout: Duration::from_secs(number(
                "SERVER_HEADER_READ_TIMEOUT_SECS",
                defaults.header_read_timeout.as_secs(),
                300,
            )?),
            max_connections: number(
                "SERVER_MAX_CONNECTIONS",
                defaults.max_connections as u64,
                100_000,
            )? as usize,
            request_timeout: Duration::from_secs(number(
                "SERVER_REQUEST_TIMEOUT_SECS",
                defaults.request_timeout.as_secs(),
                900,
            )?),
        })
    }
}

pub async fn run(app: Router, addr: SocketAddr, settings: &ServerSettings) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        address = %local,
        max_connections = settings.max_connections,
        header_read_timeout_secs = settings.header_read_timeout.as_secs(),
        "listening on http://{local}"
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    // hyper's default read buffer is about 400 KB a connection; request heads here are small.
    http.max_buf_size(64 * 1024);
    let http = Arc::new(http);
    let write_timeout = settings.request_timeout;
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (stop, stopping) = watch::channel(false);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, connections wait in the backlog, not in memory.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let http = http.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            serve_connection(&http, stream, peer, app, stopping, write_timeout).await;
            // Only once the socket is closed: a client waiting at the cap is served after it.
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it is done: having them all back means drained.
    let _ = slots
        .acquire_many(u32::try_from(settings.max_connections).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// Serves one connection until it closes; on the stop signal, finishes the request in flight
/// and accepts no new one.
async fn serve_connection(
    http: &hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stopping: watch::Receiver<bool>,
    write_timeout: Duration,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        // Router's error type is Infallible: every outcome is a response.
        let app = app.clone();
        async move { app.oneshot(request.map(Body::new)).await }
    });
    let io = WriteDeadline::new(stream, write_timeout);
    let connection = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
            // Finish the request in flight, accept no new one on this connection.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(error = %error, "connection closed with an error");
    }
}

/// A stream whose writes fail once one has waited `limit` without progress: hyper has no
/// write timeout, and a client that never reads would hold its connection for good.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write is pending.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: None,
        }
    }

    /// Disarms on progress; on `Pending`, arms the deadline and fails once it passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.deadline = None;
            return outcome;
        }
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, outcome)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<ServerSettings, EnvError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServerSettings::from_env(Env::new(&move |n| map.get(n).cloned()))
    }

    /// Review of issue 23: a client that never reads its response held the connection (and
    /// its slot, and shutdown) for good.
    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        use tokio::io::AsyncWriteExt;
        let (near, _far) = tokio::io::duplex(1024);
        let mut stream = WriteDeadline::new(near, Duration::from_millis(50));
        let error = stream.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        let (near, mut far) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.map(|_| all.len())
        });
        let mut stream = WriteDeadline::new(near, Duration::from_secs(5));
        stream.write_all(&[0u8; 64 * 1024]).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(
            reader.await.unwrap().unwrap(),
            64 * 1024,
            "a reader gets it all"
        );
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        assert_eq!(settings(&[]).unwrap(), ServerSettings::default());
        let s = settings(&[
            ("SERVER_HEADER_READ_TIMEOUT_SECS", "2"),
            ("SERVER_MAX_CONNECTIONS", "50"),
            ("SERVER_REQUEST_TIMEOUT_SECS", "5"),
        ])
        .unwrap();
        assert_eq!(s.header_read_timeout, Duration::from_secs(2));
        assert_eq!(s.max_connections, 50);
        assert_eq!(s.request_timeout, Duration::from_secs(5));
        for (name, bad) in [
            ("SERVER_HEADER_READ_TIMEOUT_SECS", "0"),
            ("SERVER_MAX_CONNECTIONS", "lots"),
            ("SERVER_REQUEST_TIMEOUT_SECS", "-1"),
        ] {
            let err = settings(&[(name, bad)]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
