//! Time estimates over the live goal graph: the ETA of a running run and the critical path
//! of a finished one.
//!
//! Each unfinished goal is expected to take its history's duration (the median of the last
//! builds of its name, given by the runner), or the mean of the known ones when it has no
//! history; a running build has what is left of that. The run cannot end before its longest
//! chain of remaining work, nor before all remaining work spread over the build slots: the
//! ETA is the larger of the two. Both are O(goals + edges).

use crate::engine::api::Time;

use super::state::{Category, NONE, ViewState};

/// What the remaining run is expected to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eta {
    /// Milliseconds from `now` until the run is expected to end.
    pub remaining_ms: u64,
    /// Whether any goal had a history to go by (if none did, `remaining_ms` means nothing).
    pub known: bool,
}

/// Substitutions and goals without builds are quick: a second, as a guess.
const SMALL_MS: u64 = 1000;

fn expected(view: &ViewState, g: u32, fallback: u64) -> u64 {
    let goal = &view.goals[g as usize];
    if goal.substitution {
        return SMALL_MS;
    }
    goal.expected_ms.unwrap_or(fallback)
}

/// The estimate at `now`.
pub fn eta(view: &ViewState, now: Time) -> Eta {
    let known: Vec<u64> = view
        .goals
        .iter()
        .filter(|g| !g.category.is_done())
        .filter_map(|g| g.expected_ms)
        .collect();
    let fallback = if known.is_empty() {
        0
    } else {
        known.iter().sum::<u64>() / known.len() as u64
    };
    let n = view.goals.len();
    // Remaining work of each goal alone.
    let own: Vec<u64> = (0..n as u32)
        .map(|g| {
            let goal = &view.goals[g as usize];
            match goal.category {
                c if c.is_done() => 0,
                Category::Building | Category::Substituting => {
                    let total = expected(view, g, fallback);
                    total
                        .saturating_sub(goal.elapsed(now).unwrap_or(0))
                        .max(SMALL_MS.min(total))
                }
                _ => expected(view, g, fallback),
            }
        })
        .collect();
    let total: u64 = own.iter().sum();
    let chain = longest_chains(view, &own);
    let longest = chain.iter().copied().max().unwrap_or(0);
    let slots = u64::from(view.controls.max_jobs.max(1));
    Eta {
        remaining_ms: longest.max(total.div_ceil(slots)),
        known: !known.is_empty(),
    }
}

/// For every goal, `weight` of it plus the heaviest chain of goals it waits for (done goals
/// weigh what `weight` says, usually 0). Iterative, so a 100,000-deep chain is fine.
fn longest_chains(view: &ViewState, weight: &[u64]) -> Vec<u64> {
    const UNSEEN: u64 = u64::MAX;
    const OPEN: u64 = u64::MAX - 1;
    let n = view.goals.len();
    let mut chain = vec![UNSEEN; n];
    let mut stack: Vec<(u32, usize)> = Vec::new();
    for root in 0..n as u32 {
        if chain[root as usize] != UNSEEN {
            continue;
        }
        chain[root as usize] = OPEN;
        stack.push((root, 0));
        while let Some(&mut (g, ref mut next)) = stack.last_mut() {
            let deps = &view.goals[g as usize].deps;
            if let Some(&d) = deps.get(*next) {
                *next += 1;
                if chain[d as usize] == UNSEEN {
                    chain[d as usize] = OPEN;
                    stack.push((d, 0));
                }
                continue;
            }
            let heaviest = deps
                .iter()
                .map(|&d| chain[d as usize])
                // A dependency still open is on a cycle (impossible in Nix's graph): ignore.
                .filter(|&c| c < OPEN)
                .max()
                .unwrap_or(0);
            chain[g as usize] = weight[g as usize].saturating_add(heaviest);
            stack.pop();
        }
    }
    chain
}

