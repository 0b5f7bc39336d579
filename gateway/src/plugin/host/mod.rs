//! One module per imported WIT interface, each implemented on its own view of the store.
//! Every capability checks the route's grants before any side effect.

pub mod addr;
pub mod context;
pub mod credentials;
pub mod host_pattern;
pub mod log;
pub mod outbound_http;
pub mod tenant_db;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::{cli, clocks, io, random};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

use crate::plugin::bindings;
use crate::plugin::state::StoreState;

/// The WASI interfaces a plugin may import (any `0.2.x` version): what a `wasm32-wasip2`
/// program's standard library needs (streams, stdio, environment, exit, clocks, random).
/// Nothing else of WASI is linked: no `wasi:filesystem`, `wasi:sockets` or `wasi:http`, so a
/// plugin's only ways out are the `gateway:plugin` imports, which check its grants.
pub const WASI_ALLOWED: &[&str] = &[
    "wasi:io/poll",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Whether a component may import `name` (`namespace:package/interface@version`): one of
/// [`WASI_ALLOWED`] at a `0.2` version, or an interface of our own package.
pub fn may_import(name: &str) -> bool {
    let (interface, version) = name.split_once('@').unwrap_or((name, ""));
    interface.starts_with("gateway:plugin/") || (WASI_ALLOWED.contains(&interface) && version.starts_with("0.2."))
}

/// `wasi:io` is implemented on the resource table alone.
struct WasiIo;

impl HasData for WasiIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links our interfaces and the WASI interfaces of [`WASI_ALLOWED`] (sandboxed further by the
/// `WasiCtx` each invocation builds: no environment, no arguments, captured stdio).
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let l = &mut *linker;
    io::error::add_to_linker::<StoreState, WasiIo>(l, |s| &mut s.table)?;
    io::poll::add_to_linker::<StoreState, WasiIo>(l, |s| &mut s.table)?;
    io::streams::add_to_linker::<StoreState, WasiIo>(l, |s| &mut s.table)?;
    cli::environment::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::exit::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::stdin::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::stdout::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::stderr::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::terminal_input::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::terminal_output::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::terminal_stdin::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::terminal_stdout::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    cli::terminal_stderr::add_to_linker::<StoreState, WasiCli>(l, StoreState::cli)?;
    clocks::monotonic_clock::add_to_linker::<StoreState, WasiClocks>(l, StoreState::clocks)?;
    clocks::wall_clock::add_to_linker::<StoreState, WasiClocks>(l, StoreState::clocks)?;
    random::random::add_to_linker::<StoreState, WasiRandom>(l, StoreState::random)?;
    random::insecure::add_to_linker::<StoreState, WasiRandom>(l, StoreState::random)?;
    random::insecure_seed::add_to_linker::<StoreState, WasiRandom>(l, StoreState::random)?;
    bindings::context::add_to_linker::<StoreState, context::Data>(linker, |s| &s.context)?;
    bindings::tenant_db::add_to_linker::<StoreState, tenant_db::Data>(linker, |s| &mut s.db)?;
    bindings::outbound_http::add_to_linker::<StoreState, outbound_http::Data>(linker, |s| &mut s.http)?;
    // Linked by hand: its strings are read from guest memory only up to the host's caps.
    log::add_to_linker(linker)?;
    // `types` has no functions; it is linked so that components may import it.
    bindings::types::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(linker, |s| s)?;
    // The same capabilities under their 0.1 names, for components built against 0.1.
    crate::plugin::compat::add_to_linker(linker)?;
    Ok(())
}

impl bindings::types::Host for StoreState {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a component importing instance `name` with exports `body` links. An instance
    /// the linker lacks still satisfies an import that requires nothing of it, so each probe
    /// asks for one item of the interface (a resource, or a function of plain types).
    fn links(name: &str, body: &str) -> bool {
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<StoreState>::new(&engine);
        add_to_linker(&mut linker).unwrap();
        let c = wasmtime::component::Component::new(&engine, format!(r#"(component (import "{name}" (instance {body})))"#)).unwrap();
        linker.instantiate_pre(&c).is_ok()
    }

    fn resource(name: &str) -> String {
        format!(r#"(export "{name}" (type (sub resource)))"#)
    }

    fn func(name: &str, ty: &str) -> String {
        format!(r#"(type $f (func {ty})) (export "{name}" (func (type $f)))"#)
    }

    #[test]
    fn the_linker_offers_the_allowed_wasi_interfaces_and_no_other() {
        let datetime = r#"(type $dt (record (field "seconds" u64) (field "nanoseconds" u32))) (export "datetime" (type $d (eq $dt)))
            (type $f (func (result $d))) (export "now" (func (type $f)))"#;
        // The stdio and terminal getters return resources of other interfaces, which an import
        // in text cannot name simply; the shipped plugins, which import them all, link in the
        // integration suite.
        let allowed = [
            ("wasi:io/poll", resource("pollable")),
            ("wasi:io/error", resource("error")),
            ("wasi:io/streams", resource("output-stream")),
            ("wasi:cli/environment", func("get-arguments", "(result (list string))")),
            ("wasi:cli/exit", func("exit", r#"(param "status" (result))"#)),
            ("wasi:cli/terminal-input", resource("terminal-input")),
            ("wasi:cli/terminal-output", resource("terminal-output")),
            ("wasi:clocks/monotonic-clock", func("now", "(result u64)")),
            ("wasi:clocks/wall-clock", datetime.to_string()),
            ("wasi:random/random", func("get-random-u64", "(result u64)")),
            ("wasi:random/insecure", func("get-insecure-random-u64", "(result u64)")),
            ("wasi:random/insecure-seed", func("insecure-seed", "(result (tuple u64 u64))")),
        ];
        for (name, body) in &allowed {
            assert!(WASI_ALLOWED.contains(name));
            assert!(links(&format!("{name}@0.2.6"), body), "{name} is allowed but not linked");
            assert!(may_import(&format!("{name}@0.2.0")) && may_import(&format!("{name}@0.2.6")));
        }
        for (name, body) in [
            ("wasi:filesystem/types", resource("descriptor")),
            ("wasi:sockets/tcp", resource("tcp-socket")),
            ("wasi:sockets/udp", resource("udp-socket")),
            ("wasi:sockets/network", resource("network")),
            ("wasi:sockets/ip-name-lookup", resource("resolve-address-stream")),
            ("wasi:http/types", resource("fields")),
        ] {
            assert!(!links(&format!("{name}@0.2.6"), &body), "{name} is linked");
            assert!(!may_import(&format!("{name}@0.2.6")), "{name} passes the import check");
        }
        for name in ["wasi:filesystem/preopens@0.2.6", "wasi:sockets/instance-network@0.2.6", "wasi:http/outgoing-handler@0.2.6"] {
            assert!(!may_import(name), "{name} passes the import check");
        }
        assert!(may_import("gateway:plugin/log@0.1.0"));
        assert!(!may_import("wasi:io/poll@0.3.0") && !may_import("wasi:io/poll") && !may_import("other:pkg/x@1.0.0"));
    }
}
