//! The host side of the WIT contract, generated here and nowhere else: one `bindgen!` per
//! served version of `gateway:plugin`.
//!
//! The current version ([`v0_2`], `wit/plugin.wit`) is the one the host is written against:
//! its types are re-exported at this module's root and every capability is implemented for
//! them. [`v0_1`] (`wit/0.1.0/`) is served unchanged beside it; `plugin::compat` converts its
//! values to and from the current ones, so a 0.1 component runs on the same host code.

pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/plugin.wit",
        world: "handler",
        imports: {
            "gateway:plugin/tenant-db": async,
            "gateway:plugin/outbound-http": async,
        },
        exports: { default: async },
    });
}

pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0/plugin.wit",
        world: "handler",
        imports: {
            "gateway:plugin/tenant-db": async,
            "gateway:plugin/outbound-http": async,
        },
        exports: { default: async },
    });
}

pub use self::v0_2::exports::gateway::plugin::http_handler;
pub use self::v0_2::gateway::plugin::{context, log, outbound_http, tenant_db, types};
pub use self::v0_2::HandlerPre;
