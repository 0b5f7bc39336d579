//! Test harness: one throwaway PostgreSQL cluster per test binary, one database per test, and
//! the real `gateway` binary on a real socket.
//!
//! The cluster is `gateway::embedded` itself (so the embedded mode is exercised too), with
//! fsync off since it is thrown away. It dies with the test process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

pub const SUPER_TOKEN_PREFIX: &str = "gw_test_super_admin_";

struct Shared {
    pgdata: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempdir("gwc");
        // Started from a thread of its own with its own runtime: the cluster must outlive any
        // one test's runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let cluster = rt
                .block_on(gateway::embedded::Cluster::start(
                    &dir,
                    gateway::embedded::ClusterOptions { unsafe_no_fsync: true },
                ))
                .expect("starting the test cluster");
            let pgdata = cluster.pgdata().to_path_buf();
            // Kept running until the test process exits (the server dies with it).
            std::mem::forget(cluster);
            Shared { pgdata }
        })
        .join()
        .unwrap()
    })
}

/// The test cluster's unix socket (`<dir>/.s.PGSQL.5432`).
pub fn pg_socket() -> PathBuf {
    shared().pgdata.join(".s.PGSQL.5432")
}

/// This test process's directory under /tmp, `gwrun-<pid>`; every test directory lives in it.
///
/// Test processes end without running destructors (and their clusters are up to ~1 GB), so
/// instead of cleaning up after itself each run removes what earlier runs left: every
/// `gwrun-<pid>` whose process is gone.
fn run_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Ok(entries) = std::fs::read_dir("/tmp") {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("gwrun-")) else { continue };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let root = PathBuf::from(format!("/tmp/gwrun-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        root
    })
}

/// A fresh directory under this run's root in /tmp (short paths: unix sockets live inside).
pub fn tempdir(prefix: &str) -> PathBuf {
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in(run_root()).unwrap().keep();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d
}

fn admin_options(db: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(shared().pgdata.to_str().unwrap())
        .port(5432)
        .username("postgres")
        .database(db)
        .disable_statement_logging()
}

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut c = admin_options("postgres").connect().await.expect("connect to test cluster");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
        TestDb { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@localhost:5432/{}?host={}", self.name, shared().pgdata.display())
    }

    /// A pool as the owner (superuser) role: for setting up and inspecting, never for tenant
    /// work.
    pub async fn owner_pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect_with(admin_options(&self.name)).await.unwrap()
    }
}

/// Where `cargo xtask plugins` puts the built components.
pub fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release")
}

/// The repository's `policies/` directory.
pub fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A copy of the repository's policies plus one more file.
pub fn policies_with(file: &str, text: &str) -> PathBuf {
    let dir = tempdir("gwp");
    for e in std::fs::read_dir(repo_policies()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.join(file), text).unwrap();
    dir
}

pub struct GatewayOptions {
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub policies: PathBuf,
    pub bootstrap_token: Option<String>,
    pub extra_env: Vec<(String, String)>,
    /// Extra arguments after `serve`.
    pub extra_args: Vec<String>,
}

