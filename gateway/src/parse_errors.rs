//! The gateway's answer to a request hyper cannot parse.
//!
//! hyper answers such a request itself (a bare 400, 414 or 431 with an empty body) and has no
//! hook to change that answer. [`Envelopes`] wraps a connection's IO and follows the responses
//! hyper writes, by their `content-length`: a final response head written while no request
//! awaits its answer can only be hyper's own, so it is swallowed and the JSON envelope (with a
//! request id, `connection: close`) written in its place. Anything it cannot follow (a response
//! without a length, an upgrade, a head it cannot parse) makes it pass every later byte through
//! unchanged: it may miss a replacement, never touch a normal response.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ApiError, Code};
use crate::phases;

/// The requests of one connection that await their answer, shared by its service and its IO.
#[derive(Default)]
pub struct Requests {
    /// One entry per request handed to the service and not yet answered: whether it is a
    /// HEAD request (its answer has a `content-length` but no body).
    awaiting: Mutex<VecDeque<bool>>,
    /// The request id of the envelope written in place of hyper's answer.
    replaced: Mutex<Option<String>>,
}

impl Requests {
    /// Called by the service for every request hyper hands it, before it can be answered.
    pub fn received(&self, method: &http::Method) {
        lock(&self.awaiting).push_back(method == http::Method::HEAD);
    }

    /// The request id the client got in place of hyper's own answer, if it got one.
    pub fn replaced(&self) -> Option<String> {
        lock(&self.replaced).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The code and message for a status hyper answers itself.
fn refusal(status: u16) -> Option<ApiError> {
    let (code, message) = match status {
        400 => (Code::MalformedRequest, "the request is not valid HTTP/1.1"),
        414 => (Code::UriTooLong, "the request target is too long"),
        431 => (Code::HeadersTooLarge, "the request header section is too large"),
        _ => return None,
    };
    Some(ApiError::new(code, message))
}

/// What the client gets instead of hyper's bare answer.
fn envelope(e: &ApiError, request_id: &str) -> Bytes {
    let body = phases::respond::error_body(e, request_id);
    let status = e.code.status();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    );
    Bytes::from([head.as_bytes(), &body].concat())
}

/// The largest response head followed; a longer one stops the following.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

enum Head {
    /// Not a head that can be followed.
    Unknown,
    /// A head not complete in what was offered.
    Partial,
    Complete { len: usize, status: u16, content_length: Option<u64>, chunked: bool },
}

fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Unknown,
    };
    let Some(status) = r.code else { return Head::Unknown };
    let mut content_length = None;
    let mut chunked = false;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok()) else { return Head::Unknown };
            if content_length.is_some_and(|c| c != n) {
                return Head::Unknown;
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    Head::Complete { len, status, content_length, chunked }
}

/// A connection's IO that replaces hyper's own answers with the JSON envelope (module docs).
pub struct Envelopes<S> {
    inner: S,
    requests: Arc<Requests>,
    /// Bytes of the current response (rest of its head, and its body) still to pass through;
    /// at 0 the next byte written starts a response head.
    left: u64,
    /// Following was lost: every byte passes through.
    lost: bool,
    /// The envelope, as far as it is not yet written.
    pending: Bytes,
}

impl<S> Envelopes<S> {
    pub fn new(inner: S, requests: Arc<Requests>) -> Self {
        Envelopes { inner, requests, left: 0, lost: false, pending: Bytes::new() }
    }

