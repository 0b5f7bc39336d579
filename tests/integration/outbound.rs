//! Containment of outbound HTTP: a hostile plugin (`plugins/hostile`, mode `outbound`) with
//! generous `grants.hosts` still reaches nothing but global unicast, unless an IP-literal
//! pattern opts in with `allow_private` (and, for loopback, the operator's switch is on).
//! Every refusal is checked at both ends: the plugin hears `forbidden-address`, and the
//! server listening at that address sees no connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use gateway::plugin::host::addr::{classify, local_addresses, Class};

use crate::harness::{policies_with, Gateway, GatewayOptions, TestDb};

/// A listener that counts the connections it accepts and answers each request 200 `reached`.
struct Listener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

async fn listen(ip: IpAddr) -> Listener {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("reached"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Listener { addr, accepted }
}

impl Listener {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Proves the listener accepts and counts (so a count of 0 means nobody came): connects
    /// from the test itself and waits for the count to move.
    async fn assert_live(&self) {
        let before = self.accepted();
        let _c = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.accepted() == before {
            assert!(Instant::now() < deadline, "listener at {} did not count a connection", self.addr);
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One route per grants entry list, all on the hostile plugin: `(path suffix, hosts TOML)`.
fn policy(routes: &[(&str, String)]) -> String {
    let mut p = String::from("[plugins.hostile]\nfile = \"hostile.wasm\"\nversion = \"hostile-1\"\n");
    for (name, hosts) in routes {
        p.push_str(&format!(
            r#"
[[route]]
id = "egress.{name}"
method = "POST"
path = "/v1/egress/{name}"
target = "plugin:hostile"
roles = ["admin"]
[route.sandbox]
cpu_ms = 1000
timeout_ms = 10000
[route.grants]
hosts = {hosts}
http_timeout_ms = 3000
"#
        ));
    }
    p
}

struct Egress {
    gw: Gateway,
    token: String,
}

impl Egress {
    async fn start(routes: &[(&str, String)], extra_env: &[(&str, &str)]) -> Egress {
        let db = TestDb::new().await;
        let mut opts = GatewayOptions::new(&db);
        opts.policies = policies_with("egress.toml", &policy(routes));
        for (k, v) in extra_env {
            opts.extra_env.push((k.to_string(), v.to_string()));
        }
        let gw = Gateway::start_with(opts).await;
        let org = gw.create_org("Egress", Some("unmetered")).await;
        let (token, _, _) = gw.create_token(&org, "admin", "admin@egress.test").await;
        Egress { gw, token }
    }

    /// The hostile plugin's answer to one `outbound-http.send` of `GET url` through `route`.
    async fn send(&self, route: &str, url: &str) -> Value {
        let r = self
            .gw
            .req("POST", &format!("/v1/egress/{route}"))
            .token(&self.token)
            .json(&json!({"mode": "outbound", "url": url}))
            .send()
            .await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        r.json
    }

    /// Asserts the plugin was refused with `forbidden-address`; returns the detail.
    #[track_caller]
    fn refused(answer: &Value, url: &str) -> String {
        assert_eq!(answer["error"], "forbidden-address", "{url}: {answer}");
        answer["detail"].as_str().unwrap().to_string()
    }

    /// The gateway's `outbound_refused` log lines (after it stopped).
    async fn refusal_log(&mut self) -> Vec<Value> {
        self.gw.terminate().await;
        self.gw
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "outbound_refused")
            .collect()
    }
}

/// The host's own addresses other than loopback and link-local (which need a scope to bind).
fn own_addresses() -> Vec<IpAddr> {
    let all = local_addresses().unwrap();
    let own: Vec<IpAddr> = all
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !matches!(classify(*ip).name(), "link-local"))
        .collect();
    assert!(!own.is_empty(), "this host has no non-loopback interface address to test with");
    own
}

fn is_private_network(ip: IpAddr) -> bool {
    matches!(classify(ip), Class::Special(r) if r.is_private_network())
}

#[tokio::test]
async fn outbound_refuses_this_hosts_own_interface_addresses() {
    let own = own_addresses();
    let mut listeners = Vec::new();
    for ip in &own {
        listeners.push(listen(*ip).await);
    }
    // Private ones also get the strongest grant there is: an IP-literal pattern with the
    // opt-in. The host's own addresses stay refused regardless.
    let literal = |l: &Listener| match l.addr {
        SocketAddr::V4(a) => format!("http://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
    };
    let private: Vec<String> = listeners
        .iter()
        .filter(|l| is_private_network(l.addr.ip()))
        .map(|l| format!("{{ url = \"{}\", allow_private = true }}", literal(l)))
        .collect();
    let mut e = Egress::start(
        &[("any", r#"["http://*:*"]"#.to_string()), ("private", format!("[{}]", private.join(", ")))],
        &[],
    )
    .await;
    let mut tried = 0;
    for l in &listeners {
        let url = format!("{}/own?token=s3cr3t-query", literal(l));
        let detail = Egress::refused(&e.send("any", &url).await, &url);
        assert!(detail.contains("address of this host"), "{url}: {detail}");
        tried += 1;
        if is_private_network(l.addr.ip()) {
            let detail = Egress::refused(&e.send("private", &url).await, &url);
            assert!(detail.contains("address of this host"), "{url}: {detail}");
            tried += 1;
        }
    }
    for l in &listeners {
        assert_eq!(l.accepted(), 0, "the gateway connected to its own address {}", l.addr);
        l.assert_live().await;
    }
    // Logged with the reason, never with the URL's path or query.
    let log = e.refusal_log().await;
    assert_eq!(log.len(), tried, "{log:?}");
    for line in &log {
        assert_eq!(line["reason"], "host-address", "{line}");
        assert!(line["org_id"].is_string() && line["plugin"] == "hostile", "{line}");
        let text = line.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("/own"), "{text}");
    }
}

#[tokio::test]
async fn outbound_wildcards_and_names_cannot_reach_loopback_even_with_the_switch() {
    let up = listen("127.0.0.1".parse().unwrap()).await;
    let port = up.addr.port();
    // The harness turns GATEWAY_OUTBOUND_ALLOW_LOOPBACK on; without allow_private it lends
    // nothing, and allow_private exists only on IP literals.
    let mut e = Egress::start(
        &[("any", r#"["http://*:*"]"#.to_string()), ("name", r#"["http://localhost:*"]"#.to_string())],
        &[],
    )
    .await;
    let through_any = [
        (format!("http://127.0.0.1:{port}/"), "loopback"),
        (format!("http://[::1]:{port}/"), "loopback"),
        (format!("http://localhost:{port}/"), "loopback"),
        // IPv6 forms carrying 127.0.0.1 are decoded: the carried address is this host's (the
        // switch exempts loopback itself, not its disguises).
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "address of this host"),
        (format!("http://[::ffff:7f00:1]:{port}/"), "address of this host"),
        (format!("http://[64:ff9b::7f00:1]:{port}/"), "address of this host"),
        (format!("http://[64:ff9b::127.0.0.1]:{port}/"), "address of this host"),
        (format!("http://[::127.0.0.1]:{port}/"), "address of this host"),
        // And refused whatever they carry.
        (format!("http://[::ffff:8.8.8.8]:{port}/"), "ipv4-mapped"),
        (format!("http://[64:ff9b::8.8.8.8]:{port}/"), "nat64"),
        // Spellings the resolver turns into 127.0.0.1: checked after resolution.
        (format!("http://127.1:{port}/"), "loopback"),
        (format!("http://2130706433:{port}/"), "loopback"),
        (format!("http://0.0.0.0:{port}/"), "unspecified"),
    ];
    for (url, reason) in &through_any {
        let detail = Egress::refused(&e.send("any", url).await, url);
        assert!(detail.contains(reason), "{url}: {detail}");
    }
    // An exact DNS name is no exemption: `localhost` resolves to loopback.
    let url = format!("http://localhost:{port}/");
    let detail = Egress::refused(&e.send("name", &url).await, &url);
    // The plugin hears the reason, not the addresses the name resolved to.
    assert_eq!(detail, "localhost resolves to a refused address (loopback)");
    assert_eq!(up.accepted(), 0, "a refused request reached the loopback server");
    up.assert_live().await;
    let log = e.refusal_log().await;
    assert_eq!(log.len(), through_any.len() + 1, "{log:?}");
    let names: Vec<_> = log.iter().filter(|l| l["host"] == "localhost").collect();
    assert_eq!(names.len(), 2);
    for l in names {
        assert_eq!(l["reason"], "loopback", "{l}");
        assert!(l["address"].as_str().unwrap().parse::<IpAddr>().unwrap().is_loopback(), "{l}");
    }
}

#[tokio::test]
async fn outbound_allow_private_literal_reaches_loopback_only_with_the_operator_switch() {
    let up = listen("127.0.0.1".parse().unwrap()).await;
    let port = up.addr.port();
    // The wildcard first: the most specific pattern wins, whatever the order.
    let hosts = format!(r#"["http://*:*", {{ url = "http://127.0.0.1:{port}", allow_private = true }}]"#);
    let routes = [("literal", hosts)];
    let ok = format!("http://127.0.0.1:{port}/ok");

    let e = Egress::start(&routes, &[]).await;
    let a = e.send("literal", &ok).await;
    assert_eq!(a["response"]["status"], 200, "{a}");
    assert_eq!(a["response"]["body"], "reached");
    assert_eq!(up.accepted(), 1);
    // The opt-in belongs to that pattern only: another port, or a mapped spelling of the same
    // address, falls to the wildcard and is refused.
    let other = listen("127.0.0.1".parse().unwrap()).await;
    for url in [format!("http://127.0.0.1:{}/", other.addr.port()), format!("http://[::ffff:127.0.0.1]:{port}/")] {
        Egress::refused(&e.send("literal", &url).await, &url);
    }
    assert_eq!(other.accepted(), 0);
    assert_eq!(up.accepted(), 1);
    drop(e);

    // The same policy without the operator's switch: loopback is refused even so.
    let e = Egress::start(&routes, &[("GATEWAY_OUTBOUND_ALLOW_LOOPBACK", "0")]).await;
    let detail = Egress::refused(&e.send("literal", &ok).await, &ok);
    assert_eq!(detail, "127.0.0.1 is an address of this host");
    assert_eq!(up.accepted(), 1, "reached loopback without the switch");
}

#[tokio::test]
async fn allow_private_on_a_name_or_wildcard_stops_start_up() {
    let db = TestDb::new().await;
    for (hosts, why) in [
        (r#"[{ url = "http://localhost:8080", allow_private = true }]"#, "only for an IP-literal pattern"),
        (r#"[{ url = "http://*:*", allow_private = true }]"#, "never a wildcard"),
        (r#"[{ url = "http://169.254.169.254", allow_private = true }]"#, "link-local"),
        (r#"["http://10.0.0.5:8080", { url = "http://10.0.0.5:8080", allow_private = true }]"#, "same destinations"),
    ] {
        let mut opts = GatewayOptions::new(&db);
        opts.policies = policies_with("egress.toml", &policy(&[("bad", hosts.to_string())]));
        let out = crate::harness::gateway_command(&opts).arg("serve").output().unwrap();
        assert!(!out.status.success(), "{hosts}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("egress.toml:") && err.contains("egress.bad") && err.contains(why), "{hosts}: {err}");
    }
}
