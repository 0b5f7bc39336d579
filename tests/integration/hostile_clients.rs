//! Hostile clients at the connection layer: slow bodies, connection floods, requests hyper
//! cannot parse, HTTP/1.1 without `Host`, `Expect: 100-continue` with a bad token, and
//! half-sent requests at shutdown. Raw sockets, so the client misbehaves exactly as written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{assert_error, gateway_command, Gateway, GatewayOptions, TestDb};

/// One raw client connection and what it has read but not yet parsed.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        Raw { s: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() }
    }

    /// Connects from `local` (another loopback address is another client).
    async fn connect_from(local: &str, addr: &str) -> Raw {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
        Raw { s: sock.connect(addr.parse().unwrap()).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await
    }

    /// Reads until `buf` holds a complete response; `None` if the connection ends first.
    async fn answer(&mut self, within: Duration) -> Option<Answer> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(a) = self.parse() {
                return Some(a);
            }
            let mut chunk = [0u8; 8192];
            let left = deadline.checked_duration_since(Instant::now()).expect("no answer in time");
            match tokio::time::timeout(left, self.s.read(&mut chunk)).await.expect("no answer in time") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn parse(&mut self) -> Option<Answer> {
        parse(&mut self.buf)
    }

    /// Whether the gateway closed the connection (EOF or reset) within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 8192];
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            match tokio::time::timeout(left, self.s.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Takes one complete response off the front of `buf`, if it holds one.
fn parse(buf: &mut Vec<u8>) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if buf.len() < end + len {
        return None;
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    Some(Answer { status, headers, body })
}

/// The error contract on a raw answer: status, code, JSON envelope, request id echoed.
#[track_caller]
fn assert_envelope(a: &Answer, status: u16, code: &str) {
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, status, "{a:?} {body}");
    let v = a.json();
    assert_eq!(v["error_code"], code, "{body}");
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(a.headers.get("content-type").map(String::as_str), Some("application/json"));
    let rid = a.headers.get("x-request-id").expect("x-request-id");
    assert_eq!(v["request_id"].as_str(), Some(rid.as_str()), "{body}");
}

/// A head hyper refused: the envelope with `Connection: close`, and an access line (with
/// hyper's reason) that carries the same request id.
#[track_caller]
fn assert_refused<'a>(gw: &'a Gateway, a: &'a Answer, status: u16, code: &'a str) -> impl std::future::Future<Output = ()> + 'a {
    assert_envelope(a, status, code);
    assert_eq!(a.headers.get("connection").map(String::as_str), Some("close"), "{a:?}");
    logged(gw, a.headers["x-request-id"].clone(), status, code, true)
}

/// Waits for the access line of `request_id` (one of hyper's refusals if `by_parser`).
async fn logged(gw: &Gateway, request_id: String, status: u16, code: &str, by_parser: bool) {
    wait_until(&format!("the access line of {request_id}"), || {
        access_lines(gw, status)
            .iter()
            .any(|l| l["request_id"] == request_id.as_str() && l["error_code"] == code && l["reason"].is_string() == by_parser)
    })
    .await;
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Access lines (JSON log) with this status.
fn access_lines(gw: &Gateway, status: u16) -> Vec<Value> {
    gw.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "gateway::access" && v["status"] == status)
        .collect()
}

/// Polls `cond` until it holds (bounded): waiting on a condition, not a guess at a duration.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "not reached in 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin(gw: &Gateway) -> String {
    let org = gw.create_org("Acme", None).await;
    gw.create_token(&org, "admin", "a@acme.test").await.0
}

