//! The HTTP server: accept loop, connection caps, per-connection tasks, graceful shutdown.
//!
//! Connections are capped per client address and in all, below the file-descriptor limit;
//! one over a cap is answered at once without being read, and closed. On shutdown the
//! listener closes first (no new connections); a connection that has delivered no request
//! (idle, or still sending its head) is closed at once, and every other one finishes its
//! in-flight request and closes; we wait for them, bounded. A body still arriving gets
//! [`phases::payload::DRAIN_BODY_GRACE`] to finish.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error::{ApiError, Code};
use crate::parse_errors;
use crate::phases::{self, payload::BodyTimeouts};
use crate::state::AppState;

/// How long in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write to a client may make no progress before the connection is closed: a
/// client that never reads cannot keep an answer (and its memory) in the gateway.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client has to send a complete request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// hyper's read buffer cap, so the largest request head it holds (hyper's default is ~400 KiB):
/// above the gateway's own limits (`phases::head`), so that a head hyper parses gets a coded
/// answer, and small enough that thousands of open connections cannot each pin 400 KiB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// File descriptors kept for everything but client connections (database pools, plugins'
/// outbound connections, log and cache files), at most half the limit.
const FD_RESERVE: usize = 1024;

/// Refusals are logged at most this often (with counts), never once per connection.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What `serve` enforces on client connections (see `docs/operations.md`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub body_idle_timeout: Duration,
    pub body_timeout: Duration,
}

/// Raises the soft limit on open files to the hard limit, and returns the soft limit.
pub fn raise_fd_limit() -> io::Result<usize> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r.rlim_cur = r.rlim_max;
        } else {
            tracing::warn!(error = %io::Error::last_os_error(), soft = r.rlim_cur, hard = r.rlim_max, "could not raise the open-file limit");
        }
    }
    Ok(usize::try_from(r.rlim_cur).unwrap_or(usize::MAX))
}

/// The global connection cap for an open-file limit of `nofile`: `configured`, but never more
/// than the limit less a reserve for everything else.
pub fn connection_cap(nofile: usize, configured: Option<usize>) -> usize {
    let most = nofile.saturating_sub(FD_RESERVE.min(nofile / 2)).max(1);
    match configured {
        Some(n) if n > most => {
            tracing::warn!(configured = n, nofile, used = most, "GATEWAY_MAX_CONNECTIONS is above what the open-file limit allows; lowered");
            most
        }
        Some(n) => n,
        None => most,
    }
}

/// Whom a per-address cap counts together: one IPv4 address, or one IPv6 /64 (what one
/// client is usually handed).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    PerAddress,
    Global,
}

/// Open client connections, in all and per address.
struct Connections {
    cap: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open connection; dropping it gives the place back.
struct Slot {
    conns: Arc<Connections>,
    key: IpAddr,
}

impl Connections {
    fn new(cap: usize, per_address: usize) -> Arc<Connections> {
        Arc::new(Connections { cap, per_address, open: Mutex::new((0, HashMap::new())) })
    }

    fn open(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = address_key(ip);
        let mut guard = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_address) = &mut *guard;
        if *total >= self.cap {
            return Err(Refused::Global);
        }
        let n = by_address.entry(key).or_insert(0);
        if *n >= self.per_address {
            return Err(Refused::PerAddress);
        }
        *n += 1;
        *total += 1;
        Ok(Slot { conns: self.clone(), key })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.conns.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_address) = &mut *guard;
        *total -= 1;
        if let Some(n) = by_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                by_address.remove(&self.key);
            }
        }
    }
}

/// Counts refused connections and logs them at most every [`REFUSAL_LOG_EVERY`].
#[derive(Default)]
struct Refusals {
    per_address: u64,
    global: u64,
    logged: (u64, u64),
    last: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, why: Refused) {
        match why {
            Refused::PerAddress => self.per_address += 1,
            Refused::Global => self.global += 1,
        }
        if self.last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
            self.log();
        }
    }

    /// Logs the totals if they grew since the last line.
    fn log(&mut self) {
        if (self.per_address, self.global) == self.logged {
            return;
        }
        tracing::warn!(
            per_address = self.per_address,
            global = self.global,
            since_last = self.per_address + self.global - self.logged.0 - self.logged.1,
            "connections_refused"
        );
        self.logged = (self.per_address, self.global);
        self.last = Some(Instant::now());
    }
}

/// Answers a connection over a cap without reading it, and closes it. One non-blocking write
/// into an empty socket buffer: it never waits. A client that already sent its request may
/// see a reset instead of the answer (its bytes are unread when the socket closes).
fn refuse(stream: TcpStream, why: Refused) {
    let e = match why {
        Refused::PerAddress => ApiError::new(Code::TooManyConnections, "too many open connections from this address"),
        Refused::Global => ApiError::new(Code::Unavailable, "the gateway is at its connection limit"),
    };
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let body = phases::respond::error_body(&e, &request_id);
    let status = e.code.status();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    );
    let _ = stream.try_write(&[head.as_bytes(), &body].concat());
}

