//! The host side of `wit/plugin.wit`, generated once here and nowhere else.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    imports: {
        "gateway:plugin/tenant-db": async,
        "gateway:plugin/outbound-http": async,
    },
    exports: { default: async },
});

pub use self::exports::gateway::plugin::http_handler;
pub use self::gateway::plugin::{context, log, outbound_http, tenant_db, types};
