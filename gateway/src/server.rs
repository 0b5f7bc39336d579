//! The HTTP server: accept loop, per-connection tasks, graceful shutdown.
//!
//! On shutdown the listener closes first (no new connections), every open connection is told
//! to finish its in-flight request and close, and we wait for them, bounded.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::phases;
use crate::state::AppState;

/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write to a client may make no progress before the connection is closed: a
/// client that never reads cannot keep an answer (and its memory) in the gateway.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).keep_alive(true).header_read_timeout(Duration::from_secs(30));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(phases::handle(state, req, peer.ip()).await) }
                });
                let stream = WriteDeadline::new(stream, WRITE_TIMEOUT);
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out; closing"),
    }
}

/// Installs the SIGTERM/SIGINT handlers now, and returns a future that resolves on either.
/// Installing eagerly matters: a signal that arrives after we announced our address but
/// before the future is first polled must not kill the process without draining.
pub fn shutdown_signal() -> crate::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| crate::Error::io("installing SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| crate::Error::io("installing SIGINT handler", e))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// A stream whose writes fail with `TimedOut` after making no progress for `timeout`.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline { inner, timeout, stalled: None }
    }

    /// Called when a write is pending: starts the clock, or says it ran out.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.stalled = None;
                Poll::Ready(v)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(r, cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_client_that_stops_reading_fails_the_write_after_the_timeout() {
        // A 4 KiB pipe: the writer fills it, then the reader reads nothing more.
        let (server, mut client) = tokio::io::duplex(4096);
        let mut stream = WriteDeadline::new(server, TIMEOUT);
        let started = std::time::Instant::now();
        let mut written = 0usize;
        let fill = async {
            loop {
                match stream.write(&[b'x'; 1024]).await {
                    Ok(n) => written += n,
                    Err(e) => break e,
                }
            }
        };
        // Without the deadline the write would wait forever.
        let err = tokio::time::timeout(TIMEOUT * 10, fill).await.expect("the stalled write never failed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(written, 4096, "writes that made progress must not fail");
        assert!(started.elapsed() >= TIMEOUT, "{:?}", started.elapsed());
        // The client did get what was written.
        let mut got = vec![0u8; 4096];
        client.read_exact(&mut got).await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (server, mut client) = tokio::io::duplex(1024);
        let mut stream = WriteDeadline::new(server, TIMEOUT);
        let total = 16 * 1024;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut read = 0;
            let mut interval = tokio::time::interval(TIMEOUT / 8);
            while read < total {
                interval.tick().await;
                read += client.read(&mut buf).await.unwrap();
            }
            read
        });
        // 32 reads, one every 25 ms: the whole transfer takes four times the timeout, but no
        // write waits longer than a tick.
        stream.write_all(&vec![b'x'; total]).await.unwrap();
        assert_eq!(reader.await.unwrap(), total);
    }
}
