//! JSON line output: drover's events as they are (`engine::api::Event`), one object per line,
//! for scripts and for recording.

use std::io::{self, Write};

use crate::engine::api::Event;

/// Writes one event as a JSON line.
pub fn write_event(e: &Event, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, e)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::{BuildStatus, EventKind, GoalId, GoalTimes, Time};

    #[test]
    fn json_lines_round_trip() {
        let e = Event {
            seq: 3,
            time: Time(3000),
            kind: EventKind::GoalDone {
                goal: GoalId(7),
                status: BuildStatus::Built,
                message: None,
                times: GoalTimes::default(),
            },
        };
        let mut out = Vec::new();
        write_event(&e, &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        assert_eq!(serde_json::from_str::<Event>(line.trim_end()).unwrap(), e);
    }
}
