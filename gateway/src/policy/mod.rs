//! Policies: the `policies/*.toml` files that bind routes to targets, roles, limits and plans.
//!
//! Loading is all-or-nothing: any invalid file stops start-up with the file, the line and the
//! reason. The loaded [`PolicySet`] is immutable; a reload builds a new one.
//!
//! This module does not know how requests are served; it only describes them. A plugin
//! route's grants and sandbox are the runtime's own types ([`crate::plugin::grants`]); this
//! module only reads them from TOML.
//!
//! # Layout
//!
//! One file per section of a policy file: [`plans`] (`[plans.*]`), [`plugins`]
//! (`[plugins.*]`), [`providers`] (`[providers.*]`), [`routes`] (`[[route]]`), with
//! [`router`] (path patterns, lookup), [`handlers`] (the native handlers a route may name) and
//! [`units`] (rates, quotas, sizes).

pub mod chain;
pub mod handlers;
pub mod plans;
pub mod plugins;
pub mod providers;
pub mod router;
pub mod routes;
pub mod units;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub use chain::ChainStep;
pub use handlers::Native;
pub use plans::{Limits, Plan};
pub use plugins::PluginDecl;
pub use providers::{EventKey, Provider};
pub use router::{Lookup, PathPattern};
pub use routes::{Auth, BodyKind, Idempotency, Route, Scope, Target, DEFAULT_BODY_LIMIT, MAX_BODY_LIMIT};
pub use units::{ByteSize, Quota, Rate};

/// Everything loaded from the policy directory.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub routes: Vec<Route>,
    pub providers: HashMap<String, Provider>,
    pub plugins: HashMap<String, PluginDecl>,
    pub plans: HashMap<String, Plan>,
    pub default_plan: String,
}

/// One policy file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    plugins: HashMap<String, plugins::PluginSpec>,
    #[serde(default)]
    plans: HashMap<String, plans::PlanSpec>,
    #[serde(default)]
    providers: HashMap<String, providers::ProviderSpec>,
    #[serde(default)]
    route: Vec<toml::Spanned<routes::RouteSpec>>,
}

/// Builds the error for a file (and line): `file:line: reason`.
type Fail<'a> = dyn Fn(Option<usize>, String) -> Error + 'a;

impl PolicySet {
    /// Loads every `*.toml` in `dir` (sorted by name).
    pub fn load(dir: &Path) -> Result<PolicySet> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Policy {
                file: dir.display().to_string(),
                reason: format!("cannot read policy directory: {e}"),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut sources = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| Error::Policy {
                file: f.display().to_string(),
                reason: e.to_string(),
            })?;
            sources.push((f.display().to_string(), text));
        }
        Self::from_sources(&sources)
    }

    /// Builds a set from `(file name, text)` pairs: each file's sections in turn, then the
    /// references between files.
    pub fn from_sources(sources: &[(String, String)]) -> Result<PolicySet> {
        let mut set = PolicySet {
            routes: Vec::new(),
            providers: HashMap::new(),
            plugins: HashMap::new(),
            plans: HashMap::new(),
            default_plan: String::new(),
        };
        let mut default_plan: Option<(String, String)> = None;
        for (file, text) in sources {
            let fail = |line: Option<usize>, reason: String| Error::Policy {
                file: match line {
                    Some(l) => format!("{file}:{l}"),
                    None => file.clone(),
                },
                reason,
            };
            let spec: FileSpec = toml::from_str(text).map_err(|e| {
                let line = e.span().map(|s| line_of(text, s.start));
                fail(line, toml_reason(&e, text))
            })?;
            plugins::collect(&spec.plugins, file, &fail, &mut set.plugins)?;
            plans::collect(&spec.plans, file, &fail, &mut set.plans, &mut default_plan)?;
            providers::collect(&spec.providers, file, &fail, &mut set.providers)?;
            for spanned in spec.route {
                let line = line_of(text, spanned.span().start);
                let r = spanned.into_inner();
                let id = r.id.clone();
                let route = routes::build(r, &set.routes, format!("{file}:{line}"))
                    .map_err(|reason| fail(Some(line), format!("route {id:?}: {reason}")))?;
                set.routes.push(route);
            }
        }
        set.default_plan = match default_plan {
            Some((name, _)) => name,
            None => {
                return Err(Error::Policy {
                    file: sources.first().map(|s| s.0.clone()).unwrap_or_else(|| "policies".into()),
                    reason: "no plan is marked `default = true`".into(),
                })
            }
        };
        set.check_references()?;
        set.pace_credentials();
        Ok(set)
    }

    /// Each credential grant is paced as its provider says (`rate`/`burst`).
    fn pace_credentials(&mut self) {
        for r in &mut self.routes {
            if r.grants.credentials.is_empty() {
                continue;
            }
            let grants = std::sync::Arc::make_mut(&mut r.grants);
            for c in &mut grants.credentials {
                c.pace = self.providers.get(&c.provider).and_then(|p| p.pace).map(|q| crate::plugin::grants::Pace {
                    period: (std::time::Duration::from_secs(q.rate.per_secs as u64) / q.rate.count).max(std::time::Duration::from_nanos(1)),
                    burst: q.burst(),
                });
            }
        }
    }

    /// What one file may name from another: a route's plugin and plans, a provider's route.
    fn check_references(&self) -> Result<()> {
        for r in &self.routes {
            let bad = |reason: String| Error::Policy { file: r.source.clone(), reason: format!("route {:?}: {reason}", r.id) };
            if let Target::Plugin(p) = &r.target {
                if !self.plugins.contains_key(p) {
                    return Err(bad(format!("plugin {p:?} is not declared in any [plugins.*]")));
                }
            }
            if let Some(plan) = r.rate_limit.keys().find(|p| !self.plans.contains_key(*p)) {
                return Err(bad(format!("rate_limit names unknown plan {plan:?}")));
            }
            if let Some(c) = r.grants.credentials.iter().find(|c| !self.providers.contains_key(&c.provider)) {
                return Err(bad(format!("grants.credentials names provider {:?}, which is not declared in any [providers.*]", c.provider)));
            }
        }
        for p in self.providers.values() {
            let Some(route) = &p.route else { continue };
            if !self.routes.iter().any(|r| *r.id == **route && r.internal) {
                return Err(Error::Policy {
                    file: p.source.clone(),
                    reason: format!("provider {:?}: route {:?} is not an internal plugin route", p.name, route),
                });
            }
        }
        Ok(())
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }

    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.id == id)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A plain SQL identifier: lower-case letters, digits and `_`, not starting with a digit.
