//! What a plugin may reach (its [`Grants`]) and what it may spend (its [`Sandbox`]): the
//! capability configuration each host interface checks. Policies build these from
//! `[route.grants]` and `[route.sandbox]`; the runtime knows nothing of routes.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::host::host_pattern::HostPattern;

/// Access a plugin has to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

/// What an invocation's plugin may reach, and how long it may take.
#[derive(Debug, Clone)]
pub struct Grants {
    /// Tenant tables by name; anything else is `not-granted`.
    pub tables: HashMap<String, Access>,
    /// Names in `tables` that are not physical tables: a plugin's own tables by their short
    /// name, another plugin's as `owner.table` (plugin-owned storage), each to its physical
    /// table. Filled per plugin by the host from the live schema, never by policies.
    pub physical: HashMap<String, String>,
    /// Outbound destinations; anything else is `not-allowed`. The most specific match decides
    /// (`host_pattern::most_specific`), and no two name the same destinations.
    pub hosts: Vec<HostPattern>,
    /// Advisory locks (`lock`, `try-lock`): they open a transaction and hold a connection,
    /// so they are granted like tables.
    pub locks: bool,
    pub http_timeout: Duration,
    pub http_max_response: usize,
    pub db_statement_timeout_ms: u64,
    pub db_max_rows: u32,
    /// Provider credentials the host adds to requests to the org's configured origin for
    /// that provider (`host::credentials`); the plugin never reads them.
    pub credentials: Vec<CredentialGrant>,
}

/// One credential a plugin may use: the org's secret `name` of `provider`, put where
/// `inject` says on requests to that provider's configured origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialGrant {
    pub provider: String,
    pub name: String,
    pub inject: Inject,
    /// Calls with the credential are paced per (org, provider) to this; `None`: unpaced.
    pub pace: Option<Pace>,
}

/// Where the host puts a credential on an outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inject {
    /// A query parameter (replacing any the plugin set with that name).
    Query(String),
    /// A header, lower-case (replacing any the plugin set with that name).
    Header(String),
    /// `authorization: Bearer <secret>` (replacing any `authorization` the plugin set).
    Bearer,
}

/// A token bucket: one call per `period` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pace {
    pub period: Duration,
    pub burst: u32,
}

impl Default for Grants {
    /// No tables, no hosts, default limits: the sandbox contract fixtures run in.
    fn default() -> Grants {
        Grants {
            tables: HashMap::new(),
            physical: HashMap::new(),
            hosts: Vec::new(),
            locks: false,
            http_timeout: Duration::from_millis(5_000),
            http_max_response: 1024 * 1024,
            db_statement_timeout_ms: 2_000,
            db_max_rows: 1_000,
            credentials: Vec::new(),
        }
    }
}

/// Resource limits of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    /// Linear memory cap, in bytes.
    pub memory: usize,
    /// Guest CPU time before the invocation is stopped.
    pub cpu: Duration,
    /// Wall-clock time before the invocation is stopped.
    pub timeout: Duration,
}

pub const DEFAULT_PLUGIN_MEMORY: usize = 64 * 1024 * 1024;
pub const MAX_PLUGIN_MEMORY: usize = 256 * 1024 * 1024;

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox { memory: DEFAULT_PLUGIN_MEMORY, cpu: Duration::from_millis(200), timeout: Duration::from_millis(10_000) }
    }
}