    /// Reads the head that starts at the front of `bufs`, and returns how many of its bytes
    /// to report written without writing them (hyper's own answer), or 0 (a head to pass).
    fn classify(&mut self, bufs: &[io::IoSlice<'_>]) -> usize {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        let mut head = parse_head(first);
        if matches!(head, Head::Partial) {
            // A head split across slices: read it from a bounded copy.
            let mut joined = Vec::new();
            for b in bufs {
                let take = b.len().min(MAX_HEAD - joined.len());
                joined.extend_from_slice(&b[..take]);
                if joined.len() == MAX_HEAD {
                    break;
                }
            }
            head = parse_head(&joined);
        }
        let Head::Complete { len, status, content_length, chunked } = head else {
            self.lost = true;
            return 0;
        };
        if (100..200).contains(&status) {
            // An interim head (100 Continue) answers nothing yet; after 101 the bytes are
            // another protocol's.
            self.lost = status == 101;
            self.left = len as u64;
            return 0;
        }
        let Some(head_request) = lock(&self.requests.awaiting).pop_front() else {
            // No request awaits an answer: this is hyper answering a head it refused.
            match refusal(status) {
                Some(e) => {
                    let request_id = uuid::Uuid::new_v4().simple().to_string();
                    self.pending = envelope(&e, &request_id);
                    *lock(&self.requests.replaced) = Some(request_id);
                    // hyper closes after it; should anything follow, it is not ours to read.
                    self.lost = true;
                    return len;
                }
                None => {
                    self.lost = true;
                    return 0;
                }
            }
        };
        let body = if head_request || status == 204 || status == 304 {
            0
        } else {
            match content_length {
                Some(n) if !chunked => n,
                _ => {
                    self.lost = true;
                    return 0;
                }
            }
        };
        self.left = len as u64 + body;
        0
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_bufs(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>>
    where
        S: AsyncWrite + Unpin,
    {
        ready!(self.poll_pending(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 || self.lost {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.left == 0 {
            let swallowed = self.classify(bufs);
            if swallowed > 0 {
                // The envelope goes out now if the socket takes it, else on flush.
                if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(swallowed));
            }
            if self.lost {
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
        }
        // Never past the end of the current response: the next one's head is read first.
        let limit = usize::try_from(self.left).unwrap_or(usize::MAX).min(total);
        let n = if limit == total {
            ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?
        } else {
            let mut cut = Vec::with_capacity(bufs.len());
            let mut room = limit;
            for b in bufs {
                if room == 0 {
                    break;
                }
                let take = b.len().min(room);
                cut.push(io::IoSlice::new(&b[..take]));
                room -= take;
            }
            ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &cut))?
        };
        self.left -= n as u64;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Envelopes<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Envelopes<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper's own answer to a head it cannot parse, as hyper 1.x writes it.
    const BARE_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 11:00:00 GMT\r\n\r\n";

    fn response(status: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: r1\r\n\r\n{body}", body.len()).into_bytes()
    }

    /// Writes `chunks` through the wrapper (each with `write_all`, so partial writes resume
    /// mid-chunk), flushes, shuts down, and returns what the client read.
    async fn through(requests: &Arc<Requests>, pipe: usize, chunks: &[&[u8]]) -> Vec<u8> {
        let (server, mut client) = tokio::io::duplex(pipe);
        let mut io = Envelopes::new(server, requests.clone());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        for c in chunks {
            io.write_all(c).await.unwrap();
        }
        io.flush().await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        reader.await.unwrap()
    }

    fn requests(methods: &[http::Method]) -> Arc<Requests> {
        let r = Arc::new(Requests::default());
        for m in methods {
            r.received(m);
        }
        r
    }

    #[tokio::test]
    async fn answers_to_requests_pass_byte_for_byte() {
        // A body that reads like hyper's bare 400, a 100 Continue before an answer, an answer
        // to HEAD (a length but no body), a 204: all answers to requests, none replaced.
        let tricky = response("200 OK", std::str::from_utf8(BARE_400).unwrap());
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        let created = response("201 Created", "{\"id\":1}");
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n".to_vec();
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        let own_400 = response("400 Bad Request", "");
        let all: Vec<u8> = [&tricky[..], &cont[..], &created[..], &head[..], &empty[..], &own_400[..]].concat();
        let methods = [http::Method::GET, http::Method::POST, http::Method::HEAD, http::Method::DELETE, http::Method::GET];
        // In one write, in small pieces through a small pipe, one byte at a time.
        for (pipe, piece) in [(64 * 1024, all.len()), (16, 7), (3, 1)] {
            let r = requests(&methods);
            let chunks: Vec<&[u8]> = all.chunks(piece).collect();
            assert_eq!(through(&r, pipe, &chunks).await, all, "pipe {pipe}, pieces of {piece}");
            assert_eq!(r.replaced(), None);
        }
    }

    #[tokio::test]
    async fn hypers_own_answer_after_keep_alive_answers_becomes_the_envelope() {
        let first = response("200 OK", "{\"ok\":true}");
        let second = response("404 Not Found", "{\"error\":\"no\"}");
        for (status, code) in [("400 Bad Request", "MALFORMED_REQUEST"), ("431 Request Header Fields Too Large", "HEADERS_TOO_LARGE"), ("414 URI Too Long", "URI_TOO_LONG")] {
            let bare = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").into_bytes();
            // Through a 5-byte pipe every write is partial, the envelope's too. (hyper offers
            // a head whole; one split across writes is not followed, so the split is in a body.)
            for (pipe, joined) in [(64 * 1024, true), (5, false)] {
                let r = requests(&[http::Method::GET, http::Method::GET]);
                let got = if joined {
                    through(&r, pipe, &[&[&first[..], &second[..], &bare[..]].concat()]).await
                } else {
                    through(&r, pipe, &[&first[..], &second[..second.len() - 3], &second[second.len() - 3..], &bare[..]]).await
                };
                let prefix = [&first[..], &second[..]].concat();
                assert_eq!(&got[..prefix.len()], &prefix[..]);
                let rest = &got[prefix.len()..];
                let id = r.replaced().expect("replaced");
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut resp = httparse::Response::new(&mut headers);
                let httparse::Status::Complete(len) = resp.parse(rest).unwrap() else { panic!("partial") };
                assert_eq!(Some(status[..3].parse().unwrap()), resp.code);
                let header = |n: &str| resp.headers.iter().find(|h| h.name == n).map(|h| std::str::from_utf8(h.value).unwrap().to_string());
                assert_eq!(header("content-type").as_deref(), Some("application/json"));
                assert_eq!(header("connection").as_deref(), Some("close"));
                assert_eq!(header("x-request-id"), Some(id.clone()));
                assert_eq!(header("content-length"), Some((rest.len() - len).to_string()));
                let body: serde_json::Value = serde_json::from_slice(&rest[len..]).unwrap();
                assert_eq!(body["error_code"], code);
                assert_eq!(body["request_id"], id.as_str());
            }
        }
    }

    #[tokio::test]
    async fn vectored_writes_are_followed_across_slices() {
        let r = requests(&[http::Method::GET]);
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut io = Envelopes::new(server, r.clone());
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        // The head split across slices, its body and hyper's 400 in later ones.
        let mut slices = [io::IoSlice::new(&head[..10]), io::IoSlice::new(&head[10..]), io::IoSlice::new(b"hello"), io::IoSlice::new(BARE_400)];
        let mut bufs = &mut slices[..];
        let mut written = 0;
        while written < head.len() + 5 {
            let n = io.write_vectored(bufs).await.unwrap();
            written += n;
            // Never past the end of the answer: the next head is read on its own.
            assert!(written <= head.len() + 5, "{written}");
            io::IoSlice::advance_slices(&mut bufs, n);
        }
        assert_eq!(bufs.len(), 1);
        let n = io.write_vectored(bufs).await.unwrap();
        assert_eq!(n, BARE_400.len());
        io.shutdown().await.unwrap();
        drop(io);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..head.len() + 5], &[&head[..], &b"hello"[..]].concat()[..]);
        assert!(got[head.len() + 5..].starts_with(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json"));
        assert!(r.replaced().is_some());
    }

    #[tokio::test]
    async fn a_response_it_cannot_follow_stops_the_following() {
        // Chunked: the end of the body is unknown, so a 400 head inside it passes untouched.
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let r = requests(&[http::Method::GET]);
        let all = [&chunked[..], BARE_400].concat();
        assert_eq!(through(&r, 1024, &[chunked, BARE_400]).await, all);
        assert_eq!(r.replaced(), None);
    }
}
