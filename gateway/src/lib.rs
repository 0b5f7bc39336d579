//! A multi-tenant gateway that runs sandboxed WebAssembly policy plugins.
//!
//! Every request passes native guards before anything else runs: the tenant guard (the org
//! comes from the credential, never the payload), per-org and per-user rate limits, and body
//! checks. Then the route's target answers: a native handler, or a plugin.
//!
//! # A request's path
//!
//! 1. [`server`] accepts the connection; [`phases::handle`] takes the request.
//! 2. `guard` decides caller and org ([`auth`], [`webhooks`]); `limit` spends quota ([`ratelimit`]).
//! 3. `payload` and `verify` check the body (size, JSON, tenant fields, signatures).
//! 4. `dispatch` runs a [`native`] handler or a [`plugin`] in a fresh sandbox, in one
//!    [`db::TenantTx`]; `respond` writes the answer; `log` writes one access line.
//! 5. Webhook events wait in the queue for [`jobs`], which run adapter plugins the same way.
//!
//! # Layout
//!
//! - [`startup`]: start-up, shutdown and `--watch` reloads.
//! - [`role`]: who acts (caller roles, the gateway itself).
//! - [`config`]: environment and config file.
//! - [`embedded`]: the PostgreSQL cluster the gateway runs itself when no `DATABASE_URL` is set.
//! - [`health`]: what `/healthz` and `/readyz` say, probed off the request path.
//! - [`db`]: the only module that builds SQL; tenant transactions and row-level security.
//! - [`policy`]: `policies/*.toml`: routes, roles, limits, plans.
//! - [`plugin`]: the WebAssembly runtime and its host interfaces; knows nothing of HTTP.
//! - [`registry`]: plugin versions: upload (with contract fixtures), activate, roll back, sync.
//! - [`ratelimit`]: governor buckets built from the policies.
//! - [`admission`]: per-org plugin concurrency and CPU budgets.
//! - [`auth`]: bearer tokens and the credential cache.
//! - [`cache`]: the short-lived bounded cache behind tokens, plans and webhook endpoints.
//! - [`phases`]: the request pipeline, guard → limit → payload → dispatch → respond → log.
//! - [`native`]: handlers the gateway answers itself.
//! - [`webhooks`]: webhook endpoints, sealed secrets, signature checks.
//! - [`providers`]: orgs' provider credentials: base-URL rules, sealing, the cache the plugin
//!   host injects them from.
//! - [`jobs`]: the job queue's workers (webhook processing through adapter plugins).
//! - [`history`]: the history tables' partitions ahead and retention, in the background.
//! - [`provider_sync`]: the campaigns API's provider calls, run as jobs through adapter plugins.
//! - [`optimizer`]: the optimizer's changes (approve, reject, rollback) and its `optimizer` jobs.
//! - [`ops`]: administrative operations shared by HTTP and the CLI.
//! - [`server`]: the hyper accept loop and graceful shutdown.
//! - [`error`]: the library error and the HTTP error contract.
//! - [`metrics`]: Prometheus metrics and their listener (`GATEWAY_METRICS_LISTEN`).
//! - [`logging`]: where log lines go (plugin lines lossy, the rest lossless) and what the
//!   text format escapes.

pub mod admission;
pub mod auth;
pub mod cache;
pub mod chain;
pub mod config;
pub mod console;
pub mod db;
pub mod embedded;
pub mod error;
pub mod health;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod native;
pub mod openapi;
pub mod optimizer;
pub mod ops;
pub mod parse_errors;
pub mod phases;
pub mod plugin;
pub mod policy;
pub mod provider_sync;
pub mod providers;
pub mod ratelimit;
pub mod registry;
pub mod role;
pub mod scheduler;
pub mod server;
pub mod startup;
pub mod state;
pub mod template;
pub mod jobs;
pub mod webhooks;

/// Fuzz targets of the parsers that face the network and the operator (`docs/fuzzing.md`).
#[cfg(test)]
mod fuzz;

pub use config::Config;
pub use error::{Error, Result};
pub use startup::{serve, Database};
