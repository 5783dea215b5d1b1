//! The keymap: which key does what. One table serves both the key handling and the help
//! overlay, so the overlay lists every key there is.
//!
//! Vim's `j` moves down, but `k` toggles keep-going (the engine's own letter, as in
//! `nix-build -k`), so up is `K` besides the arrow and `Ctrl-p`.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key asks for; [`super::ui::Ui`] interprets it for the focused pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    /// Fold the selected goal, or go to its parent.
    Collapse,
    /// Unfold the selected goal, or go to its first child.
    Expand,
    ToggleFold,
    NextPane,
    PrevPane,
    /// Show the selected goal's log (focus the log pane).
    Open,
    Cancel,
    CancelAll,
    Retry,
    KeepGoing,
    MoreJobs,
    FewerJobs,
    Drain,
    Pause,
    Quit,
    /// Ctrl-C: stop everything without asking; twice: leave at once.
    Interrupt,
    Help,
    Search,
    NextMatch,
    PrevMatch,
    Filter,
    Interleaved,
    Messages,
    Follow,
    Escape,
}

/// A key binding: the keys, how the help overlay names them, what they do.
pub struct Binding {
    pub keys: &'static [(KeyCode, KeyModifiers)],
    pub label: &'static str,
    pub help: &'static str,
    pub action: Action,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const SHIFT: KeyModifiers = KeyModifiers::SHIFT;
const CTRL: KeyModifiers = KeyModifiers::CONTROL;

/// Every key, in the order the help overlay lists them.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[
            (KeyCode::Up, NONE),
            (KeyCode::Char('K'), SHIFT),
            (KeyCode::Char('p'), CTRL),
        ],
        label: "↑ K ^p",
        help: "move up / scroll the log",
        action: Action::Up,
    },
    Binding {
        keys: &[
            (KeyCode::Down, NONE),
            (KeyCode::Char('j'), NONE),
            (KeyCode::Char('n'), CTRL),
        ],
        label: "↓ j ^n",
        help: "move down / scroll the log",
        action: Action::Down,
    },
    Binding {
        keys: &[(KeyCode::PageUp, NONE), (KeyCode::Char('u'), CTRL)],
        label: "PgUp ^u",
        help: "page up",
        action: Action::PageUp,
    },
    Binding {
        keys: &[(KeyCode::PageDown, NONE), (KeyCode::Char('d'), CTRL)],
        label: "PgDn ^d",
        help: "page down",
        action: Action::PageDown,
    },
    Binding {
        keys: &[(KeyCode::Home, NONE), (KeyCode::Char('g'), NONE)],
        label: "Home g",
        help: "first goal / log start",
        action: Action::Top,
    },
    Binding {
        keys: &[(KeyCode::End, NONE), (KeyCode::Char('G'), SHIFT)],
        label: "End G",
        help: "last goal / follow the log",
        action: Action::Bottom,
    },
    Binding {
        keys: &[(KeyCode::Left, NONE), (KeyCode::Char('h'), NONE)],
        label: "← h",
        help: "fold, or go to dependent",
        action: Action::Collapse,
    },
    Binding {
        keys: &[(KeyCode::Right, NONE), (KeyCode::Char('l'), NONE)],
        label: "→ l",
        help: "unfold, or go to input",
        action: Action::Expand,
    },
    Binding {
        keys: &[(KeyCode::Char(' '), NONE), (KeyCode::Char('z'), NONE)],
        label: "Space z",
        help: "fold / unfold",
        action: Action::ToggleFold,
    },
    Binding {
        keys: &[(KeyCode::Tab, NONE)],
        label: "Tab",
        help: "next pane",
        action: Action::NextPane,
    },
    Binding {
        keys: &[(KeyCode::BackTab, SHIFT), (KeyCode::BackTab, NONE)],
        label: "S-Tab",
        help: "previous pane",
        action: Action::PrevPane,
    },
    Binding {
        keys: &[(KeyCode::Enter, NONE)],
        label: "Enter",
        help: "show the goal's log",
        action: Action::Open,
    },
    Binding {
        keys: &[(KeyCode::Char('c'), NONE)],
        label: "c",
        help: "cancel the goal (asks)",
        action: Action::Cancel,
    },
    Binding {
        keys: &[(KeyCode::Char('C'), SHIFT)],
        label: "C",
        help: "cancel everything (asks)",
        action: Action::CancelAll,
    },
    Binding {
        keys: &[(KeyCode::Char('r'), NONE)],
        label: "r",
        help: "retry failed/cancelled goal",
        action: Action::Retry,
    },
    Binding {
        keys: &[(KeyCode::Char('k'), NONE)],
        label: "k",
        help: "toggle keep-going",
        action: Action::KeepGoing,
    },
    Binding {
        keys: &[
            (KeyCode::Char('+'), NONE),
            (KeyCode::Char('+'), SHIFT),
            (KeyCode::Char('='), NONE),
        ],
        label: "+",
        help: "one more build slot",
        action: Action::MoreJobs,
    },
    Binding {
        keys: &[(KeyCode::Char('-'), NONE)],
        label: "-",
        help: "one build slot less",
        action: Action::FewerJobs,
    },
    Binding {
        keys: &[(KeyCode::Char('d'), NONE)],
        label: "d",
        help: "drain: no new builds (asks)",
        action: Action::Drain,
    },
    Binding {
        keys: &[(KeyCode::Char('p'), NONE)],
        label: "p",
        help: "pause / resume scheduling",
        action: Action::Pause,
    },
    Binding {
        keys: &[(KeyCode::Char('/'), NONE)],
        label: "/",
        help: "search goals / the log",
        action: Action::Search,
    },
    Binding {
        keys: &[(KeyCode::Char('n'), NONE)],
        label: "n",
        help: "next match",
        action: Action::NextMatch,
    },
    Binding {
        keys: &[(KeyCode::Char('N'), SHIFT)],
        label: "N",
        help: "previous match",
        action: Action::PrevMatch,
    },
    Binding {
        keys: &[(KeyCode::Char('f'), NONE)],
        label: "f",
        help: "filter all/run/fail/wait",
        action: Action::Filter,
    },
    Binding {
        keys: &[(KeyCode::Char('a'), NONE)],
        label: "a",
        help: "all builds' log / the goal's",
        action: Action::Interleaved,
    },
    Binding {
        keys: &[(KeyCode::Char('F'), SHIFT)],
        label: "F",
        help: "follow the log",
        action: Action::Follow,
    },
    Binding {
        keys: &[(KeyCode::Char('m'), NONE)],
        label: "m",
        help: "engine messages pane",
        action: Action::Messages,
    },
    Binding {
        keys: &[(KeyCode::Char('?'), NONE), (KeyCode::Char('?'), SHIFT)],
        label: "?",
        help: "this help",
        action: Action::Help,
    },
    Binding {
        keys: &[(KeyCode::Esc, NONE)],
        label: "Esc",
        help: "close, clear, answer no",
        action: Action::Escape,
    },
    Binding {
        keys: &[(KeyCode::Char('q'), NONE)],
        label: "q",
        help: "quit (asks while running)",
        action: Action::Quit,
    },
    Binding {
        keys: &[(KeyCode::Char('c'), CTRL)],
        label: "^c",
        help: "stop builds, quit; 2x: now",
        action: Action::Interrupt,
    },
];

