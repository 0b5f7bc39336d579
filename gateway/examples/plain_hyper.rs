//! The baseline for the end-to-end benchmark: a plain hyper HTTP/1.1 server on the same
//! runtime settings as the gateway, answering every request with a fixed JSON body of the size
//! `echo` returns. Usage: plain_hyper ADDR
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const BODY: &str = r#"{"body":{"hello":"world","n":[1,2,3]},"org_id":"00000000-0000-0000-0000-000000000000","request_id":"00000000000000000000000000000000","role":"member","user_id":"00000000-0000-0000-0000-000000000000"}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18182".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                // Read the body, as the gateway must.
                let _ = req.into_body().collect().await;
                let mut resp = http::Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
                resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
