//! Fake Smartlead and HeyReach APIs, and a fake OpenAI-compatible chat-completions API
//! ([`FakeChat`], the optimizer's model): real HTTP on `127.0.0.1`, faithful to the request and
//! answer shapes published for each provider (see docs/providers.md, "Try it against the
//! fakes", and the reference notes), with their state open for tests to inspect.
//!
//! Each fake checks its API key on every call (401 otherwise), records every call (method,
//! path, query, headers, body), can be told to answer the next calls with a 429 (and
//! `Retry-After`) or a 5xx, and can deliver webhooks the way its provider does. A control API
//! under `/_fake/` (no key, not recorded) does the same over HTTP, for `cargo xtask
//! fake-providers`.

pub mod chat;
mod core;
pub mod heyreach;
pub mod smartlead;

pub use crate::core::{Delivered, Fault, Recorded};
pub use chat::FakeChat;
pub use heyreach::FakeHeyreach;
pub use smartlead::FakeSmartlead;

/// The crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("delivering a webhook to {url}: {reason}")]
    Deliver { url: String, reason: String },
}
