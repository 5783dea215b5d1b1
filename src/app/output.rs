//! The line front-ends behind `--log-format`: each event goes to the chosen one. For
//! `simulate` and `replay`, plain lines and drover's JSON go to standard output and Nix's
//! internal-json to standard error, where Nix writes it (so `2>&1 | nom` works as it does
//! with Nix); `drover build` writes every format to standard error, as its standard output
//! carries the output paths.

use std::io::{self, BufWriter, Stderr, Stdout, Write};

use clap::ValueEnum;

use crate::app::json;
use crate::app::nix_json::NixJsonEmitter;
use crate::app::plain::PlainPrinter;
use crate::engine::api::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// The terminal UI (the default on a terminal, where a command has it; elsewhere plain).
    Tui,
    /// Lines like nix-build's, with `name>` log prefixes and a summary.
    Plain,
    /// drover's events, one JSON object per line.
    Json,
    /// Nix's `@nix` lines (as `--log-format internal-json`), on standard error.
    InternalJson,
}

/// One front-end, writing to `out` (plain, JSON) or `err` (internal-json).
pub struct Output<O: Write, E: Write> {
    format: LogFormat,
    plain: PlainPrinter,
    nix: NixJsonEmitter,
    out: O,
    err: E,
}

/// The standard streams, buffered.
pub type StdOutput = Output<BufWriter<Stdout>, BufWriter<Stderr>>;

impl StdOutput {
    pub fn stdio(format: LogFormat) -> StdOutput {
        Output::new(
            format,
            BufWriter::with_capacity(1 << 16, io::stdout()),
            BufWriter::with_capacity(1 << 16, io::stderr()),
        )
    }
}

impl<O: Write, E: Write> Output<O, E> {
    pub fn new(format: LogFormat, out: O, err: E) -> Output<O, E> {
        Output {
            format,
            plain: PlainPrinter::new(),
            nix: NixJsonEmitter::for_this_process(),
            out,
            err,
        }
    }

    /// The plain printer, to set its options.
    pub fn plain_mut(&mut self) -> &mut PlainPrinter {
        &mut self.plain
    }

    pub fn event(&mut self, e: &Event) -> io::Result<()> {
        match self.format {
            LogFormat::Plain | LogFormat::Tui => self.plain.event(e, &mut self.out),
            LogFormat::Json => json::write_event(e, &mut self.out),
            LogFormat::InternalJson => self.nix.event(e, &mut self.err),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }

    /// The writers, to inspect what was written.
    pub fn into_inner(self) -> (O, E) {
        (self.out, self.err)
    }
}