/// The critical path of what ran: the chain of goals, each waiting for the next, with the
/// largest sum of build (and substitution) times; its total and its goals from the top down.
pub fn critical_path(view: &ViewState) -> (u64, Vec<u32>) {
    let weight: Vec<u64> = view
        .goals
        .iter()
        .map(|g| match (g.started, g.stopped) {
            (Some(a), Some(b)) => b.millis_since(a),
            _ => 0,
        })
        .collect();
    let chain = longest_chains(view, &weight);
    let Some(start) =
        (0..view.goals.len() as u32).max_by_key(|&g| (chain[g as usize], u32::MAX - g))
    else {
        return (0, Vec::new());
    };
    let total = chain[start as usize];
    let mut path = vec![start];
    let mut g = start;
    loop {
        let next = view.goals[g as usize]
            .deps
            .iter()
            .copied()
            .filter(|&d| chain[d as usize] > 0 && !path.contains(&d))
            .max_by_key(|&d| chain[d as usize]);
        match next {
            Some(d) if d != NONE => {
                path.push(d);
                g = d;
            }
            _ => break,
        }
    }
    (total, path)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::app::tui::state::tests::{Script, controls};
    use crate::app::tui::state::{LogLimits, ViewState};
    use crate::engine::api::{BuildHistory, BuildStatus};

    struct Durations(HashMap<String, u64>);

    impl BuildHistory for Durations {
        fn expected_ms(&self, name: &str) -> Option<u64> {
            self.0.get(name).copied()
        }
    }

    fn view(expected: &[(&str, u64)], s: &Script, max_jobs: u32) -> ViewState {
        let map: HashMap<String, u64> = expected.iter().map(|(n, d)| (n.to_string(), *d)).collect();
        let history = Arc::new(Durations(map));
        let mut c = controls();
        c.max_jobs = max_jobs;
        let mut v = ViewState::new(c, LogLimits::default(), history);
        v.apply_all(&s.events);
        v
    }

    #[test]
    fn the_eta_is_the_longest_chain_or_the_work_per_slot() {
        // app waits for a (10s) and b (4s); b waits for c (4s).
        let mut s = Script::default();
        s.add(0, 0, "app", true)
            .add(0, 1, "a", false)
            .add(0, 2, "b", false)
            .add(0, 3, "c", false)
            .edge(0, 0, 1)
            .edge(0, 0, 2)
            .edge(0, 2, 3);
        let durations = [("app", 1000), ("a", 10_000), ("b", 4000), ("c", 4000)];
        // Many slots: the chain app <- a decides (11s).
        let v = view(&durations, &s, 8);
        assert_eq!(
            eta(&v, Time(0)),
            Eta {
                remaining_ms: 11_000,
                known: true
            }
        );
        // One slot: all the work, 19s.
        let v = view(&durations, &s, 1);
        assert_eq!(eta(&v, Time(0)).remaining_ms, 19_000);
        // a has run 6s of its 10: 1 + 4 left on that chain; b <- c is 8 + 1 now.
        s.build(0, 1, 0);
        let v = view(&durations, &s, 8);
        assert_eq!(eta(&v, Time(6000)).remaining_ms, 9000);
    }

    #[test]
    fn without_history_the_eta_is_unknown() {
        let mut s = Script::default();
        s.add(0, 0, "app", true);
        assert!(!eta(&view(&[], &s, 2), Time(0)).known);
    }

    #[test]
    fn the_critical_path_follows_the_longest_builds() {
        let mut s = Script::default();
        s.add(0, 0, "app", true)
            .add(0, 1, "a", false)
            .add(0, 2, "b", false)
            .edge(0, 0, 1)
            .edge(0, 0, 2)
            .build(0, 1, 0)
            .done(5000, 1, BuildStatus::Built)
            .build(0, 2, 1)
            .done(2000, 2, BuildStatus::Built)
            .build(5000, 0, 0)
            .done(6000, 0, BuildStatus::Built);
        let v = view(&[], &s, 2);
        // `done` reports started = 0, so app counts 6s, a 5s.
        assert_eq!(critical_path(&v), (11_000, vec![0, 1]));
    }
}
