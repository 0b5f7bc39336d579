//! `[plans.<name>]`: per-org and per-user quotas, one plan marked `default`.

use std::collections::HashMap;

use serde::Deserialize;

use super::units::Quota;
use crate::admission::PluginLimits;
use super::Fail;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub per_org: Option<Quota>,
    pub per_user: Option<Quota>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanSpec {
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub per_org: Option<Quota>,
    #[serde(default)]
    pub per_user: Option<Quota>,
    /// Plugin invocations of one org running at once (unlimited when absent).
    #[serde(default)]
    pub plugin_concurrency: Option<u32>,
    /// Guest CPU one org may spend, in milliseconds per second (unlimited when absent).
    #[serde(default)]
    pub plugin_cpu_ms_per_s: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub per_org: Option<Quota>,
    pub per_user: Option<Quota>,
    /// What the org's plugins may run and spend (see `admission`).
    pub plugins: PluginLimits,
}

/// Upper bound of `plugin_concurrency`: half the shared instance pool.
pub const MAX_PLUGIN_CONCURRENCY: u32 = crate::plugin::MAX_LIVE_INSTANCES / 2;
/// Upper bound of `plugin_cpu_ms_per_s` (a thousand cores' worth).
pub const MAX_PLUGIN_CPU_MS_PER_S: u32 = 1_000_000;

/// Adds one file's plans, refusing duplicates and a second default.
pub(super) fn collect(
    specs: &HashMap<String, PlanSpec>,
    file: &str,
    fail: &Fail<'_>,
    plans: &mut HashMap<String, Plan>,
    default_plan: &mut Option<(String, String)>,
) -> crate::Result<()> {
    let mut names: Vec<_> = specs.keys().cloned().collect();
    names.sort();
    for name in names {
        let p = &specs[&name];
        if plans.contains_key(&name) {
            return Err(fail(None, format!("plan {name:?} declared twice")));
        }
        if p.default {
            if let Some((other, f)) = default_plan {
                return Err(fail(None, format!("plan {name:?} is default, but so is {other:?} ({f})")));
            }
            *default_plan = Some((name.clone(), file.to_string()));
        }
        if p.plugin_concurrency.is_some_and(|c| !(1..=MAX_PLUGIN_CONCURRENCY).contains(&c)) {
            return Err(fail(None, format!("plan {name:?}: plugin_concurrency must be between 1 and {MAX_PLUGIN_CONCURRENCY}")));
        }
        if p.plugin_cpu_ms_per_s.is_some_and(|c| !(1..=MAX_PLUGIN_CPU_MS_PER_S).contains(&c)) {
            return Err(fail(None, format!("plan {name:?}: plugin_cpu_ms_per_s must be between 1 and {MAX_PLUGIN_CPU_MS_PER_S}")));
        }
        let plugins = PluginLimits { concurrency: p.plugin_concurrency, cpu_ms_per_s: p.plugin_cpu_ms_per_s };
        plans.insert(name.clone(), Plan { name, per_org: p.per_org, per_user: p.per_user, plugins });
    }
    Ok(())
}