fn upload_head(token: &str, length: usize, extra: &str) -> Vec<u8> {
    format!(
        "POST /v1/businesses HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_answered_408_and_the_connection_closes() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env = env(&[("GATEWAY_BODY_IDLE_TIMEOUT_SECS", "1"), ("GATEWAY_BODY_TIMEOUT_SECS", "3")]);
    let gw = Gateway::start_with(opts).await;
    let token = admin(&gw).await;

    // A byte every 200 ms: never idle for 1 s, so only the 3 s total deadline can end it.
    let mut trickle = Raw::connect(&gw.addr).await;
    trickle.send(&upload_head(&token, 1000, "")).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = trickle.s.into_split();
    let writer = tokio::spawn(async move {
        while wr.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut read = Vec::new();
    // Read to the end: the answer, then the close.
    let ended = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut read)).await;
    writer.abort();
    let took = started.elapsed();
    assert!(ended.is_ok(), "the trickling body was never cut off");
    let a = parse(&mut read).expect("an answer before the connection closed");
    assert_envelope(&a, 408, "REQUEST_TIMEOUT");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(8), "{took:?}");

    // A body that stops: the idle timeout ends it, well before the total one would.
    let mut paused = Raw::connect(&gw.addr).await;
    paused.send(&upload_head(&token, 1000, "")).await.unwrap();
    paused.send(b"{\"name\":").await.unwrap();
    let started = Instant::now();
    let a = paused.answer(Duration::from_secs(15)).await.expect("answer");
    assert_envelope(&a, 408, "REQUEST_TIMEOUT");
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    assert!(paused.closed_within(Duration::from_secs(5)).await, "connection left open");

    // Both were logged, and nothing was written.
    wait_until("two 408 access lines", || access_lines(&gw, 408).len() == 2).await;
    assert!(access_lines(&gw, 408).iter().all(|l| l["error_code"] == "REQUEST_TIMEOUT" && l["route"] == "businesses.create"));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM businesses").fetch_one(&db.owner_pool().await).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_and_healthz_stays_reachable() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env = env(&[("GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "50")]);
    let gw = Gateway::start_with(opts).await;

    // 60 connections from one client (127.0.0.2) that never send a request.
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..60 {
        held.push(Raw::connect_from("127.0.0.2", &gw.addr).await);
    }
    // The gateway answers a refused connection at once without reading it; an accepted one
    // says nothing and is held open (sending nothing: a refused socket closed with unread
    // bytes would be reset, and its answer lost).
    type Waiting = tokio::task::JoinHandle<(Raw, Option<Answer>)>;
    let mut waiting: Vec<(usize, Waiting)> = held
        .drain(..)
        .enumerate()
        .map(|(i, mut c)| (i, tokio::spawn(async move {
            let a = tokio::time::timeout(Duration::from_secs(60), c.answer(Duration::from_secs(60))).await.ok().flatten();
            (c, a)
        })))
        .collect();
    wait_until("10 refusals", || waiting.iter().filter(|(_, h)| h.is_finished()).count() >= 10).await;
    let mut open = Vec::new();
    for (i, h) in waiting.drain(..) {
        if h.is_finished() {
            let (_, a) = h.await.unwrap();
            refused.push((i, a.expect("a refused connection is answered")));
        } else {
            open.push(h);
        }
    }
    assert_eq!(refused.len(), 10, "{refused:?}");
    // In accept order: the first 50 are served, the 51st and later refused.
    assert!(refused.iter().all(|(i, _)| *i >= 50), "{refused:?}");
    for (_, a) in &refused {
        assert_envelope(a, 429, "TOO_MANY_CONNECTIONS");
        assert_eq!(a.headers.get("retry-after").map(String::as_str), Some("1"));
    }

    // Another client is served while one client's 50 connections stall.
    let r = gw.req("GET", "/healthz").send().await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Refusals are logged with counts, not one line per connection.
    wait_until("a refusal log line", || gw.stderr().contains("connections_refused")).await;
    let lines: Vec<Value> = gw
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "connections_refused")
        .collect();
    assert!((1..=2).contains(&lines.len()), "{lines:?}");
    assert!(lines[0]["per_address"].as_u64().unwrap() >= 1, "{lines:?}");

    // The 50 are still open (none was answered or closed); closing one frees its place.
    assert!(open.iter().all(|h| !h.is_finished()));
    assert_eq!(open.len(), 50);
    open.pop().unwrap().abort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Raw::connect_from("127.0.0.2", &gw.addr).await;
        // A refused connection may be reset under its answer (its request is unread).
        let _ = c.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        match c.answer(Duration::from_secs(10)).await {
            Some(a) if a.status == 200 => break,
            other => {
                assert!(other.as_ref().is_none_or(|a| a.status == 429), "{other:?}");
                assert!(Instant::now() < deadline, "the closed connection's place was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for h in open {
        h.abort();
    }
}

#[tokio::test]
async fn connections_over_the_global_cap_are_refused_503() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env = env(&[("GATEWAY_MAX_CONNECTIONS", "5")]);
    let gw = Gateway::start_with(opts).await;
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(Raw::connect_from(&format!("127.0.0.{}", 10 + i), &gw.addr).await);
    }
    // A sixth client, from an address of its own: the cap is on the total. The gateway
    // accepts in arrival order, so the five hold their places first.
    let mut c = Raw::connect_from("127.0.0.20", &gw.addr).await;
    let a = c.answer(Duration::from_secs(20)).await.expect("the sixth connection is answered");
    assert_envelope(&a, 503, "UNAVAILABLE");
    assert_eq!(a.headers.get("retry-after").map(String::as_str), Some("1"));
    drop(held);
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit_at_start_up() {
    use std::os::unix::process::CommandExt;
    let db = TestDb::new().await;
    let opts = GatewayOptions::new(&db);
    let mut hard = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) }, 0);
    let hard = hard.rlim_max;
    let soft = 256.min(hard);
    let err = std::fs::File::create(opts.data_dir.join("stderr.log")).unwrap();
    let mut cmd = gateway_command(&opts);
    cmd.arg("serve").stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(err);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let log = opts.data_dir.join("stderr.log");
    let mut line = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while line.is_none() {
        assert!(Instant::now() < deadline, "no connection_limits line");
        assert!(child.try_wait().unwrap().is_none(), "gateway exited");
        line = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "connection_limits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = line.unwrap();
    assert_eq!(line["nofile"].as_u64(), Some(hard), "{line}");
    let cap = line["max_connections"].as_u64().unwrap();
    assert!(cap < hard && cap > soft, "{line}");
}

