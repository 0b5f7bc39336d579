//! Serving `gateway:plugin@0.1.0` components on the host written for the current version.
//!
//! 0.2 only added to 0.1 (`tenant-db.batch` and the two batch-only values), so every 0.1 value
//! has a 0.2 twin: a 0.1 call is converted up, served by the 0.2 implementation, and its answer
//! converted back down. The one direction that is not total, a 0.2 `value` down to 0.1, cannot
//! happen: the batch-only values are never returned.
//!
//! This module knows nothing of what the capabilities do; it only forwards.

use super::bindings::{v0_1, v0_2};
use super::state::{DbState, HttpState, StoreState};

/// A conversion between the twin types two `bindgen!`s generate for one WIT type.
pub trait Conv<T> {
    fn conv(self) -> T;
}

macro_rules! same {
    ($($t:ty),*) => { $(impl Conv<$t> for $t { fn conv(self) -> $t { self } })* };
}
same!(String, bool, u8, u16, u32, u64, i64, f64);

impl<A: Conv<B>, B> Conv<Vec<B>> for Vec<A> {
    fn conv(self) -> Vec<B> {
        self.into_iter().map(Conv::conv).collect()
    }
}
impl<A: Conv<B>, B> Conv<Option<B>> for Option<A> {
    fn conv(self) -> Option<B> {
        self.map(Conv::conv)
    }
}
impl<A: Conv<B>, B, C: Conv<D>, D> Conv<(B, D)> for (A, C) {
    fn conv(self) -> (B, D) {
        (self.0.conv(), self.1.conv())
    }
}
impl<A: Conv<B>, B, E: Conv<F>, F> Conv<Result<B, F>> for Result<A, E> {
    fn conv(self) -> Result<B, F> {
        self.map(Conv::conv).map_err(Conv::conv)
    }
}

/// Records: field by field, both ways.
macro_rules! record {
    ($($m:ident :: $t:ident { $($f:ident),* })*) => {$(
        impl Conv<v0_2::gateway::plugin::$m::$t> for v0_1::gateway::plugin::$m::$t {
            fn conv(self) -> v0_2::gateway::plugin::$m::$t {
                v0_2::gateway::plugin::$m::$t { $($f: self.$f.conv()),* }
            }
        }
        impl Conv<v0_1::gateway::plugin::$m::$t> for v0_2::gateway::plugin::$m::$t {
            fn conv(self) -> v0_1::gateway::plugin::$m::$t {
                v0_1::gateway::plugin::$m::$t { $($f: self.$f.conv()),* }
            }
        }
    )*};
}

/// Variants and enums that are the same in both versions: case by case, both ways.
macro_rules! variant {
    ($($m:ident :: $t:ident { $($unit:ident),* ; $($case:ident),* })*) => {$(
        impl Conv<v0_2::gateway::plugin::$m::$t> for v0_1::gateway::plugin::$m::$t {
            fn conv(self) -> v0_2::gateway::plugin::$m::$t {
                use v0_1::gateway::plugin::$m::$t as A;
                use v0_2::gateway::plugin::$m::$t as B;
                match self { $(A::$unit => B::$unit,)* $(A::$case(x) => B::$case(x.conv()),)* }
            }
        }
        impl Conv<v0_1::gateway::plugin::$m::$t> for v0_2::gateway::plugin::$m::$t {
            fn conv(self) -> v0_1::gateway::plugin::$m::$t {
                use v0_2::gateway::plugin::$m::$t as A;
                use v0_1::gateway::plugin::$m::$t as B;
                match self { $(A::$unit => B::$unit,)* $(A::$case(x) => B::$case(x.conv()),)* }
            }
        }
    )*};
}

record! {
    types::Header { name, value }
    types::Request { method, path, params, query, headers, body }
    types::Response { status, headers, body }
    types::Problem { code, message, details }
    context::CallContext { org_id, user_id, role, request_id, route_id, plugin_name, plugin_version }
    tenant_db::ColumnRef { column, path }
    tenant_db::Filter { target, op, value }
    tenant_db::Order { target, descending }
    tenant_db::SelectQuery { table, columns, filters, order_by, limit, for_update }
    tenant_db::OnConflict { target, action }
    tenant_db::InsertQuery { table, columns, rows, on_conflict, returning }
    tenant_db::Assignment { column, value }
    tenant_db::UpdateQuery { table, set, filters, returning }
    tenant_db::DeleteQuery { table, filters, returning }
    tenant_db::Rows { columns, rows, affected }
    outbound_http::OutgoingRequest { method, url, headers, body }
    outbound_http::IncomingResponse { status, headers, body }
}

