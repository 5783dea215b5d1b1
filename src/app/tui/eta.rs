//! Time estimates over the live goal graph: the ETA of a running run and the critical path
//! of a finished one.
//!
//! Each unfinished goal is expected to take its history's duration (the median of the last
//! builds of its name, given by the runner), or the mean of the known ones when it has no
//! history; a running build has what is left of that. The run cannot end before its longest
//! chain of remaining work, nor before all remaining work spread over the build slots: the
//! ETA is the larger of the two. Both are O(goals + edges).

use crate::engine::api::Time;

use super::state::{UNKNOWN, ViewState};

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

/// The dependency graph of a view in a compact form: each goal's inputs back to back, and the
/// goals in an order where inputs come before the goals waiting for them, so the longest
/// chains are one pass over two arrays. Built again only when goals or edges were added.
#[derive(Debug, Clone, Default)]
pub struct DepGraph {
    /// The view's `structure` it was built from.
    pub structure: u64,
    /// Goal `g`'s inputs are `deps[start[g]..start[g + 1]]`.
    start: Vec<u32>,
    deps: Vec<u32>,
    /// Inputs first.
    order: Vec<u32>,
}

impl DepGraph {
    pub fn of(view: &ViewState) -> DepGraph {
        let n = view.goals.len();
        // Counting sort of the edges by waiter (stable: each goal's inputs in their order).
        let edges = &view.links.edges;
        let mut start = vec![0u32; n + 1];
        for &(w, _) in edges {
            start[w as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut deps = vec![0u32; edges.len()];
        for &(w, d) in edges {
            deps[fill[w as usize] as usize] = d;
            fill[w as usize] += 1;
        }
        // Depth-first post-order, iterative (a 100,000-deep chain is fine).
        const UNSEEN: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let mut mark = vec![UNSEEN; n];
        let mut order = Vec::with_capacity(n);
        let mut stack: Vec<(u32, u32)> = Vec::new();
        for root in 0..n as u32 {
            if mark[root as usize] != UNSEEN {
                continue;
            }
            mark[root as usize] = OPEN;
            stack.push((root, start[root as usize]));
            while let Some(&mut (g, ref mut next)) = stack.last_mut() {
                if *next < start[g as usize + 1] {
                    let d = deps[*next as usize];
                    *next += 1;
                    // An input still open is on a cycle (impossible in Nix's graph): ignored.
                    if mark[d as usize] == UNSEEN {
                        mark[d as usize] = OPEN;
                        stack.push((d, start[d as usize]));
                    }
                    continue;
                }
                mark[g as usize] = DONE;
                order.push(g);
                stack.pop();
            }
        }
        DepGraph {
            structure: view.structure,
            start,
            deps,
            order,
        }
    }

    fn deps(&self, g: u32) -> &[u32] {
        &self.deps[self.start[g as usize] as usize..self.start[g as usize + 1] as usize]
    }

    /// For every goal, its `weight` plus the heaviest chain of goals it waits for.
    fn longest_chains(&self, weight: &[u64]) -> Vec<u64> {
        let mut chain = vec![0u64; weight.len()];
        for &g in &self.order {
            let heaviest = self
                .deps(g)
                .iter()
                .map(|&d| chain[d as usize])
                .max()
                .unwrap_or(0);
            chain[g as usize] = weight[g as usize].saturating_add(heaviest);
        }
        chain
    }
}

/// The estimate at `now` (see [`eta_with`]; this builds the graph first).
pub fn eta(view: &ViewState, now: Time) -> Eta {
    eta_with(view, &DepGraph::of(view), now)
}

/// The estimate at `now`, on `graph` (built from this view).
pub fn eta_with(view: &ViewState, graph: &DepGraph, now: Time) -> Eta {
    let links = &view.links;
    let (mut sum, mut count) = (0u64, 0u64);
    for (c, &e) in links.category.iter().zip(&links.expected) {
        if !c.is_done() && e != UNKNOWN {
            sum += u64::from(e);
            count += 1;
        }
    }
    let fallback = sum.checked_div(count).unwrap_or(0);
    let expected = |g: usize| match links.expected[g] {
        UNKNOWN => fallback,
        e => u64::from(e),
    };
    // Remaining work of each goal alone: all of it for waiting goals, what is left of it for
    // running ones.
    let mut own: Vec<u64> = (0..view.goals.len())
        .map(|g| {
            if links.category[g].is_done() {
                0
            } else {
                expected(g)
            }
        })
        .collect();
    let running = view.build_slots.iter().chain(&view.substitution_slots);
    for &g in running.flatten() {
        let total = own[g as usize];
        let ran = view.goals[g as usize].elapsed(now).unwrap_or(0);
        own[g as usize] = total.saturating_sub(ran).max(SMALL_MS.min(total));
    }
    let total: u64 = own.iter().sum();
    let longest = graph.longest_chains(&own).into_iter().max().unwrap_or(0);
    let slots = u64::from(view.controls.max_jobs.max(1));
    Eta {
        remaining_ms: longest.max(total.div_ceil(slots)),
        known: count > 0,
    }
}

/// The critical path of what ran (see [`critical_path_with`]; this builds the graph first).
pub fn critical_path(view: &ViewState) -> (u64, Vec<u32>) {
    critical_path_with(view, &DepGraph::of(view))
}

/// The critical path of what ran: the chain of goals, each waiting for the next, with the
/// largest sum of build (and substitution) times; its total and its goals from the top down.
pub fn critical_path_with(view: &ViewState, graph: &DepGraph) -> (u64, Vec<u32>) {
    let weight: Vec<u64> = view
        .goals
        .iter()
        .map(|g| match (g.started, g.stopped) {
            (Some(a), Some(b)) => b.millis_since(a),
            _ => 0,
        })
        .collect();
    let chain = graph.longest_chains(&weight);
    let Some(start) =
        (0..view.goals.len() as u32).max_by_key(|&g| (chain[g as usize], u32::MAX - g))
    else {
        return (0, Vec::new());
    };
    let total = chain[start as usize];
    let mut path = vec![start];
    let mut g = start;
    // The graph is acyclic; the bound only guards against a broken event stream.
    while path.len() <= view.goals.len() {
        let Some(d) = graph
            .deps(g)
            .iter()
            .copied()
            .filter(|&d| chain[d as usize] > 0)
            .max_by_key(|&d| chain[d as usize])
        else {
            break;
        };
        path.push(d);
        g = d;
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
