//! `drover replay FILE [--speed X]`: plays a recording into the TUI (read-only) or a line
//! front-end. With `--speed` each event is shown at its recorded time divided by X; without
//! it, lines come as fast as possible and the TUI keeps the recorded pace.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::app::AppError;
use crate::app::output::{LogFormat, StdOutput};
use crate::app::record::Recording;
use crate::app::simulate;
use crate::app::tui::TuiOptions;
use crate::app::watch::{self, Pace};
use crate::engine::api::EventKind;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Play this many times faster than recorded (default: lines as fast as possible, the TUI
    /// at the recorded pace).
    #[arg(long, value_parser = parse_speed)]
    pub speed: Option<f64>,
    /// Output format (default: the TUI on a terminal, plain otherwise).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// A recording made with `--record`.
    pub file: PathBuf,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// Replays the recording; returns the recorded run's exit status (of its last `RunDone`).
/// On a terminal it plays into the TUI (read-only), at the recorded pace by default.
pub fn replay(args: &ReplayArgs) -> Result<u8, AppError> {
    let recording = Recording::open(&args.file)?;
    let format = simulate::log_format(args.log_format);
    if format == LogFormat::Tui {
        let speed = args.speed.unwrap_or(1.0);
        let mut options = TuiOptions::new("drover replay", 0, false);
        options.read_only = Some("watching a recording".into());
        options.clock_rate = Some(speed);
        let events = move || recording.map(|e| e.map_err(AppError::from));
        return watch::show_in_tui(events, Pace::Recorded { speed }, options);
    }
    let mut output = StdOutput::stdio(format);
    let start = Instant::now();
    let mut first = None;
    let mut exit_status = 0;
    for event in recording {
        let event = event?;
        if let Some(speed) = args.speed {
            let t0 = *first.get_or_insert(event.time);
            let due = Duration::from_secs_f64(event.time.millis_since(t0) as f64 / 1000.0 / speed);
            let now = start.elapsed();
            if due > now {
                output.flush().map_err(AppError::Stdout)?;
                std::thread::sleep(due - now);
            }
        }
        if let EventKind::RunDone { exit_status: s } = event.kind {
            exit_status = s;
        }
        output.event(&event).map_err(AppError::Stdout)?;
    }
    output.flush().map_err(AppError::Stdout)?;
    Ok(exit_status)
}
