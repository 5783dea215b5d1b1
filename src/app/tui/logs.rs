//! Bounded log buffers and where finished goals' logs come from.
//!
//! While a goal runs, its last lines live in a [`LogRing`] in the view state; an "all builds"
//! ring keeps the interleaved tail. Both are bounded and count what they dropped. Once a goal
//! is done its ring is freed: the log pane reads the whole log back from a [`LogSource`] that
//! the runner supplies (Nix's log files for real builds, [`MemoryLogs`] for a simulation).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::engine::api::{Event, EventKind, GoalId};

/// The last `capacity` items of a stream, with a count of the ones pushed out.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> Ring<T> {
    pub fn new(capacity: usize) -> Ring<T> {
        Ring {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }

    /// Items pushed out to keep the ring bounded.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn last(&self) -> Option<&T> {
        self.items.back()
    }
}

/// A running goal's last log lines.
pub type LogRing = Ring<Arc<str>>;

/// Where the log pane reads the log of a finished goal.
pub trait LogSource: Send + Sync {
    /// The whole log of `goal` (whose `.drv` or store path is `path`), line by line, or why
    /// it cannot be read.
    fn read(&self, goal: GoalId, path: &str) -> Result<Vec<String>, String>;

    /// Sees every batch of events the TUI receives (a source that keeps logs in memory
    /// takes its lines from there).
    fn record(&self, _events: &[Event]) {}
}

/// No stored logs (a monitor without access to the log directory).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLogs;

impl LogSource for NoLogs {
    fn read(&self, _goal: GoalId, _path: &str) -> Result<Vec<String>, String> {
        Err("no stored logs in this mode".into())
    }
}

/// Logs kept in memory, fed with the run's events: the log source of a simulation, whose
/// builds write no files. Each goal keeps at most `per_goal` lines (the first ones are
/// dropped and counted).
#[derive(Debug)]
pub struct MemoryLogs {
    logs: Mutex<HashMap<GoalId, Ring<String>>>,
    per_goal: usize,
}

impl MemoryLogs {
    pub fn new(per_goal: usize) -> MemoryLogs {
        MemoryLogs {
            logs: Mutex::new(HashMap::new()),
            per_goal,
        }
    }
}

impl LogSource for MemoryLogs {
    /// Takes note of the log lines in `events`; a reopened goal starts a fresh log, as a
    /// rebuild overwrites Nix's log file.
    fn record(&self, events: &[Event]) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            match &e.kind {
                EventKind::LogLine { goal, line } => logs
                    .entry(*goal)
                    .or_insert_with(|| Ring::new(self.per_goal))
                    .push(line.clone()),
                EventKind::GoalReopened { goal } => {
                    logs.remove(goal);
                }
                _ => {}
            }
        }
    }

    fn read(&self, goal: GoalId, _path: &str) -> Result<Vec<String>, String> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = logs.get(&goal) else {
            return Ok(Vec::new());
        };
        let mut lines = Vec::with_capacity(ring.len() + 1);
        if ring.dropped() > 0 {
            lines.push(format!("[{} earlier lines not kept]", ring.dropped()));
        }
        lines.extend(ring.iter().cloned());
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::Time;

    #[test]
    fn a_ring_keeps_the_last_items_and_counts_the_rest() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(r.dropped(), 2);
        assert_eq!(r.last(), Some(&4));
    }

    #[test]
    fn memory_logs_start_afresh_when_a_goal_reopens() {
        let logs = MemoryLogs::new(2);
        let line = |l: &str| Event {
            seq: 0,
            time: Time(0),
            kind: EventKind::LogLine {
                goal: GoalId(1),
                line: l.into(),
            },
        };
        logs.record(&[line("a"), line("b"), line("c")]);
        assert_eq!(
            logs.read(GoalId(1), "").unwrap(),
            vec!["[1 earlier lines not kept]", "b", "c"]
        );
        let reopened = Event {
            seq: 3,
            time: Time(0),
            kind: EventKind::GoalReopened { goal: GoalId(1) },
        };
        logs.record(&[reopened, line("d")]);
        assert_eq!(logs.read(GoalId(1), "").unwrap(), vec!["d"]);
        assert!(logs.read(GoalId(2), "").unwrap().is_empty());
    }
}
