//! The terminal's modes: raw mode, the alternate screen, mouse capture and a hidden cursor
//! while the TUI runs, and the way back to a normal terminal on every exit path: drop of the
//! [`TerminalGuard`], a panic (the hook restores before the message prints), or an error.
//! The TUI draws on standard error, as Nix draws its progress: standard output stays free for
//! what a command prints (the output paths of a build).

use std::io::{self, Stderr, Write};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Whether the terminal is in the TUI's modes (so a panic knows to restore it).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Puts the terminal back as it was; harmless when it already is, or when it is gone.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = io::stderr();
        let _ = execute!(out, DisableMouseCapture, LeaveAlternateScreen, cursor::Show);
        let _ = disable_raw_mode();
        let _ = out.flush();
    }
}

/// The TUI's terminal; restores the terminal when dropped.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stderr>>,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen, captures the mouse, and makes sure a panic
    /// restores the terminal first.
    pub fn enter() -> io::Result<TerminalGuard> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = io::stderr();
        if let Err(e) = execute!(out, EnterAlternateScreen, EnableMouseCapture, cursor::Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(io::stderr())) {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