pub fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The parser's message; `toml` gives none for a character it cannot start anything with (a
/// control character, a carriage return without a newline), so that one is named here.
fn toml_reason(e: &toml::de::Error, text: &str) -> String {
    if !e.message().is_empty() {
        return e.message().to_string();
    }
    let found = e.span().and_then(|s| text.get(s.start..)).and_then(|rest| rest.chars().next());
    match found {
        Some(c) => format!("unexpected character {c:?}"),
        None => "not valid TOML".to_string(),
    }
}

/// Bytes, not `str` slicing: `toml` may point inside a multi-byte character (an invalid
/// escape followed by one), which slicing would panic on.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANS: &str = "[plans.standard]\ndefault = true\nper_user = { rate = \"20/s\" }\n";

    fn load(route: &str) -> Result<PolicySet> {
        PolicySet::from_sources(&[("plans.toml".into(), PLANS.into()), ("r.toml".into(), route.into())])
    }

    #[test]
    fn an_error_inside_a_multi_byte_character_is_reported_not_a_panic() {
        // Found by the policy_loader fuzz target: toml's span starts inside the `é`.
        let e = PolicySet::from_sources(&[("p.toml".into(), "\n\"\\é\"".into())]).unwrap_err();
        assert!(e.to_string().starts_with("policy p.toml:2: "), "{e}");
    }

    #[test]
    fn toml_errors_without_a_message_still_give_a_reason() {
        for (text, reason) in [("\r/x", "unexpected character '\\r'"), ("# a\0b\n", "unexpected character '\\0'")] {
            let e = PolicySet::from_sources(&[("p.toml".into(), text.into())]).unwrap_err();
            assert_eq!(e.to_string(), format!("policy p.toml:1: {reason}"), "{text:?}");
        }
    }

    #[test]
    fn console_auth_and_target_go_together() {
        let route = |auth: &str, target: &str, scope: &str, path: &str| {
            format!("[[route]]\nid = \"c\"\nmethod = \"GET\"\npath = \"{path}\"\ntarget = \"{target}\"\nauth = \"{auth}\"\nscope = \"{scope}\"\n")
        };
        assert!(load(&route("console", "native:console", "platform", "/console/x")).is_ok());
        for (auth, target, scope, path) in [
            ("bearer", "native:console", "platform", "/console/x"),
            ("console", "native:whoami", "platform", "/console/x"),
            ("console", "native:console", "tenant", "/console/x"),
            ("console", "native:console", "platform", "/v1/x"),
        ] {
            let e = load(&route(auth, target, scope, path)).unwrap_err().to_string();
            assert!(e.contains("console"), "{auth} {target} {scope} {path}: {e}");
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = load("[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:nope\"\nroles = [\"member\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml:1") && e.contains("nope"), "{e}");
        let e = load("\n\n[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:whoami\"\nroles = [\"root\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml:8") && e.contains("root"), "{e}");
        let e = load("[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\n[route.rate_limit.standard]\nper_org = { rate = \"5/fortnight\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml:8") && e.contains("fortnight"), "{e}");
    }

    #[test]
    fn every_sandbox_and_grant_setting_has_an_upper_bound() {
        let route = |extra: &str| {
            format!("[plugins.p]\nfile = \"p.wasm\"\n[[route]]\nid = \"p\"\nmethod = \"POST\"\npath = \"/p\"\ntarget = \"plugin:p\"\nroles = [\"member\"]\n{extra}")
        };
        assert!(load(&route("[route.sandbox]\ncpu_ms = 10000\ntimeout_ms = 60000\n")).is_ok());
        for (extra, key) in [
            ("[route.sandbox]\ncpu_ms = 10001\n", "cpu_ms"),
            ("[route.sandbox]\ntimeout_ms = 600000\n", "timeout_ms"),
            ("[route.sandbox]\nmemory = \"1024MiB\"\n", "memory"),
            ("[route.grants]\nhttp_timeout_ms = 30001\n", "http_timeout_ms"),
            ("[route.grants]\nhttp_max_response = \"17MiB\"\n", "http_max_response"),
            ("[route.grants]\ndb_statement_timeout_ms = 99999\n", "db_statement_timeout_ms"),
            ("[route.grants]\ndb_max_rows = 4294967295\n", "db_max_rows"),
            ("response_limit = \"17MiB\"\n", "response_limit"),
            ("response_headers = [\"x-anything\"]\n", "response_headers"),
            ("pass_headers = [\"authorization\"]\n", "pass_headers"),
        ] {
            let e = load(&route(extra)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("r.toml:"), "{extra}: {e}");
        }
        let e = load("[plans.x]\nplugin_concurrency = 0\n").unwrap_err().to_string();
        assert!(e.contains("plugin_concurrency"), "{e}");
    }

    #[test]
    fn credential_grants_name_declared_providers_and_take_their_pace() {
        let route = |provider: &str| {
            format!(
                "[plugins.p]\nfile = \"p.wasm\"\n[providers.acme]\nroute = \"acme_adapter\"\nbase_url = \"https://api.acme.example\"\nrate = \"2/s\"\nburst = 4\n\
                 [[route]]\nid = \"acme_adapter\"\ninternal = true\ntarget = \"plugin:p\"\n\
                 [route.grants]\ncredentials = [{{ provider = \"{provider}\", name = \"api_key\", inject = \"query:api_key\" }}]\n"
            )
        };
        let set = load(&route("acme")).unwrap();
        let pace = set.route("acme_adapter").unwrap().grants.credentials[0].pace.unwrap();
        assert_eq!((pace.period, pace.burst), (std::time::Duration::from_millis(500), 4));
        let e = load(&route("nope")).unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("not declared"), "{e}");
    }

    #[test]
    fn public_routes_are_platform_routes_without_roles_for_public_handlers() {
        let route = |target: &str, extra: &str| {
            format!("[[route]]\nid = \"o\"\nmethod = \"GET\"\npath = \"/v1/openapi.json\"\ntarget = \"{target}\"\nauth = \"public\"\n{extra}")
        };
        let set = load(&route("native:openapi", "scope = \"platform\"\n")).unwrap();
        assert_eq!(set.route("o").unwrap().auth, Auth::Public);
        for (target, extra) in [
            ("native:whoami", "scope = \"platform\"\n"),
            ("native:openapi", ""),
            ("native:openapi", "scope = \"platform\"\nroles = [\"super_admin\"]\n"),
        ] {
            let e = load(&route(target, extra)).unwrap_err().to_string();
            assert!(e.contains("auth = \"public\""), "{target} {extra}: {e}");
        }
    }

    #[test]
    fn lookup_distinguishes_wrong_method() {
        let set = load("[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/v1/whoami\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\n").unwrap();
        assert!(matches!(set.lookup(&http::Method::GET, "/v1/whoami"), Lookup::Found(..)));
        assert!(matches!(set.lookup(&http::Method::POST, "/v1/whoami"), Lookup::WrongMethod));
        assert!(matches!(set.lookup(&http::Method::GET, "/v1/who"), Lookup::NotFound));
        assert_eq!(set.default_plan, "standard");
        let Lookup::Found(r, _) = set.lookup(&http::Method::GET, "/v1/whoami") else { unreachable!() };
        assert_eq!(r.target, Target::Native(Native::Whoami));
    }
}