/// The access line of a request hyper refused itself (it closes after the answer, which
/// [`parse_errors::Envelopes`] turned into the JSON envelope with `request_id`); other
/// connection errors (resets, timeouts) are not requests.
fn log_connection_error(e: &hyper::Error, latency: Duration, request_id: Option<String>) {
    let (status, code) = if e.is_parse_version_h2() {
        (0, "")
    } else if e.is_parse_too_large() {
        // hyper's one public predicate covers both; its message tells them apart.
        if e.to_string().starts_with("URI too long") {
            (414, Code::UriTooLong.as_str())
        } else {
            (431, Code::HeadersTooLarge.as_str())
        }
    } else if e.is_parse() {
        (400, Code::MalformedRequest.as_str())
    } else {
        (0, "")
    };
    if status == 0 {
        tracing::debug!(error = %e, "client connection ended with an error");
        return;
    }
    let request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    phases::log::unparsed(&request_id, status, code, &e.to_string(), latency);
}

pub async fn serve(listener: TcpListener, state: Arc<AppState>, settings: Settings, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let conns = Connections::new(settings.max_connections, settings.max_connections_per_address);
    let mut refusals = Refusals::default();
    let mut refusal_tick = tokio::time::interval(REFUSAL_LOG_EVERY);
    // Every connection and request holds a receiver; the drain ends when all are gone.
    let (drain, _) = watch::channel(false);
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
                let slot = match conns.open(peer.ip()) {
                    Ok(s) => s,
                    Err(why) => {
                        refuse(stream, why);
                        refusals.note(why);
                        continue;
                    }
                };
                let client = phases::Client {
                    addr: peer.ip(),
                    body: BodyTimeouts {
                        idle: settings.body_idle_timeout,
                        total: settings.body_timeout,
                        draining: drain.subscribe(),
                    },
                };
                // Set once hyper hands a request to the pipeline: before that, the
                // connection holds nothing a drain must wait for.
                let delivered = Arc::new(AtomicBool::new(false));
                let requests = Arc::new(parse_errors::Requests::default());
                let svc = {
                    let (state, delivered, requests) = (state.clone(), delivered.clone(), requests.clone());
                    service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        delivered.store(true, Ordering::Relaxed);
                        requests.received(req.method());
                        let (state, client) = (state.clone(), client.clone());
                        async move { Ok::<_, Infallible>(phases::handle(state, req, &client).await) }
                    })
                };
                let stream = WriteDeadline::new(parse_errors::Envelopes::new(stream, requests.clone()), WRITE_TIMEOUT);
                let conn = http.serve_connection(TokioIo::new(stream), svc);
                let mut draining = drain.subscribe();
                tokio::spawn(async move {
                    let _slot = slot;
                    let opened = Instant::now();
                    tokio::pin!(conn);
                    let drained = async move {
                        let _ = draining.wait_for(|d| *d).await;
                    };
                    let ended = tokio::select! {
                        r = conn.as_mut() => Some(r),
                        () = drained => None,
                    };
                    let result = match ended {
                        Some(r) => r,
                        // Dropping the connection closes it.
                        None if !delivered.load(Ordering::Relaxed) => return,
                        None => {
                            // Idle keep-alive connections close at once; one with a request
                            // in flight answers it, then closes.
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        log_connection_error(&e, opened.elapsed(), requests.replaced());
                    }
                });
            }
            _ = refusal_tick.tick() => refusals.log(),
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    refusals.log();
    tracing::info!("shutting down: draining in-flight requests");
    drain.send_replace(true);
    tokio::select! {
        _ = drain.closed() => tracing::info!("all connections drained"),
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
        // Shutting down may still write (the envelope of `parse_errors`).
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progressed(r, cx)
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_millis(200);

    #[test]
    fn connections_are_capped_per_address_and_in_all() {
        let conns = Connections::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = conns.open(a).unwrap();
        let _a2 = conns.open(a).unwrap();
        assert_eq!(conns.open(a).err(), Some(Refused::PerAddress));
        let _b1 = conns.open(b).unwrap();
        assert_eq!(conns.open(b).err(), Some(Refused::Global));
        // A closed connection gives its place back, to its address and to the total.
        drop(a1);
        let _a3 = conns.open(a).unwrap();
        assert_eq!(conns.open(a).err(), Some(Refused::Global));
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
    }

    #[test]
    fn the_global_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(20_000, None), 20_000 - FD_RESERVE);
        assert_eq!(connection_cap(1024, None), 512);
        assert_eq!(connection_cap(20_000, Some(500)), 500);
        assert_eq!(connection_cap(20_000, Some(1_000_000)), 20_000 - FD_RESERVE);
        assert_eq!(connection_cap(1, None), 1);
    }

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
