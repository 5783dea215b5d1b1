//! `drover monitor`: follows a real Nix build from its `--log-format internal-json` stream
//! (standard input or `--json FILE`) and shows it with drover's front-ends.
//!
//! [`MonitorEvents`] is the whole idea: an iterator of drover [`Event`]s read from the
//! stream, the goal graph taken from the `.drv` files the stream names (read from the store
//! given with `--store`, by default the real `/nix/store`). Any front-end consumes it: the
//! line outputs here, the TUI (read-only: cancel and retry do not apply to a Nix process;
//! see `app::watch`).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::app::AppError;
use crate::app::nix_json::{DrvInfo, DrvSource, NixJsonParser};
use crate::app::output::{LogFormat, StdOutput};
use crate::app::record::{Recorded, Recorder};
use crate::app::tui::{self, TuiOptions};
use crate::app::watch::{self, Pace};
use crate::engine::api::{Event, EventKind, Level, Time};
use crate::engine::format::derivation::{Derivation, DerivationOutput};
use crate::engine::format::{StoreDir, StorePath};
use crate::engine::store::config::DEFAULT_STORE_DIR;
use crate::engine::store::{EnvOverrides, StoreConfig};

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Read the stream from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The store the `.drv` files are in (as `--store` of Nix: a directory for a chroot
    /// store, `local?root=…`); default the real /nix/store.
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// Output format (default: the TUI when standard output is a terminal, plain otherwise).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Also save the event stream to this file, for `drover replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// Reads `.drv` files from a store's directory.
pub struct StoreDrvs {
    store_dir: StoreDir,
    real_store_dir: PathBuf,
}

impl StoreDrvs {
    /// The store named like Nix's `--store`, or the real `/nix/store`.
    pub fn open(store: Option<&str>) -> Result<StoreDrvs, AppError> {
        let config = match store {
            Some(uri) => StoreConfig::parse(Some(uri), &EnvOverrides::from_env())?,
            None => {
                let dir = StoreDir::new(DEFAULT_STORE_DIR)?;
                StoreConfig {
                    real_store_dir: PathBuf::from(DEFAULT_STORE_DIR),
                    state_dir: PathBuf::from("/nix/var/nix"),
                    log_dir: PathBuf::from("/nix/var/log/nix"),
                    store_dir: dir,
                }
            }
        };
        Ok(StoreDrvs {
            store_dir: config.store_dir,
            real_store_dir: config.real_store_dir,
        })
    }
}

impl DrvSource for StoreDrvs {
    fn derivation(&mut self, drv_path: &str) -> Option<DrvInfo> {
        let path: StorePath = self.store_dir.parse(drv_path).ok()?;
        let bytes = std::fs::read(self.real_store_dir.join(path.base_name())).ok()?;
        let drv = Derivation::parse(&bytes, &self.store_dir).ok()?;
        let outputs = drv
            .outputs
            .iter()
            .map(|(name, o)| (name.clone(), o.path().map(|p| self.store_dir.display(p))))
            .collect();
        let input_drvs = drv
            .input_drvs
            .keys()
            .map(|p| self.store_dir.display(p))
            .collect();
        let fixed_output = drv
            .outputs
            .values()
            .any(|o| matches!(o, DerivationOutput::Fixed { .. }));
        Some(DrvInfo {
            outputs,
            input_drvs,
            fixed_output,
        })
    }
}

/// The events of a Nix build read from its internal-json stream, as they arrive. Malformed
/// records become warnings naming their line; the stream's end ends the run.
pub struct MonitorEvents<R> {
    input: R,
    /// The line being read (bytes: a stream may hold invalid UTF-8 outside `@nix` records).
    line: Vec<u8>,
    parser: NixJsonParser,
    clock: Box<dyn FnMut() -> Time>,
    pending: std::vec::IntoIter<Event>,
    buffer: Vec<Event>,
    done: bool,
}

impl<R: BufRead> MonitorEvents<R> {
    /// Events from `input`; `drvs` reads the `.drv` files for the goal graph; times come from
    /// `clock`.
    pub fn new(
        input: R,
        drvs: Option<Box<dyn DrvSource>>,
        clock: Box<dyn FnMut() -> Time>,
    ) -> MonitorEvents<R> {
        MonitorEvents {
            input,
            line: Vec::with_capacity(4096),
            parser: NixJsonParser::new(drvs),
            clock,
            pending: Vec::new().into_iter(),
            buffer: Vec::new(),
            done: false,
        }
    }

    /// Times in milliseconds since now.
    pub fn real_time() -> Box<dyn FnMut() -> Time> {
        let start = Instant::now();
        Box::new(move || Time(start.elapsed().as_millis() as u64))
    }
}

impl<R: BufRead> Iterator for MonitorEvents<R> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.next() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.clear();
            self.line.clear();
            match self.input.read_until(b'\n', &mut self.line) {
                Ok(n) if n > 0 => {
                    let now = (self.clock)();
                    let bytes = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
                    let line = String::from_utf8_lossy(bytes);
                    if let Err(e) = self.parser.line(&line, now, &mut buffer) {
                        self.parser
                            .message(Level::Warn, e.to_string(), now, &mut buffer);
                    }
                }
                end => {
                    let now = (self.clock)();
                    if let Err(e) = end {
                        let text = format!("reading the stream: {e}");
                        self.parser.message(Level::Error, text, now, &mut buffer);
                    }
                    self.parser.finish(now, &mut buffer);
                    self.done = true;
                }
            }
            self.pending = buffer.into_iter();
        }
    }
}