impl GatewayOptions {
    pub fn new(db: &TestDb) -> GatewayOptions {
        GatewayOptions {
            database_url: Some(db.url()),
            data_dir: tempdir("gwd"),
            policies: repo_policies(),
            bootstrap_token: Some(format!("{SUPER_TOKEN_PREFIX}{}", uuid::Uuid::new_v4().simple())),
            extra_env: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

/// A running `gateway serve` child process.
pub struct Gateway {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    pub super_token: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// Its `GET /v1/openapi.json`, fetched on first use when `GATEWAY_TEST_OPENAPI=1`.
    openapi: tokio::sync::OnceCell<Option<Value>>,
}

/// `GATEWAY_TEST_OPENAPI=1`: every answer `Req::send` gets is also checked against the
/// gateway's own OpenAPI document (`tests/integration/openapi.rs`); a mismatch fails the test.
/// Off by default: it adds a request per gateway, which tests counting requests would see, and
/// tests that activate a fixture version of a shipped plugin (`registry::`) answer outside the
/// shipped plugin's schemas.
fn openapi_check_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("GATEWAY_TEST_OPENAPI").is_ok_and(|v| v == "1"))
}

pub fn gateway_command(opts: &GatewayOptions) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        // Tests run gateways side by side: a free port each, read from `metrics.addr`.
        .env("GATEWAY_METRICS_LISTEN", "127.0.0.1:0")
        .env("GATEWAY_DATA_DIR", &opts.data_dir)
        .env("GATEWAY_POLICIES", &opts.policies)
        .env("GATEWAY_PLUGIN_DIR", plugin_dir())
        .env("GATEWAY_LOG_FORMAT", "json")
        .env("GATEWAY_LOG", "info")
        // Test upstreams listen on loopback; a pattern still needs `allow_private` to reach
        // them. `extra_env` may turn it off again ("0").
        .env("GATEWAY_OUTBOUND_ALLOW_LOOPBACK", "1");
    if let Some(url) = &opts.database_url {
        cmd.env("DATABASE_URL", url);
    }
    if let Some(t) = &opts.bootstrap_token {
        cmd.env("GATEWAY_BOOTSTRAP_TOKEN", t);
    }
    for (k, v) in &opts.extra_env {
        cmd.env(k, v);
    }
    cmd
}

impl Gateway {
    pub async fn start(db: &TestDb) -> Gateway {
        Gateway::start_with(GatewayOptions::new(db)).await
    }

    pub async fn start_with(opts: GatewayOptions) -> Gateway {
        // A restart on the same data directory must not read the previous process's address.
        let _ = std::fs::remove_file(opts.data_dir.join("gateway.addr"));
        let _ = std::fs::remove_file(opts.data_dir.join("metrics.addr"));
        let out = std::fs::File::create(opts.data_dir.join("stdout.log")).unwrap();
        let err = std::fs::File::create(opts.data_dir.join("stderr.log")).unwrap();
        let child = gateway_command(&opts)
            .arg("serve")
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawning gateway");
        let mut gw = Gateway {
            child: Some(child),
            addr: String::new(),
            data_dir: opts.data_dir.clone(),
            super_token: opts.bootstrap_token.clone().unwrap_or_default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            openapi: tokio::sync::OnceCell::new(),
        };
        gw.addr = gw.wait_for_addr().await;
        if gw.super_token.is_empty() {
            gw.super_token = std::fs::read_to_string(gw.data_dir.join("bootstrap-token"))
                .unwrap()
                .trim()
                .to_string();
        }
        gw
    }

