//! One module per imported WIT interface, each implemented on its own view of the store.
//! Every capability checks the route's grants before any side effect.

pub mod addr;
pub mod context;
pub mod host_pattern;
pub mod log;
pub mod outbound_http;
pub mod tenant_db;

use wasmtime::component::Linker;

use crate::plugin::bindings;
use crate::plugin::state::StoreState;

/// Links our interfaces and WASI p2 (which itself is sandboxed by the `WasiCtx` we build).
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::context::add_to_linker::<StoreState, context::Data>(linker, |s| &s.context)?;
    bindings::tenant_db::add_to_linker::<StoreState, tenant_db::Data>(linker, |s| &mut s.db)?;
    bindings::outbound_http::add_to_linker::<StoreState, outbound_http::Data>(linker, |s| &mut s.http)?;
    // Linked by hand: its strings are read from guest memory only up to the host's caps.
    log::add_to_linker(linker)?;
    // `types` has no functions; it is linked so that components may import it.
    bindings::types::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(linker, |s| s)?;
    Ok(())
}

impl bindings::types::Host for StoreState {}