/// Runs the monitor; returns the exit status Nix's own would have had (see `NixJsonParser`).
/// On a terminal it shows the TUI (read-only), which reads keys from the terminal even when
/// the stream comes on standard input.
pub fn monitor(args: &MonitorArgs) -> Result<u8, AppError> {
    let drvs = StoreDrvs::open(args.store.as_deref())?;
    // Opened here, so a missing file is an error before the screen changes.
    let file = match &args.json {
        Some(path) => Some(File::open(path).map_err(|e| AppError::io("opening", path, e))?),
        None => None,
    };
    let recorder = match &args.record {
        Some(path) => Some(Recorder::create(path, "monitor")?),
        None => None,
    };
    let format = args
        .log_format
        .unwrap_or(if tui::is_terminal_for_watching() {
            LogFormat::Tui
        } else {
            LogFormat::Plain
        });
    let events = move || {
        let input: Box<dyn BufRead> = match file {
            Some(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
            None => Box::new(io::stdin().lock()),
        };
        let clock = MonitorEvents::<Box<dyn BufRead>>::real_time();
        let events = MonitorEvents::new(input, Some(Box::new(drvs)), clock);
        Recorded::new(events, recorder).map(|e| e.map_err(AppError::from))
    };
    if format == LogFormat::Tui {
        let mut options = TuiOptions::new("drover monitor", 0, false);
        options.read_only = Some("watching a Nix build".into());
        return watch::show_in_tui(events, Pace::AsRead, options);
    }
    let live = args.json.is_none();
    let mut output = StdOutput::stdio(format);
    let mut exit_status = 0;
    for event in events() {
        let event = event?;
        if let EventKind::RunDone { exit_status: s } = event.kind {
            exit_status = s;
        }
        output.event(&event).map_err(AppError::Stdout)?;
        if live {
            output.flush().map_err(AppError::Stdout)?;
        }
    }
    output.flush().map_err(AppError::Stdout)?;
    Ok(exit_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_ends_the_run_and_bad_lines_become_numbered_warnings() {
        let input: &[u8] =
            b"hello\n\xffbad\n@nix {\"action\":\"msg\",\"level\":3,\"msg\":\"hi\"}\n@nix {oops";
        let mut t = 0;
        let clock = Box::new(move || {
            t += 5;
            Time(t)
        });
        let events: Vec<Event> = MonitorEvents::new(input, None, clock).collect();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        let texts: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Message { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts[..3], ["hello", "\u{fffd}bad", "hi"]);
        assert!(
            texts[3].starts_with("line 4: malformed @nix record: "),
            "{}",
            texts[3]
        );
        assert_eq!(events[0].time, Time(5));
        assert!(matches!(
            events.last().unwrap().kind,
            EventKind::RunDone { exit_status: 0 }
        ));
    }
}
