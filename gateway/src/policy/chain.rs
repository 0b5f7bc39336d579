//! `chain = [...]` on `[providers.<name>]` and on a plugin `[[route]]` (docs/optimizer.md,
//! "Fail-soft chains"): the secondary steps enqueued, each as its own job, after the critical
//! write commits.

use serde::Deserialize;

/// One secondary step: a job kind with its own retries and `agent_runs` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainStep {
    /// Recount the campaign's `campaign_step_stats`.
    Stats,
    /// An `optimizer` job (`trigger: chain`).
    Optimizer,
    /// POST the event to the org's `notify_url`.
    Notify,
}

impl ChainStep {
    /// Every step, in the order a chain runs them when it names them all.
    pub const ALL: [ChainStep; 3] = [ChainStep::Stats, ChainStep::Optimizer, ChainStep::Notify];

    /// The job kind (`jobs.kind`) and the name policies use.
    pub fn kind(self) -> &'static str {
        match self {
            ChainStep::Stats => "stats",
            ChainStep::Optimizer => "optimizer",
            ChainStep::Notify => "notify",
        }
    }
}

/// A chain as written: step names, each at most once.
pub(super) fn build(names: &[String]) -> Result<Vec<ChainStep>, String> {
    let mut steps = Vec::new();
    for n in names {
        let step = ChainStep::ALL
            .into_iter()
            .find(|s| s.kind() == n)
            .ok_or_else(|| format!("chain: {n:?} is not one of \"stats\", \"optimizer\", \"notify\""))?;
        if steps.contains(&step) {
            return Err(format!("chain: {n:?} is named twice"));
        }
        steps.push(step);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_known_names_once_each() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(build(&s(&["stats", "optimizer", "notify"])).unwrap(), ChainStep::ALL.to_vec());
        assert_eq!(build(&[]).unwrap(), vec![]);
        assert!(build(&s(&["stats", "stats"])).unwrap_err().contains("twice"));
        assert!(build(&s(&["email"])).unwrap_err().contains("not one of"));
    }

    #[test]
    fn a_chain_belongs_on_providers_and_plugin_routes_served_over_http() {
        let plans = ("plans.toml".to_string(), "[plans.standard]\ndefault = true\nper_user = { rate = \"20/s\" }\n".to_string());
        let load = |text: &str| super::super::PolicySet::from_sources(&[plans.clone(), ("p.toml".into(), format!("[plugins.echo]\nfile = \"echo.wasm\"\n{text}"))]);
        let set = load("[[route]]\nid = \"a\"\ninternal = true\ntarget = \"plugin:echo\"\n[providers.p]\nroute = \"a\"\nchain = [\"stats\", \"notify\"]\n\
                        [[route]]\nid = \"t\"\nmethod = \"POST\"\npath = \"/t\"\ntarget = \"plugin:echo\"\nroles = [\"member\"]\nchain = [\"notify\"]\n").unwrap();
        assert_eq!(set.providers["p"].chain, vec![ChainStep::Stats, ChainStep::Notify]);
        assert_eq!(set.route("t").unwrap().chain, vec![ChainStep::Notify]);
        let native = load("[[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/w\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\nchain = [\"notify\"]\n");
        assert!(native.unwrap_err().to_string().contains("plugin routes"));
        let internal = load("[[route]]\nid = \"a\"\ninternal = true\ntarget = \"plugin:echo\"\nchain = [\"notify\"]\n");
        assert!(internal.unwrap_err().to_string().contains("plugin routes"));
        let unknown = load("[[route]]\nid = \"a\"\ninternal = true\ntarget = \"plugin:echo\"\n[providers.p]\nroute = \"a\"\nchain = [\"mail\"]\n");
        assert!(unknown.unwrap_err().to_string().contains("not one of"));
    }
}