/// The action of a key press (releases and repeats of some terminals are ignored).
pub fn action(key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    // Terminals differ on whether Shift comes with upper-case letters and symbols.
    let mods = key.modifiers & (KeyModifiers::SHIFT | KeyModifiers::CONTROL);
    let plain = mods - KeyModifiers::SHIFT;
    BINDINGS
        .iter()
        .find(|b| {
            b.keys.iter().any(|&(code, m)| {
                code == key.code
                    && (m == mods || (m - KeyModifiers::SHIFT == plain && is_char(code)))
            })
        })
        .map(|b| b.action)
}

fn is_char(code: KeyCode) -> bool {
    matches!(code, KeyCode::Char(_) | KeyCode::BackTab)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn letters_map_with_or_without_shift_reported() {
        assert_eq!(
            action(&key(KeyCode::Char('C'), NONE)),
            Some(Action::CancelAll)
        );
        assert_eq!(
            action(&key(KeyCode::Char('C'), SHIFT)),
            Some(Action::CancelAll)
        );
        assert_eq!(action(&key(KeyCode::Char('c'), NONE)), Some(Action::Cancel));
        assert_eq!(
            action(&key(KeyCode::Char('c'), CTRL)),
            Some(Action::Interrupt)
        );
        assert_eq!(
            action(&key(KeyCode::Char('k'), NONE)),
            Some(Action::KeepGoing)
        );
        assert_eq!(action(&key(KeyCode::Char('K'), SHIFT)), Some(Action::Up));
        assert_eq!(action(&key(KeyCode::Char('x'), NONE)), None);
    }

    #[test]
    fn every_key_means_one_thing() {
        let mut seen = std::collections::HashSet::new();
        for b in BINDINGS {
            for k in b.keys {
                assert!(seen.insert(*k), "{k:?} is bound twice");
            }
            assert_eq!(action(&key(b.keys[0].0, b.keys[0].1)), Some(b.action));
        }
    }
}
