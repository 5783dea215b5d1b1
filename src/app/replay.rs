//! `drover replay FILE [--speed X]`: plays a recording into a line front-end. With `--speed`
//! each event is shown at its recorded time divided by X; without it, as fast as possible.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::app::AppError;
use crate::app::output::{LogFormat, StdOutput};
use crate::app::record::Recording;
use crate::engine::api::EventKind;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Play this many times faster than recorded (default: as fast as possible).
    #[arg(long, value_parser = parse_speed)]
    pub speed: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
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
pub fn replay(args: &ReplayArgs) -> Result<u8, AppError> {
    let recording = Recording::open(&args.file)?;
    let mut output = StdOutput::stdio(args.log_format);
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
