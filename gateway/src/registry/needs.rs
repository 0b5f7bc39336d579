//! A manifest's needs against the grants of the routes that serve the plugin, in the
//! activating replica's policies (`docs/plugin-manifest.md`, "Needs against the route's
//! grants"). Pure: the caller refuses the activation when anything is missing.

use serde::Serialize;

use super::manifest::{Need, Needs};
use crate::plugin::grants::Access;
use crate::plugin::host::host_pattern::HostPattern;
use crate::policy::{PolicySet, Route, Target};

/// One grant a route does not give (`kind`: `table`, `host`, `locks`, `credential`, or
/// `route` for `[needs.routes.X]` naming a route that does not serve the plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub route: String,
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

/// Every grant `plugin`'s needs ask for that a route serving it does not give, in route
/// order; empty when all are covered.
pub fn missing(plugin: &str, needs: &Needs, policies: &PolicySet) -> Vec<Missing> {
    let serving: Vec<&Route> = policies.routes.iter().filter(|r| matches!(&r.target, Target::Plugin(p) if p == plugin)).collect();
    let mut out = Vec::new();
    for id in needs.routes.keys() {
        if !serving.iter().any(|r| &*r.id == id.as_str()) {
            out.push(Missing { route: id.clone(), kind: "route", name: id.clone(), access: None });
        }
    }
    for r in serving {
        let mut check = |need: &Need| {
            for m in uncovered(r, need) {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        };
        check(&needs.all);
        if let Some(extra) = needs.routes.get(&*r.id) {
            check(extra);
        }
    }
    out
}

fn uncovered(r: &Route, need: &Need) -> Vec<Missing> {
    let g = &r.grants;
    let miss = |kind, name: &str, access| Missing { route: r.id.to_string(), kind, name: name.to_string(), access };
    let mut out = Vec::new();
    for (table, access) in &need.tables {
        if g.tables.get(table).is_none_or(|have| have < access) {
            out.push(miss("table", table, Some(*access)));
        }
    }
    for host in &need.hosts {
        let covered = HostPattern::parse(host).is_ok_and(|want| g.hosts.iter().any(|h| h.same_destinations(&want)));
        if !covered {
            out.push(miss("host", host, None));
        }
    }
    if need.locks && !g.locks {
        out.push(miss("locks", "locks", None));
    }
    for c in &need.credentials {
        if !g.credentials.iter().any(|have| have.provider == c.provider && have.name == c.name) {
            out.push(miss("credential", &format!("{}.{}", c.provider, c.name), None));
        }
    }
    out
}
