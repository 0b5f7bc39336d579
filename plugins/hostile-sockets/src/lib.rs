//! `hostile-sockets`: a plugin that reaches past its WIT contract with plain WASI: raw TCP
//! and UDP sockets, name lookup, and the filesystem. Its component imports `wasi:sockets/*`
//! and `wasi:filesystem/*`, which a gateway plugin has no business with (outbound traffic
//! goes through `outbound-http`, which enforces the route's allowlist; there are no files).
//! The gateway should refuse it at upload, before it ever runs; should it run anyway, it
//! reports what it reached.
//!
//! The body picks what to try, `{"mode": "all"}` by default: `tcp` (connect to `tcp_addr`,
//! default the embedded database's usual `127.0.0.1:5432`), `udp` (bind, send to
//! `udp_addr`, default `127.0.0.1:53`), `dns` (resolve `host`, default `localhost:80`),
//! `fs` (list `/`, read `/etc/passwd`, create `/tmp/hostile`), or `all`. Each try answers
//! `{"ok": …}` or `{"err": "<io error>"}`. Every call is reachable from the handler (chosen
//! at run time), so the linker cannot drop the imports.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use gateway_plugin_sdk::serde_json::{json, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError, Request, Response};

struct Sockets;

fn outcome<T: Into<J>>(r: std::io::Result<T>) -> J {
    match r {
        Ok(v) => json!({ "ok": v.into() }),
        Err(e) => json!({ "err": e.to_string() }),
    }
}

fn param(body: &J, key: &str, default: &str) -> String {
    body.get(key).and_then(J::as_str).unwrap_or(default).to_string()
}

/// Connects, writes a line and reads what comes back: the peer's first bytes.
fn tcp(addr: &str) -> std::io::Result<String> {
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn udp(addr: &str) -> std::io::Result<u64> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    Ok(s.send_to(b"hostile", addr)? as u64)
}

fn dns(host: &str) -> std::io::Result<Vec<String>> {
    Ok(host.to_socket_addrs()?.map(|a| a.to_string()).collect())
}

fn fs() -> J {
    let list = std::fs::read_dir("/")
        .and_then(|d| d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<Result<Vec<_>, _>>());
    json!({
        "read_dir": outcome(list),
        "read": outcome(std::fs::read_to_string("/etc/passwd")),
        "create": outcome(std::fs::File::create("/tmp/hostile").and_then(|mut f| f.write_all(b"hostile")).map(|()| true)),
    })
}

impl sdk::Guest for Sockets {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        let body = req.json_value()?;
        let mode = param(&body, "mode", "all");
        let all = mode == "all";
        let mut out = json!({ "mode": mode });
        if all || mode == "tcp" {
            out["tcp"] = outcome(tcp(&param(&body, "tcp_addr", "127.0.0.1:5432")));
        }
        if all || mode == "udp" {
            out["udp"] = outcome(udp(&param(&body, "udp_addr", "127.0.0.1:53")));
        }
        if all || mode == "dns" {
            out["dns"] = outcome(dns(&param(&body, "host", "localhost:80")));
        }
        if all || mode == "fs" {
            out["fs"] = fs();
        }
        sdk::json(200, &out)
    }
}

sdk::export_plugin!(Sockets);
