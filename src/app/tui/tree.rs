//! The rows of the goal graph pane: the tree of the view state flattened depth first, top
//! goals first, failed and running goals floating up among their siblings, folded subtrees
//! skipped. A filter or a search keeps the matching goals and the goals above them (folding
//! is then ignored, so every match shows). Substitution goals that ended without a substitute
//! (the derivation builds instead) are noise and not shown.

use rustc_hash::FxHashSet;

use super::state::{Category, Links, NONE, ViewState};

/// Which goals the graph pane shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Filter {
    #[default]
    All,
    Running,
    Failed,
    Waiting,
}

impl Filter {
    pub fn next(self) -> Filter {
        match self {
            Filter::All => Filter::Running,
            Filter::Running => Filter::Failed,
            Filter::Failed => Filter::Waiting,
            Filter::Waiting => Filter::All,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Running => "running",
            Filter::Failed => "failed",
            Filter::Waiting => "waiting",
        }
    }

    fn accepts(self, c: Category) -> bool {
        match self {
            Filter::All => true,
            Filter::Running => c.is_running(),
            Filter::Failed => c.is_failure(),
            Filter::Waiting => c == Category::Waiting,
        }
    }
}

/// One line of the graph pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub goal: u32,
    pub depth: u32,
    /// Whether the goal has children in the tree (shown or not).
    pub has_children: bool,
    /// It matches the search.
    pub matched: bool,
}

/// Whether `name` contains `needle` (already lower case), ignoring ASCII case.
pub fn matches(name: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let (h, n) = (name.as_bytes(), needle.as_bytes());
    h.len() >= n.len()
        && h.windows(n.len())
            .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

/// Flattens the tree into `out`. `search` is lower case; empty means no search.
pub fn build_rows(
    view: &ViewState,
    folded: &FxHashSet<u32>,
    filter: Filter,
    search: &str,
    out: &mut Vec<Row>,
) {
    out.clear();
    let links = &view.links;
    let n = view.goals.len();
    let selective = filter != Filter::All || !search.is_empty();
    // With a filter or a search: the goals to keep are the matches and their ancestors.
    let mut keep = Vec::new();
    if selective {
        keep = vec![false; n];
        for g in 0..n {
            let hit = filter.accepts(links.category[g])
                && (search.is_empty() || matches(&view.goals[g].name, search));
            if !hit {
                continue;
            }
            let mut a = g as u32;
            let mut steps = 0;
            while a != NONE && !keep[a as usize] && steps <= n {
                keep[a as usize] = true;
                a = links.parent[a as usize];
                steps += 1;
            }
        }
    }
    let mut visited = vec![false; n];
    let mut stack: Vec<(u32, u32)> = Vec::new();
    let mut scratch = Vec::new();
    // Goals whose tree parent never arrived (lost events) show as roots at the end: they are
    // pushed first, so they pop last.
    let orphans =
        (0..n as u32).filter(|&g| links.parent[g as usize] == NONE && !links.top[g as usize]);
    push_ordered(links, orphans, 0, &mut stack, &mut scratch);
    push_ordered(
        links,
        view.tops.iter().copied(),
        0,
        &mut stack,
        &mut scratch,
    );
    while let Some((g, depth)) = stack.pop() {
        let gi = g as usize;
        if visited[gi] || (selective && !keep[gi]) {
            continue;
        }
        visited[gi] = true;
        let has_children = links.has_children(g);
        if links.category[gi] == Category::Skipped && !has_children {
            continue;
        }
        out.push(Row {
            goal: g,
            depth,
            has_children,
            matched: !search.is_empty() && matches(&view.goals[gi].name, search),
        });
        if has_children && (selective || folded.is_empty() || !folded.contains(&g)) {
            push_ordered(
                links,
                links.children(g),
                depth + 1,
                &mut stack,
                &mut scratch,
            );
        }
    }
}

/// Pushes `goals` so that they pop in sibling order: by rank, then as given.
fn push_ordered(
    links: &Links,
    goals: impl Iterator<Item = u32>,
    depth: u32,
    stack: &mut Vec<(u32, u32)>,
    scratch: &mut Vec<(u8, u32)>,
) {
    scratch.clear();
    scratch.extend(goals.map(|c| (links.category[c as usize].rank(), c)));
    // Stable: siblings of a rank stay in the order they were given.
    scratch.sort_by_key(|&(rank, _)| rank);
    stack.extend(scratch.iter().rev().map(|&(_, c)| (c, depth)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tui::state::tests::{Script, view_of};
    use crate::engine::api::BuildStatus;

    fn names(view: &ViewState, rows: &[Row]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{}{}",
                    "  ".repeat(r.depth as usize),
                    view.goals[r.goal as usize].name
                )
            })
            .collect()
    }

    fn graph() -> Script {
        let mut s = Script::default();
        s.add(0, 0, "app", true)
            .add(0, 1, "gtk", false)
            .add(0, 2, "zlib", false)
            .add(0, 3, "openssl", false)
            .edge(0, 0, 1)
            .edge(0, 0, 2)
            .edge(0, 1, 3)
            .build(0, 2, 0)
            .build(0, 3, 1)
            .done(5, 3, BuildStatus::PermanentFailure);
        s
    }

    #[test]
    fn failures_and_running_goals_float_up() {
        let v = view_of(&graph().events);
        let mut rows = Vec::new();
        build_rows(&v, &FxHashSet::default(), Filter::All, "", &mut rows);
        // gtk is waiting, zlib builds: zlib first.
        assert_eq!(
            names(&v, &rows),
            vec!["app", "  zlib", "  gtk", "    openssl"]
        );
        assert!(rows[2].has_children && !rows[1].has_children);
    }

    #[test]
    fn folding_hides_a_subtree() {
        let v = view_of(&graph().events);
        let mut rows = Vec::new();
        let folded: FxHashSet<u32> = [1].into_iter().collect();
        build_rows(&v, &folded, Filter::All, "", &mut rows);
        assert_eq!(names(&v, &rows), vec!["app", "  zlib", "  gtk"]);
    }

    #[test]
    fn filters_and_searches_keep_the_path_to_each_match() {
        let v = view_of(&graph().events);
        let mut rows = Vec::new();
        let folded: FxHashSet<u32> = [1].into_iter().collect();
        build_rows(&v, &folded, Filter::Failed, "", &mut rows);
        assert_eq!(names(&v, &rows), vec!["app", "  gtk", "    openssl"]);
        build_rows(&v, &folded, Filter::All, "ZLI", &mut rows);
        assert!(rows.is_empty(), "the search is lower case already");
        build_rows(&v, &folded, Filter::All, "zli", &mut rows);
        assert_eq!(names(&v, &rows), vec!["app", "  zlib"]);
        assert!(rows[1].matched && !rows[0].matched);
        build_rows(&v, &folded, Filter::Running, "ssl", &mut rows);
        assert!(rows.is_empty());
    }

    #[test]
    fn case_is_ignored_in_names() {
        assert!(matches("OpenSSL-3.0", "ssl"));
        assert!(!matches("zlib", ""));
        assert!(!matches("z", "zlib"));
    }
}
