//! Nix's `--log-format internal-json`: `@nix {…}` lines of activities (`start`/`stop`),
//! their `result`s and `msg`s. [`NixJsonEmitter`] writes a drover run in this format so that
//! tools made for Nix (nix-output-monitor, CI log parsers) can follow it; [`NixJsonParser`]
//! reads a real Nix's stream back into drover [`Event`]s, so drover's front-ends can monitor
//! a Nix build.
//!
//! The record layout is Nix's `JSONLogger`: compact JSON, keys in byte order (nlohmann's
//! `std::map`), `fields` left out when empty, ids `counter + (pid << 32)`.
//!
//! [`Event`]: crate::engine::api::Event

mod emit;
mod parse;

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

pub use emit::{NixJsonEmitter, next_activity_id};
pub use parse::{DrvInfo, DrvSource, NixJsonParser, ParseError};

/// The prefix of every record line.
pub const PREFIX: &str = "@nix ";

/// Nix's `ActivityType` numbers.
pub mod activity {
    pub const UNKNOWN: u64 = 0;
    pub const COPY_PATH: u64 = 100;
    pub const FILE_TRANSFER: u64 = 101;
    pub const REALISE: u64 = 102;
    pub const COPY_PATHS: u64 = 103;
    pub const BUILDS: u64 = 104;
    pub const BUILD: u64 = 105;
    pub const OPTIMISE_STORE: u64 = 106;
    pub const VERIFY_PATHS: u64 = 107;
    pub const SUBSTITUTE: u64 = 108;
    pub const QUERY_PATH_INFO: u64 = 109;
    pub const POST_BUILD_HOOK: u64 = 110;
    pub const BUILD_WAITING: u64 = 111;
    pub const FETCH_TREE: u64 = 112;
    pub const FETCH_TO_STORE: u64 = 113;
}

/// Nix's `ResultType` numbers.
pub mod result {
    pub const FILE_LINKED: u64 = 100;
    pub const BUILD_LOG_LINE: u64 = 101;
    pub const UNTRUSTED_PATH: u64 = 102;
    pub const CORRUPTED_PATH: u64 = 103;
    pub const SET_PHASE: u64 = 104;
    pub const PROGRESS: u64 = 105;
    pub const SET_EXPECTED: u64 = 106;
    pub const POST_BUILD_LOG_LINE: u64 = 107;
    pub const FETCH_STATUS: u64 = 108;
    pub const FETCH_TO_STORE: u64 = 109;
}

/// Nix's ANSI codes around errors and highlighted names.
pub const ANSI_RED: &str = "\x1b[31;1m";
pub const ANSI_WARNING: &str = "\x1b[35;1m";
pub const ANSI_NORMAL: &str = "\x1b[0m";

/// One element of `fields`: Nix allows unsigned integers and strings only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Field<'a> {
    Int(u64),
    Str(Cow<'a, str>),
}

impl Field<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            Field::Int(_) => None,
        }
    }

    pub fn as_int(&self) -> Option<u64> {
        match self {
            Field::Int(i) => Some(*i),
            Field::Str(_) => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an unsigned integer or a string")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Int(v))
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

/// One `@nix` record, as Nix writes it. Unknown keys (`line`, `column`, `file`, `trace`) are
/// skipped when reading.
#[derive(Debug, Default, Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub level: Option<u64>,
    #[serde(default, rename = "type")]
    pub kind: Option<u64>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub parent: Option<u64>,
    /// Nix's records have at most four fields: kept inline.
    #[serde(default, borrow)]
    pub fields: SmallVec<[Field<'a>; 4]>,
    #[serde(default, borrow)]
    pub msg: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub raw_msg: Option<Cow<'a, str>>,
    /// The builder side channel's `setPhase` action.
    #[serde(default, borrow)]
    pub phase: Option<Cow<'a, str>>,
}

/// Writes records in Nix's exact layout.
struct RecordWriter<'w> {
    out: &'w mut dyn Write,
}

impl RecordWriter<'_> {
    fn string(&mut self, s: &str) -> io::Result<()> {
        serde_json::to_writer(&mut *self.out, s).map_err(io::Error::other)
    }

    fn fields(&mut self, fields: &[Field]) -> io::Result<()> {
        if fields.is_empty() {
            return Ok(());
        }
        self.out.write_all(b"\"fields\":")?;
        serde_json::to_writer(&mut *self.out, fields).map_err(io::Error::other)?;
        self.out.write_all(b",")
    }

    /// `start`, with keys in nlohmann's (sorted) order.
    fn start(
        &mut self,
        id: u64,
        level: u8,
        kind: u64,
        text: &str,
        parent: u64,
        fields: &[Field],
    ) -> io::Result<()> {
        self.out.write_all(b"@nix {\"action\":\"start\",")?;
        self.fields(fields)?;
        write!(
            self.out,
            "\"id\":{id},\"level\":{level},\"parent\":{parent},\"text\":"
        )?;
        self.string(text)?;
        writeln!(self.out, ",\"type\":{kind}}}")
    }

    fn stop(&mut self, id: u64) -> io::Result<()> {
        writeln!(self.out, "@nix {{\"action\":\"stop\",\"id\":{id}}}")
    }

    fn result(&mut self, id: u64, kind: u64, fields: &[Field]) -> io::Result<()> {
        self.out.write_all(b"@nix {\"action\":\"result\",")?;
        self.fields(fields)?;
        writeln!(self.out, "\"id\":{id},\"type\":{kind}}}")
    }

    /// A plain message (Nix's `log`).
    fn msg(&mut self, level: u8, msg: &str) -> io::Result<()> {
        write!(
            self.out,
            "@nix {{\"action\":\"msg\",\"level\":{level},\"msg\":"
        )?;
        self.string(msg)?;
        self.out.write_all(b"}\n")
    }

    /// An error or warning as Nix's `logEI` writes it: `msg` with the coloured prefix and
    /// continuation lines indented under it, `raw_msg` the text itself, no position.
    fn msg_ei(&mut self, level: u8, raw: &str) -> io::Result<()> {
        let prefix = match level {
            0 => "error",
            1 => "warning",
            _ => "info",
        };
        let colour = if level == 0 { ANSI_RED } else { ANSI_WARNING };
        let indent = format!("\n{}", " ".repeat(prefix.len() + 2));
        let msg = format!(
            "{colour}{prefix}:{ANSI_NORMAL} {}",
            raw.trim_end()
                .split('\n')
                .map(str::trim_end)
                .collect::<Vec<_>>()
                .join(&indent)
        );
        write!(
            self.out,
            "@nix {{\"action\":\"msg\",\"column\":null,\"file\":null,\"level\":{level},\"line\":null,\"msg\":"
        )?;
        self.string(&msg)?;
        self.out.write_all(b",\"raw_msg\":")?;
        self.string(raw)?;
        self.out.write_all(b"}\n")
    }
}

/// `text` without ANSI escape sequences (CSI `ESC [ … letter` and two-byte escapes).
pub fn strip_ansi(text: &str) -> Cow<'_, str> {
    if !text.contains('\x1b') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                // OSC: up to BEL or ESC \.
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' {
                        chars.next_if_eq(&'\\');
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
