//! Recordings of a run's event stream, for `drover replay`: JSON lines, a header first
//! (`{"format":"drover-events","version":1,…}`), then every event as `app::json` writes it.
//! The events carry their times, so a replay can keep (or scale) the original pace.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::app::json;
use crate::engine::api::Event;

/// The `format` of a recording's header.
pub const FORMAT: &str = "drover-events";
/// The version this drover writes and reads.
pub const VERSION: u32 = 1;

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The drover version that recorded it.
    pub drover: String,
    /// What was recorded (`simulate`, `build`, `monitor`).
    pub command: String,
}

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("{action} recording '{}': {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("'{}' is not a drover recording (no {FORMAT} header on line 1)", path.display())]
    NotARecording { path: PathBuf },
    #[error("recording '{}' has version {found}; this drover reads version {VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("recording '{}', line {line}: {message}", path.display())]
    BadEvent {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

/// Writes a recording.
pub struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path, command: &str) -> Result<Recorder, RecordError> {
        let io_err = |source| RecordError::Io {
            action: "creating",
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_err)?;
        let mut r = Recorder {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 16, file),
        };
        let header = Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            drover: env!("CARGO_PKG_VERSION").to_owned(),
            command: command.to_owned(),
        };
        serde_json::to_writer(&mut r.out, &header)
            .map_err(io::Error::other)
            .and_then(|()| r.out.write_all(b"\n"))
            .map_err(|e| r.error(e))?;
        Ok(r)
    }

    fn error(&self, source: io::Error) -> RecordError {
        RecordError::Io {
            action: "writing",
            path: self.path.clone(),
            source,
        }
    }

    pub fn event(&mut self, e: &Event) -> Result<(), RecordError> {
        json::write_event(e, &mut self.out).map_err(|e| self.error(e))
    }

    /// Flushes the file.
    pub fn finish(mut self) -> Result<(), RecordError> {
        self.out.flush().map_err(|e| self.error(e))
    }
}

/// Events passed on as they are written to a recording (if any); the recording is finished
/// when the events end. A write error is passed on, and the recording is dropped.
pub struct Recorded<I> {
    events: I,
    recorder: Option<Recorder>,
}

impl<I: Iterator<Item = Event>> Recorded<I> {
    pub fn new(events: I, recorder: Option<Recorder>) -> Recorded<I> {
        Recorded { events, recorder }
    }
}

impl<I: Iterator<Item = Event>> Iterator for Recorded<I> {
    type Item = Result<Event, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        let Some(e) = self.events.next() else {
            return self.recorder.take().and_then(|r| r.finish().err()).map(Err);
        };
        if let Some(r) = &mut self.recorder
            && let Err(err) = r.event(&e)
        {
            self.recorder = None;
            return Some(Err(err));
        }
        Some(Ok(e))
    }
}

/// Reads a recording: its header, then its events in order.
pub struct Recording<R> {
    path: PathBuf,
    header: Header,
    lines: io::Lines<R>,
    line: u64,
}

impl Recording<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let file = File::open(path).map_err(|source| RecordError::Io {
            action: "opening",
            path: path.to_owned(),
            source,
        })?;
        Recording::from_reader(BufReader::with_capacity(1 << 16, file), path)
    }
}

impl<R: BufRead> Recording<R> {
    /// Reads the header from `reader`; `path` names the recording in errors.
    pub fn from_reader(reader: R, path: &Path) -> Result<Self, RecordError> {
        let mut lines = reader.lines();
        let first = match lines.next() {
            Some(Ok(l)) => l,
            Some(Err(source)) => {
                return Err(RecordError::Io {
                    action: "reading",
                    path: path.to_owned(),
                    source,
                });
            }
            None => String::new(),
        };
        let header: Header = serde_json::from_str(&first)
            .ok()
            .filter(|h: &Header| h.format == FORMAT)
            .ok_or_else(|| RecordError::NotARecording {
                path: path.to_owned(),
            })?;
        if header.version != VERSION {
            return Err(RecordError::Version {
                path: path.to_owned(),
                found: header.version,
            });
        }
        Ok(Recording {
            path: path.to_owned(),
            header,
            lines,
            line: 1,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }
}

impl<R: BufRead> Iterator for Recording<R> {
    type Item = Result<Event, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = self.lines.next()?;
            self.line += 1;
            let line = match line {
                Ok(l) => l,
                Err(source) => {
                    return Some(Err(RecordError::Io {
                        action: "reading",
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&line).map_err(|e| RecordError::BadEvent {
                    path: self.path.clone(),
                    line: self.line,
                    message: e.to_string(),
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::{EventKind, Time};

    #[test]
    fn a_recording_reads_back_its_header_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let events: Vec<Event> = (0..3)
            .map(|i| Event {
                seq: i,
                time: Time(i * 10),
                kind: EventKind::RunDone {
                    exit_status: i as u8,
                },
            })
            .collect();
        let mut r = Recorder::create(&path, "simulate").unwrap();
        for e in &events {
            r.event(e).unwrap();
        }
        r.finish().unwrap();
        let rec = Recording::open(&path).unwrap();
        assert_eq!(rec.header().command, "simulate");
        assert_eq!(rec.header().version, VERSION);
        let back: Vec<Event> = rec.map(Result::unwrap).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn recorded_events_pass_through_and_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let events: Vec<Event> = (0..4)
            .map(|i| Event {
                seq: i,
                time: Time(i),
                kind: EventKind::RunDone { exit_status: 0 },
            })
            .collect();
        let recorder = Recorder::create(&path, "monitor").unwrap();
        let passed: Vec<Event> = Recorded::new(events.clone().into_iter(), Some(recorder))
            .map(Result::unwrap)
            .collect();
        assert_eq!(passed, events);
        let back: Vec<Event> = Recording::open(&path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, events);
    }

    #[test]
    fn other_files_and_versions_are_refused_and_bad_lines_named() {
        fn read(text: &str) -> Result<Recording<&[u8]>, RecordError> {
            Recording::from_reader(text.as_bytes(), Path::new("x.jsonl"))
        }
        assert!(matches!(read(""), Err(RecordError::NotARecording { .. })));
        assert!(matches!(
            read("{\"seq\":0}\n"),
            Err(RecordError::NotARecording { .. })
        ));
        let v2 = r#"{"format":"drover-events","version":2,"drover":"9","command":"x"}"#;
        let e = read(v2).err().unwrap();
        assert_eq!(
            e.to_string(),
            "recording 'x.jsonl' has version 2; this drover reads version 1"
        );
        let text = format!(
            "{}\n{}\n\nnot json\n",
            r#"{"format":"drover-events","version":1,"drover":"0","command":"x"}"#,
            r#"{"seq":0,"time":5,"type":"run_done","exit_status":0}"#
        );
        let mut rec = read(&text).unwrap();
        assert!(rec.next().unwrap().is_ok());
        let e = rec.next().unwrap().unwrap_err();
        assert!(
            e.to_string().starts_with("recording 'x.jsonl', line 4: "),
            "{e}"
        );
    }
}
