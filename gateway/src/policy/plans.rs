//! `[plans.<name>]`: per-org and per-user quotas, one plan marked `default`.

use std::collections::HashMap;

use serde::Deserialize;

use super::units::Quota;
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
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub per_org: Option<Quota>,
    pub per_user: Option<Quota>,
}

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
        plans.insert(name.clone(), Plan { name, per_org: p.per_org, per_user: p.per_user });
    }
    Ok(())
}