    /// Waits until the gateway has bound its socket and written its address.
    async fn wait_for_addr(&mut self) -> String {
        let file = self.data_dir.join("gateway.addr");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(a) = std::fs::read_to_string(&file) {
                return a.trim().to_string();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gateway exited during start-up ({status}): {}", self.stderr());
            }
            assert!(Instant::now() < deadline, "gateway did not start: {}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The metrics listener's address (`None` when the listener is off: `metrics.addr` is
    /// written before `gateway.addr`, or never).
    pub async fn metrics_addr(&self) -> Option<String> {
        let file = self.data_dir.join("metrics.addr");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(a) = std::fs::read_to_string(&file) {
                return Some(a.trim().to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics` on the metrics listener: the Prometheus text.
    pub async fn scrape(&self) -> String {
        let addr = self.metrics_addr().await.expect("the metrics listener is on");
        let r = self.get_on(&addr, "/metrics").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.text
    }

    /// A plain GET to another of the gateway's listeners (status and body).
    pub async fn get_on(&self, addr: &str, path: &str) -> Resp {
        let req = http::Request::builder().uri(format!("http://{addr}{path}")).body(Full::new(Bytes::new())).unwrap();
        Resp { json: Value::Null, ..send_with(&self.client, req).await }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }

    /// SIGKILL: no draining, no clean-up (a crash).
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    }

    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            gw: self,
            method: method.parse().unwrap(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// The gateway's OpenAPI document (`None` if it does not serve one).
    async fn openapi_document(&self) -> Option<&Value> {
        self.openapi
            .get_or_init(|| async {
                let req = http::Request::get(format!("http://{}/v1/openapi.json", self.addr)).body(Full::new(Bytes::new())).unwrap();
                let r = send_with(&self.client, req).await;
                (r.status == 200).then_some(r.json)
            })
            .await
            .as_ref()
    }

    /// Creates an org (as super-admin) and returns its id.
    pub async fn create_org(&self, name: &str, plan: Option<&str>) -> String {
        let mut body = serde_json::json!({ "name": name });
        if let Some(p) = plan {
            body["plan"] = p.into();
        }
        let r = self.req("POST", "/v1/admin/orgs").token(&self.super_token).json(&body).send().await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["org_id"].as_str().unwrap().to_string()
    }

    /// Issues a token for `email` with `role` in `org`: (token, user_id, token_id).
    pub async fn create_token(&self, org: &str, role: &str, email: &str) -> (String, String, String) {
        let r = self
            .req("POST", &format!("/v1/admin/orgs/{org}/tokens"))
            .token(&self.super_token)
            .json(&serde_json::json!({ "role": role, "email": email }))
            .send()
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let s = |k: &str| r.json[k].as_str().unwrap().to_string();
        (s("token"), s("user_id"), s("token_id"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Req<'a> {
    gw: &'a Gateway,
    method: http::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.json["error_code"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

impl Req<'_> {
    pub fn token(self, t: &str) -> Self {
        self.header("authorization", &format!("Bearer {t}"))
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn json(mut self, v: &Value) -> Self {
        self.body = Bytes::from(serde_json::to_vec(v).unwrap());
        self.header("content-type", "application/json")
    }
    pub fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = b.into();
        self
    }
    pub async fn send(self) -> Resp {
        let (gw, method, path) = (self.gw, self.method.clone(), self.path.clone());
        let mut b = http::Request::builder()
            .method(self.method)
            .uri(format!("http://{}{}", self.gw.addr, self.path));
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        let req = b.body(Full::new(self.body)).unwrap();
        let resp = send_with(&self.gw.client, req).await;
        if openapi_check_on() {
            if let Some(doc) = gw.openapi_document().await {
                let path = path.split('?').next().unwrap_or_default();
                if let Err(e) = crate::openapi::check_answer(doc, method.as_str(), path, &resp) {
                    panic!("GATEWAY_TEST_OPENAPI: {e}");
                }
            }
        }
        resp
    }
}

/// Sends one request (20 s at most) and reads the whole answer; `json` is `Null` unless the
/// body is JSON.
async fn send_with(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Resp {
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request hung")
        .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp { status, headers, text, json }
}

/// Asserts the error contract: status, code, JSON shape, request id echoed in body and header.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.text);
    assert_eq!(r.code(), code, "body: {}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.json["error"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.text);
    let rid = r.header("x-request-id").expect("x-request-id header");
    assert_eq!(r.json["request_id"].as_str(), Some(rid));
}

/// Polls `check` until it returns `Some` (or fails after 30 s, saying `what`, with the
/// gateway's log).
pub async fn wait_for<T, F, Fut>(what: &str, gw: &Gateway, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not happen\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A throwaway `redis-server` (Debian's package; `.ci/run` installs it) on a free loopback
/// port, with no persistence; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = RedisServer { child: None, port, dir: tempdir("gwr") };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again, on the same port) and waits until it accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install redis-server; .ci/run does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start: {}", std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the store is simply gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("redis-server is running");
        let _ = child.kill();
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
