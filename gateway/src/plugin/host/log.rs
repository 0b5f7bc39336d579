//! `log`: plugin log lines, tagged by the host and bounded per line, per invocation and per
//! org, so that a plugin can neither forge nor flood the gateway's log.
//!
//! - A line is the message (at most [`MESSAGE_MAX`] bytes) and at most [`FIELDS_MAX`] fields
//!   (keys at most [`KEY_MAX`] bytes, values at most [`VALUE_MAX`]), [`LINE_MAX`] bytes in
//!   all; the rest is cut. Only that much is copied out of the guest's memory: `emit` is linked
//!   by hand with lazily lifted strings rather than through `bindgen!`, which would copy a
//!   string of any size first.
//! - A line is `plugin_log` with the host's tags (`request_id`, `org_id`, `plugin`) first, then
//!   the plugin's message as `text` and its fields as `fields`, both string values.
//! - Fields are nested in the host's `fields` value, never top-level: keys keep only
//!   `[A-Za-z0-9_.-]` (anything else becomes `_`) and a key naming one of the host's own fields
//!   (`org_id`, `request_id`, `plugin`, `level`, …, in any spelling) is prefixed `field_`.
//!   Values that need it are quoted, with quotes, backslashes and control characters escaped.
//!   The text format quotes and escapes `text` and `fields` like any string value, and escapes
//!   control characters in everything else (`logging`).
//! - An invocation may write [`MAX_LINES`] lines and [`BUDGET`] bytes (message, keys and
//!   values as cut, counted before anything is formatted); once a line does not fit, the rest
//!   are dropped unread, and one summary line (`plugin_log_lines_dropped`) says how many.
//! - An org may write [`ORG_RATE_PER_SEC`] lines a second (burst [`ORG_BURST`]) across all
//!   its invocations; lines over it are dropped and counted the same way.
//! - Lines that pass go to target `gateway::plugin`, whose writer drops them (and counts
//!   them) rather than make a request wait when the log sink falls behind.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;
use wasmtime::component::{Linker, WasmList, WasmStr};
use wasmtime::StoreContextMut;

use crate::logging::{needs_escape, push_escaped};
use crate::plugin::bindings::log::Level;
use crate::plugin::state::{LogState, StoreState};

/// Lines one invocation may write (stdout and stderr lines included).
pub const MAX_LINES: u32 = 100;
/// Bytes of plugin text (message, keys, values) one invocation may write.
pub const BUDGET: usize = 64 * 1024;
pub const MESSAGE_MAX: usize = 2048;
pub const FIELDS_MAX: usize = 32;
pub const KEY_MAX: usize = 64;
pub const VALUE_MAX: usize = 2048;
/// Bytes of one line: message plus keys and values. Fields past it are dropped.
pub const LINE_MAX: usize = 8 * 1024;
/// Plugin lines per second per org, all invocations together.
pub const ORG_RATE_PER_SEC: u32 = 1_000;
pub const ORG_BURST: u32 = 2_000;

/// The host's own field names, normalised (lower case, alphanumerics only): a plugin key that
/// normalises to one of them is prefixed.
const RESERVED: &[&str] = &[
    "orgid", "tenantid", "requestid", "userid", "plugin", "pluginname", "pluginversion", "version", "level",
    "target", "timestamp", "time", "ts", "message", "msg", "fields", "stream", "route", "routeid", "method",
    "path", "status", "role", "latencyus", "outcome", "detail", "span", "spans", "threadname", "threadid", "text",
];

const RESERVED_PREFIX: &str = "field_";

static OVER_BUDGET: AtomicU64 = AtomicU64::new(0);
static OVER_RATE: AtomicU64 = AtomicU64::new(0);

/// Plugin lines dropped since start: over an invocation's budget (lines or bytes), over an
/// org's rate.
pub fn dropped_totals() -> (u64, u64) {
    (OVER_BUDGET.load(Ordering::Relaxed), OVER_RATE.load(Ordering::Relaxed))
}

/// The per-org plugin log rate: one token bucket per org, shared by every invocation.
pub struct OrgLogRate {
    limiter: DefaultKeyedRateLimiter<Uuid>,
    checks: AtomicU64,
}

impl OrgLogRate {
    pub fn new(per_sec: u32, burst: u32) -> OrgLogRate {
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
        OrgLogRate { limiter: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)), checks: AtomicU64::new(0) }
    }

    pub fn allow(&self, org: Uuid) -> bool {
        // Orgs that stopped logging are forgotten now and then, so the map stays small.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&org).is_ok()
    }
}