#[tokio::test]
async fn every_refused_head_is_a_coded_envelope_or_logged() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;

    // Past the gateway's limits but within hyper's: coded answers from the pipeline.
    let r = gw.req("GET", &format!("/v1/whoami?q={}", "a".repeat(10 * 1024))).send().await;
    assert_error(&r, 414, "URI_TOO_LONG");
    let r = gw.req("GET", "/v1/whoami").header("x-big", &"b".repeat(40 * 1024)).send().await;
    assert_error(&r, 431, "HEADERS_TOO_LARGE");

    // What hyper cannot parse it refuses (and closes): the gateway's envelope, not hyper's
    // bare answer, and an access line with the same request id.
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: [(Vec<u8>, u16, &str); 6] = [
        (format!("GET /healthz HTTP/1.1\r\nHost: gw\r\n{many}\r\n").into_bytes(), 431, "HEADERS_TOO_LARGE"),
        (b"G@T /healthz HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(), 400, "MALFORMED_REQUEST"),
        (b"GET /healthz HTTP/1.1 trailing\r\nHost: gw\r\n\r\n".to_vec(), 400, "MALFORMED_REQUEST"),
        (b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(), 400, "MALFORMED_REQUEST"),
        (b"GET /healthz HTTP/1.1\r\nHost: gw\r\nBad Header: x\r\n\r\n".to_vec(), 400, "MALFORMED_REQUEST"),
        (b"GET /healthz HTTP/1.1\r\nHost: gw\r\nNoColonHere\r\n\r\n".to_vec(), 400, "MALFORMED_REQUEST"),
    ];
    for (request, status, code) in &cases {
        let mut c = Raw::connect(&gw.addr).await;
        c.send(request).await.unwrap();
        let a = c.answer(Duration::from_secs(10)).await.expect("an answer");
        assert_refused(&gw, &a, *status, code).await;
        assert!(c.closed_within(Duration::from_secs(5)).await);
    }
    // The same after answered requests on a keep-alive connection.
    let mut c = Raw::connect(&gw.addr).await;
    for _ in 0..2 {
        c.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
        assert_eq!(c.answer(Duration::from_secs(10)).await.expect("healthz").status, 200);
    }
    c.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nNoColonHere\r\n\r\n").await.unwrap();
    assert_refused(&gw, &c.answer(Duration::from_secs(10)).await.expect("an answer"), 400, "MALFORMED_REQUEST").await;
    // A head beyond hyper's buffer (64 KiB): 414 or 431, depending on how much of it one read
    // brought in (or the pipeline's, when all of it did). hyper answers before reading the
    // rest, so the client may see a reset instead; the line is logged either way.
    for big in [
        format!("GET /{} HTTP/1.1\r\nHost: gw\r\n\r\n", "u".repeat(70 * 1024)),
        format!("GET / HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n", "h".repeat(70 * 1024)),
    ] {
        let mut c = Raw::connect(&gw.addr).await;
        let _ = c.send(big.as_bytes()).await;
        if let Some(a) = c.answer(Duration::from_secs(10)).await {
            let code = if a.status == 414 { "URI_TOO_LONG" } else { "HEADERS_TOO_LARGE" };
            // The parser's answer closes; the pipeline's keeps the connection.
            if a.headers.contains_key("connection") {
                assert_refused(&gw, &a, a.status, code).await;
            } else {
                assert_envelope(&a, a.status, code);
                logged(&gw, a.headers["x-request-id"].clone(), a.status, code, false).await;
            }
        }
    }
    // Two from the pipeline, one for the 101 headers, two from here.
    let too_large = || {
        let mut lines = access_lines(&gw, 414);
        lines.extend(access_lines(&gw, 431));
        lines
    };
    wait_until("five 414/431 lines", || too_large().len() == 5).await;
    for l in too_large() {
        let code = if l["status"] == 414 { "URI_TOO_LONG" } else { "HEADERS_TOO_LARGE" };
        assert_eq!(l["error_code"], code, "{l}");
        assert_eq!(l["route"], "-", "{l}");
    }
}