variant! {
    types::HandlerError { ; Invalid, Forbidden, NotFound, Conflict, Unprocessable, Unavailable, Failed }
    context::Role { Member, Admin, SuperAdmin ; }
    tenant_db::Comparison { Eq, Ne, Lt, Le, Gt, Ge, IsNull, IsNotNull ; }
    tenant_db::ConflictAction { DoNothing ; DoUpdate }
    tenant_db::DbError { TenantColumnReserved, Timeout, Unavailable, Aborted ;
        NotGranted, UnknownTable, UnknownColumn, Invalid, UniqueViolation, ConstraintViolation, TooManyRows }
    outbound_http::HttpError { Timeout ;
        NotAllowed, ForbiddenAddress, InvalidRequest, DnsFailed, ConnectFailed, ResponseTooLarge, Protocol }
}

impl Conv<v0_2::gateway::plugin::tenant_db::Value> for v0_1::gateway::plugin::tenant_db::Value {
    fn conv(self) -> v0_2::gateway::plugin::tenant_db::Value {
        use v0_1::gateway::plugin::tenant_db::Value as A;
        use v0_2::gateway::plugin::tenant_db::Value as B;
        match self {
            A::Null => B::Null,
            A::Boolean(x) => B::Boolean(x),
            A::Integer(x) => B::Integer(x),
            A::Float(x) => B::Float(x),
            A::Text(x) => B::Text(x),
            A::Json(x) => B::Json(x),
            A::Uuid(x) => B::Uuid(x),
            A::Timestamp(x) => B::Timestamp(x),
        }
    }
}

impl Conv<v0_1::gateway::plugin::tenant_db::Value> for v0_2::gateway::plugin::tenant_db::Value {
    fn conv(self) -> v0_1::gateway::plugin::tenant_db::Value {
        use v0_1::gateway::plugin::tenant_db::Value as B;
        use v0_2::gateway::plugin::tenant_db::Value as A;
        match self {
            A::Null => B::Null,
            A::Boolean(x) => B::Boolean(x),
            A::Integer(x) => B::Integer(x),
            A::Float(x) => B::Float(x),
            A::Text(x) => B::Text(x),
            A::Json(x) => B::Json(x),
            A::Uuid(x) => B::Uuid(x),
            A::Timestamp(x) => B::Timestamp(x),
            // Only ever sent by a guest inside a batch, never returned by the host.
            A::Earlier(_) | A::JsonFilled(_) => B::Null,
        }
    }
}

/// The 0.1 imports, each forwarded to its 0.2 implementation on the same view of the store.
mod forward {
    use super::*;
    use v0_1::gateway::plugin as old;
    use v0_2::gateway::plugin as new;

    impl old::types::Host for StoreState {}

    impl old::context::Host for &v0_2::gateway::plugin::context::CallContext {
        fn get(&mut self) -> old::context::CallContext {
            new::context::Host::get(self).conv()
        }
    }

    impl old::tenant_db::Host for DbState {
        async fn select(&mut self, q: old::tenant_db::SelectQuery) -> Result<old::tenant_db::Rows, old::tenant_db::DbError> {
            new::tenant_db::Host::select(self, q.conv()).await.conv()
        }
        async fn insert(&mut self, q: old::tenant_db::InsertQuery) -> Result<old::tenant_db::Rows, old::tenant_db::DbError> {
            new::tenant_db::Host::insert(self, q.conv()).await.conv()
        }
        async fn update(&mut self, q: old::tenant_db::UpdateQuery) -> Result<old::tenant_db::Rows, old::tenant_db::DbError> {
            new::tenant_db::Host::update(self, q.conv()).await.conv()
        }
        async fn delete(&mut self, q: old::tenant_db::DeleteQuery) -> Result<old::tenant_db::Rows, old::tenant_db::DbError> {
            new::tenant_db::Host::delete(self, q.conv()).await.conv()
        }
        async fn lock(&mut self, key: String) -> Result<(), old::tenant_db::DbError> {
            new::tenant_db::Host::lock(self, key).await.map_err(Conv::conv)
        }
        async fn try_lock(&mut self, key: String) -> Result<bool, old::tenant_db::DbError> {
            new::tenant_db::Host::try_lock(self, key).await.map_err(Conv::conv)
        }
    }

    impl old::outbound_http::Host for HttpState {
        async fn send(
            &mut self,
            req: old::outbound_http::OutgoingRequest,
        ) -> Result<old::outbound_http::IncomingResponse, old::outbound_http::HttpError> {
            new::outbound_http::Host::send(self, req.conv()).await.conv()
        }
    }
}

/// Links the 0.1 interfaces (but `log`, linked by hand for both versions in `host::log`).
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<StoreState>) -> wasmtime::Result<()> {
    use v0_1::gateway::plugin as old;
    old::context::add_to_linker::<StoreState, super::host::context::Data>(linker, |s| &s.context)?;
    old::tenant_db::add_to_linker::<StoreState, super::host::tenant_db::Data>(linker, |s| &mut s.db)?;
    old::outbound_http::add_to_linker::<StoreState, super::host::outbound_http::Data>(linker, |s| &mut s.http)?;
    old::types::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(linker, |s| s)?;
    Ok(())
}