impl Default for OrgLogRate {
    fn default() -> OrgLogRate {
        OrgLogRate::new(ORG_RATE_PER_SEC, ORG_BURST)
    }
}

impl LogState {
    /// Whether the next line is dropped unread: the invocation's lines or bytes are spent.
    pub fn exhausted(&self) -> bool {
        self.lines >= MAX_LINES || self.budget == 0
    }

    /// Counts a line dropped without reading it.
    pub fn drop_unread(&mut self) {
        self.lines = self.lines.saturating_add(1);
        self.over_budget = self.over_budget.saturating_add(1);
        OVER_BUDGET.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a line of `cost` bytes (as cut, before formatting) may be written; spends the
    /// budget and the org's rate when it may, counts the drop when it may not. Once a line
    /// does not fit the budget, the budget is spent.
    pub fn admit(&mut self, cost: usize) -> bool {
        if self.exhausted() || cost > self.budget {
            self.budget = 0;
            self.drop_unread();
            return false;
        }
        self.lines += 1;
        if !self.rate.allow(self.org) {
            self.over_rate = self.over_rate.saturating_add(1);
            OVER_RATE.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.budget -= cost;
        true
    }

    /// Lines dropped in this invocation.
    pub fn dropped(&self) -> u32 {
        self.over_budget.saturating_add(self.over_rate)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn is_reserved(key: &str) -> bool {
    let norm: String = key.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    RESERVED.contains(&norm.as_str())
}

/// Appends ` key=value` (no leading space for the first field): the key cut to the safe
/// charset (and prefixed when it names a host field), the value quoted when it holds a
/// space, a quote, `=`, a backslash or a control character.
pub fn push_field(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    let mut k: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .collect();
    if k.is_empty() {
        k.push('_');
    }
    if is_reserved(&k) {
        out.push_str(RESERVED_PREFIX);
    }
    out.push_str(&k);
    out.push('=');
    let plain = !value.is_empty() && !value.chars().any(|c| matches!(c, ' ' | '"' | '=' | '\\') || needs_escape(c));
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => push_escaped(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Links `gateway:plugin/log` of every served version (its signature is the same in each).
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    for package in crate::plugin::WIT_VERSIONS {
        let version = package.rsplit('@').next().unwrap_or_default();
        let mut inst = linker.instance(&format!("gateway:plugin/log@{version}"))?;
        inst.func_wrap(
            "emit",
            |store: StoreContextMut<'_, StoreState>, (level, message, fields): (Level, WasmStr, WasmList<(WasmStr, WasmStr)>)| {
                emit(store, level, message, fields)
            },
        )?;
    }
    Ok(())
}

fn emit(
    mut store: StoreContextMut<'_, StoreState>,
    level: Level,
    message: WasmStr,
    fields: WasmList<(WasmStr, WasmStr)>,
) -> wasmtime::Result<()> {
    if store.data().log.exhausted() {
        store.data_mut().log.drop_unread();
        return Ok(());
    }
    // `to_str` borrows the guest's memory (validating UTF-8, as lifting a `string` must);
    // only the cut prefix is copied.
    let message = cap(&message.to_str(&store)?, MESSAGE_MAX).to_string();
    let mut cost = message.len();
    let mut rendered = String::new();
    for i in 0..fields.len().min(FIELDS_MAX) {
        let Some(pair) = fields.get(&mut store, i) else { break };
        let (k, v) = pair?;
        let (k, v) = (k.to_str(&store)?, v.to_str(&store)?);
        let (k, v) = (cap(&k, KEY_MAX), cap(&v, VALUE_MAX));
        if cost + k.len() + v.len() > LINE_MAX {
            break;
        }
        cost += k.len() + v.len();
        push_field(&mut rendered, k, v);
    }
    let log = &mut store.data_mut().log;
    if !log.admit(cost) {
        return Ok(());
    }
    // The plugin's text is a value after the host's tags, never the event's message: the text
    // format writes the message first and unquoted, where `org_id=…` would read as a tag.
    let (rid, org, plugin, text, fields) = (&log.request_id, &log.org, &log.plugin, message.as_str(), rendered.as_str());
    match level {
        Level::Debug => tracing::debug!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, text, fields, "plugin_log"),
        Level::Info => tracing::info!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, text, fields, "plugin_log"),
        Level::Warn => tracing::warn!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, text, fields, "plugin_log"),
        Level::Error => tracing::error!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, text, fields, "plugin_log"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn state(rate: OrgLogRate) -> LogState {
        LogState::new("r".into(), Uuid::new_v4(), "p".into(), Arc::new(rate))
    }

    fn field(k: &str, v: &str) -> String {
        let mut out = String::new();
        push_field(&mut out, k, v);
        out
    }

    #[test]
    fn keys_keep_a_safe_charset_and_never_name_a_host_field() {
        assert_eq!(field("event_id", "42"), "event_id=42");
        assert_eq!(field("a.b-c_D9", "x"), "a.b-c_D9=x");
        assert_eq!(field("k\n2026 INFO org_id=x", "v"), "k_2026_INFO_org_id_x=v");
        assert_eq!(field("\x1b[2K", "v"), "__2K=v");
        assert_eq!(field("", "v"), "_=v");
        assert_eq!(field("é", "v"), "_=v");
        for host in ["org_id", "ORG_ID", "org-id", "orgId", "org.id", "request_id", "plugin", "level", "message", "fields", "tenant_id"] {
            let f = field(host, "x");
            assert!(f.starts_with("field_"), "{f}");
        }
        assert_eq!(field("org_id", "victim"), "field_org_id=victim");
    }

    #[test]
    fn values_are_quoted_and_escaped_when_they_need_it() {
        assert_eq!(field("k", "plain"), "k=plain");
        assert_eq!(field("k", ""), "k=\"\"");
        assert_eq!(field("k", "two words"), "k=\"two words\"");
        assert_eq!(field("k", "\" org_id=victim \""), r#"k="\" org_id=victim \"""#);
        assert_eq!(field("k", "a\\b"), r#"k="a\\b""#);
        assert_eq!(field("k", "v\n2026 INFO access"), r#"k="v\n2026 INFO access""#);
        assert_eq!(field("ansi", "\x1b[2K\r\x1b[1A"), r#"ansi="\x1b[2K\r\x1b[1A""#);
        let mut two = field("a", "1");
        push_field(&mut two, "b", "2");
        assert_eq!(two, "a=1 b=2");
    }

    #[test]
    fn cap_cuts_on_a_character_boundary() {
        assert_eq!(cap("abc", 5), "abc");
        assert_eq!(cap("abcdef", 3), "abc");
        assert_eq!(cap("aé", 2), "a");
        assert_eq!(cap("日本", 4), "日");
    }

    #[test]
    fn the_budget_admits_lines_until_one_does_not_fit_then_drops_the_rest() {
        let mut s = state(OrgLogRate::default());
        let line = 10 * 1024;
        for _ in 0..6 {
            assert!(s.admit(line));
        }
        assert_eq!(s.budget, BUDGET - 6 * line);
        assert!(!s.admit(line), "the seventh 10 KiB line passes the 64 KiB budget");
        assert!(s.exhausted());
        assert!(!s.admit(1), "nothing after the budget is spent, however small");
        assert_eq!((s.lines, s.over_budget, s.over_rate, s.dropped()), (8, 2, 0, 2));
    }

    #[test]
    fn the_line_count_is_capped_too() {
        let mut s = state(OrgLogRate::default());
        for _ in 0..MAX_LINES {
            assert!(s.admit(1));
        }
        assert!(s.exhausted());
        assert!(!s.admit(1));
        s.drop_unread();
        assert_eq!(s.dropped(), 2);
    }

    #[test]
    fn an_org_over_its_rate_is_dropped_across_invocations_and_other_orgs_are_not() {
        let rate = Arc::new(OrgLogRate::new(1, 3));
        let org = Uuid::new_v4();
        let mut a = LogState::new("a".into(), org, "p".into(), rate.clone());
        let mut b = LogState::new("b".into(), org, "p".into(), rate.clone());
        assert!(a.admit(1) && a.admit(1) && b.admit(1));
        assert!(!b.admit(1), "the org's burst is shared by its invocations");
        assert_eq!((b.over_rate, b.dropped()), (1, 1));
        assert_eq!(b.budget, BUDGET - 1, "a line over the rate spends no budget");
        let mut other = LogState::new("c".into(), Uuid::new_v4(), "p".into(), rate);
        assert!(other.admit(1));
    }
}