#[tokio::test]
async fn http11_without_host_is_400() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let mut c = Raw::connect(&gw.addr).await;
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
    assert_envelope(&c.answer(Duration::from_secs(10)).await.expect("answer"), 400, "MALFORMED_REQUEST");
    let mut c = Raw::connect(&gw.addr).await;
    c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await.unwrap();
    assert_envelope(&c.answer(Duration::from_secs(10)).await.expect("answer"), 400, "MALFORMED_REQUEST");
    // HTTP/1.0 needs no Host.
    let mut c = Raw::connect(&gw.addr).await;
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(c.answer(Duration::from_secs(10)).await.expect("answer").status, 200);
}

#[tokio::test]
async fn expect_continue_with_a_bad_token_is_refused_without_inviting_the_body() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let token = admin(&gw).await;

    // A bad token: the first answer is the 401, never `100 Continue`.
    let body = json!({"name": "never sent"}).to_string();
    let mut c = Raw::connect(&gw.addr).await;
    c.send(&upload_head("gw_not_a_token", body.len(), "Expect: 100-continue\r\n")).await.unwrap();
    let a = c.answer(Duration::from_secs(10)).await.expect("answer");
    assert_envelope(&a, 401, "UNAUTHENTICATED");
    assert!(c.closed_within(Duration::from_secs(5)).await, "the unread body's connection must close");

    // A good token is invited, and served.
    let mut c = Raw::connect(&gw.addr).await;
    c.send(&upload_head(&token, body.len(), "Expect: 100-continue\r\n")).await.unwrap();
    assert_eq!(c.answer(Duration::from_secs(10)).await.expect("100").status, 100);
    c.send(body.as_bytes()).await.unwrap();
    let a = c.answer(Duration::from_secs(10)).await.expect("answer");
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
}

#[tokio::test]
async fn sigterm_does_not_wait_for_half_sent_requests_but_finishes_in_flight_ones() {
    let db = TestDb::new().await;
    let mut gw = Gateway::start(&db).await;
    let token = admin(&gw).await;
    let pool = db.owner_pool().await;

    // A request provably in flight: it waits on a lock inside the database.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE businesses IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let in_flight = gw.req("POST", "/v1/businesses").token(&token).json(&json!({"name": "in flight"})).send();
    let orchestrate = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gateway' AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if n == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the request never reached the lock");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Half-sent requests: nothing yet, partial heads, and a body that stops.
        let mut silent = Raw::connect(&gw.addr).await;
        let mut heads = Vec::new();
        for _ in 0..3 {
            let mut c = Raw::connect(&gw.addr).await;
            c.send(b"POST /v1/businesses HTTP/1.1\r\nHost: gw\r\nAuthoriz").await.unwrap();
            heads.push(c);
        }
        let mut body = Raw::connect(&gw.addr).await;
        body.send(&upload_head(&token, 100, "Expect: 100-continue\r\n")).await.unwrap();
        // `100 Continue` says the pipeline is reading this body.
        assert_eq!(body.answer(Duration::from_secs(10)).await.expect("100").status, 100);
        body.send(b"{\"name\":").await.unwrap();

        let signalled = Instant::now();
        unsafe { libc::kill(gw.pid(), libc::SIGTERM) };
        // Closed while the in-flight request still waits on the lock.
        assert!(silent.closed_within(Duration::from_secs(5)).await, "an idle connection held the drain");
        for c in &mut heads {
            assert!(c.closed_within(Duration::from_secs(5)).await, "a partial head held the drain");
        }
        let a = body.answer(Duration::from_secs(5)).await.expect("the stalled body is answered");
        assert_envelope(&a, 503, "UNAVAILABLE");
        assert!(body.closed_within(Duration::from_secs(5)).await);
        lock.commit().await.unwrap();
        signalled
    };
    let (r, signalled) = tokio::join!(in_flight, orchestrate);
    assert_eq!(r.status, 201, "{}", r.text);
    let status = tokio::time::timeout(Duration::from_secs(20), gw.terminate()).await.expect("the gateway did not exit");
    assert!(status.success(), "{status}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM businesses").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 1);
}
