//! `context`: read-only facts of the call.

use wasmtime::component::HasData;

use crate::plugin::bindings::context::{CallContext, Host};

pub struct Data;

impl HasData for Data {
    type Data<'a> = &'a CallContext;
}

impl Host for &CallContext {
    fn get(&mut self) -> CallContext {
        (*self).clone()
    }
}
