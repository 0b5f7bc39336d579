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
}
