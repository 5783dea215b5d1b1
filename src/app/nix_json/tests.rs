use super::*;

/// Lines of the real Nix 2.8 sample, for byte-for-byte comparisons.
fn sample_line(containing: &str) -> String {
    let text = include_str!("../../../tests/fixtures/internal-json/internal-json.log");
    text.lines()
        .find(|l| l.contains(containing))
        .unwrap_or_else(|| panic!("no sample line with {containing}"))
        .to_owned()
}

fn written(f: impl FnOnce(&mut RecordWriter) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut RecordWriter { out: &mut out }).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn results_stops_and_errors_are_written_byte_for_byte_as_nix_does() {
    let line = sample_line("hash mismatch in fixed-output derivation");
    let record: Record = serde_json::from_str(line.strip_prefix(PREFIX).unwrap()).unwrap();
    let raw = record.raw_msg.as_deref().unwrap();
    assert_eq!(written(|w| w.msg_ei(0, raw)), format!("{line}\n"));

    let line = sample_line(r#""fields":[0,1,0,0],"#);
    let id = line
        .split("\"id\":")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let fields = [Field::Int(0), Field::Int(1), Field::Int(0), Field::Int(0)];
    let got = written(|w| w.result(id.parse().unwrap(), result::PROGRESS, &fields));
    assert_eq!(got, format!("{line}\n"));

    let line = sample_line(r#""fields":["n0: log line 0"]"#);
    let id: u64 = line
        .split("\"id\":")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let fields = [Field::Str("n0: log line 0".into())];
    assert_eq!(
        written(|w| w.result(id, result::BUILD_LOG_LINE, &fields)),
        format!("{line}\n")
    );
    let line = sample_line(r#"{"action":"stop""#);
    let id: u64 = line
        .split("\"id\":")
        .nth(1)
        .unwrap()
        .trim_end_matches('}')
        .parse()
        .unwrap();
    assert_eq!(written(|w| w.stop(id)), format!("{line}\n"));
    let line = sample_line("these 12 derivations will be built:");
    assert_eq!(
        written(|w| w.msg(3, "these 12 derivations will be built:")),
        format!("{line}\n")
    );
}

#[test]
fn starts_carry_a_parent_and_sorted_keys() {
    let fields = [
        Field::Str("/nix/store/x-a.drv".into()),
        Field::Str("".into()),
        Field::Int(1),
        Field::Int(1),
    ];
    assert_eq!(
        written(|w| w.start(
            7,
            3,
            activity::BUILD,
            "building '/nix/store/x-a.drv'",
            0,
            &fields
        )),
        "@nix {\"action\":\"start\",\"fields\":[\"/nix/store/x-a.drv\",\"\",1,1],\"id\":7,\
         \"level\":3,\"parent\":0,\"text\":\"building '/nix/store/x-a.drv'\",\"type\":105}\n"
    );
    assert_eq!(
        written(|w| w.start(8, 0, activity::REALISE, "", 0, &[])),
        "@nix {\"action\":\"start\",\"id\":8,\"level\":0,\"parent\":0,\"text\":\"\",\"type\":102}\n"
    );
}

#[test]
fn multi_line_errors_are_indented_under_the_prefix() {
    let got = written(|w| w.msg_ei(0, "a\nb"));
    assert!(
        got.contains(r#""msg":"\u001b[31;1merror:\u001b[0m a\n       b","raw_msg":"a\nb"}"#),
        "{got}"
    );
    let got = written(|w| w.msg_ei(1, "careful\nnow"));
    assert!(
        got.contains(r#""msg":"\u001b[35;1mwarning:\u001b[0m careful\n         now""#),
        "{got}"
    );
}

#[test]
fn ansi_codes_are_stripped() {
    assert_eq!(strip_ansi("plain"), "plain");
    assert_eq!(
        strip_ansi("\x1b[31;1merror:\x1b[0m builder for '\x1b[35;1m/nix/store/x.drv\x1b[0m'"),
        "error: builder for '/nix/store/x.drv'"
    );
    assert_eq!(
        strip_ansi("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x07b"),
        "alinkb"
    );
    assert_eq!(strip_ansi("cut \x1b["), "cut ");
}

#[test]
fn fields_are_integers_or_strings_only() {
    let r: Record =
        serde_json::from_str(r#"{"action":"result","id":1,"type":105,"fields":[1,"x"]}"#).unwrap();
    assert_eq!(r.fields.as_slice(), [Field::Int(1), Field::Str("x".into())]);
    for bad in [r#"[-1]"#, r#"[1.5]"#, r#"[null]"#, r#"[[1]]"#, r#"[{}]"#] {
        let json = format!(r#"{{"action":"result","id":1,"type":105,"fields":{bad}}}"#);
        assert!(serde_json::from_str::<Record>(&json).is_err(), "{bad}");
    }
    // Ids beyond 2^53 survive.
    let r: Record = serde_json::from_str(r#"{"action":"stop","id":18446744073709551615}"#).unwrap();
    assert_eq!(r.id, u64::MAX);
}

/// The activities of the substitutions from an HTTP cache, as (action, type, text, fields),
/// in order: actSubstitute, actCopyPath, actFileTransfer and their stops, and the
/// transfer's last progress (the narinfo transfers of the queries before are left out).
fn substitution_shape(log: &str) -> Vec<String> {
    let mut names: std::collections::HashMap<u64, u64> = Default::default();
    let mut shape = Vec::new();
    let mut last_progress: std::collections::HashMap<u64, String> = Default::default();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line.strip_prefix(PREFIX).unwrap()).unwrap();
        let id = v["id"].as_u64().unwrap_or(0);
        match v["action"].as_str().unwrap() {
            "start" => {
                let t = v["type"].as_u64().unwrap();
                if t == 108 || (!names.is_empty() && [100, 101].contains(&t)) {
                    names.insert(id, t);
                    shape.push(format!(
                        "start {t} {} {} level {}",
                        v["text"], v["fields"], v["level"]
                    ));
                }
            }
            "result" if names.get(&id) == Some(&101) => {
                last_progress.insert(id, format!("progress {}", v["fields"]));
            }
            "stop" => {
                if let Some(t) = names.get(&id) {
                    if let Some(p) = last_progress.remove(&id) {
                        shape.push(p);
                    }
                    shape.push(format!("stop {t}"));
                }
            }
            _ => {}
        }
    }
    shape
}

#[test]
fn http_substitutions_have_nixs_activities_and_transfer_progress() {
    use crate::engine::api::{BuildStatus, Event, EventKind, GoalId, GoalKind, Time};
    let nix = include_str!("../../../tests/fixtures/internal-json/substitute-http.log");
    let cache = "http://127.0.0.1:18731";
    let paths = [
        (
            "/nix/store/cypfpph2dy8vw9wbhig5abx7b1536mad-exp-dep",
            "nar/00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv.nar",
            120,
        ),
        (
            "/nix/store/nx1wv9blsfcvvvjs7i5s3wx8ijyc2np5-exp-root",
            "nar/02q2ra7pclv75gs4bin2zdlxl8qgy8zw4g2i568ghfd50h6dzx26.nar",
            176,
        ),
    ];
    let mut kinds = Vec::new();
    for (i, (path, nar, size)) in paths.iter().enumerate() {
        let goal = GoalId(i as u32);
        kinds.push(EventKind::GoalAdded {
            goal,
            kind: GoalKind::Substitution {
                path: (*path).into(),
                repair: false,
            },
            name: path.rsplit('-').next().unwrap().into(),
            top: false,
        });
        kinds.push(EventKind::SubstitutionStarted {
            goal,
            slot: 0,
            substituter: cache.into(),
        });
        for done in [size / 2, *size] {
            kinds.push(EventKind::SubstitutionProgress {
                goal,
                download_done: done,
                download_expected: Some(*size),
                nar_done: done,
                nar_expected: *size,
                url: Some(format!("{cache}/{nar}")),
            });
        }
        kinds.push(EventKind::GoalDone {
            goal,
            status: BuildStatus::Substituted,
            message: None,
            times: Default::default(),
        });
    }
    let mut emitter = NixJsonEmitter::new(1);
    let mut out = Vec::new();
    for (seq, kind) in kinds.into_iter().enumerate() {
        let e = Event {
            seq: seq as u64,
            time: Time(seq as u64),
            kind,
        };
        emitter.event(&e, &mut out).unwrap();
    }
    let ours = String::from_utf8(out).unwrap();
    let shape = substitution_shape(nix);
    assert_eq!(shape.len(), 14, "{shape:#?}");
    assert_eq!(substitution_shape(&ours), shape);
}

/// The run's last build and substitution counters in a parsed stream.
fn final_counters(
    events: &[crate::engine::api::Event],
) -> (crate::engine::api::Counter, crate::engine::api::Counter) {
    use crate::engine::api::EventKind;
    events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::Progress { progress } => Some((progress.builds, progress.substitutions)),
            _ => None,
        })
        .expect("the stream has progress")
}

fn parse_all(text: &str) -> Vec<crate::engine::api::Event> {
    use crate::engine::api::Time;
    let mut parser = NixJsonParser::new(None);
    let mut events = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        parser.line(l, Time(i as u64), &mut events).unwrap();
    }
    parser.finish(Time(lines.len() as u64), &mut events);
    events
}

#[test]
fn re_emitting_a_parsed_nix_stream_counts_each_goal_once() {
    for name in [
        "substitute-fallback-build.log",
        "substitute-fallback-no-fallback.log",
        "substitute-http.log",
        "internal-json.log",
    ] {
        let path = format!(
            "{}/tests/fixtures/internal-json/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let nix = std::fs::read_to_string(path).unwrap();
        let first = parse_all(&nix);
        let mut emitter = NixJsonEmitter::new(7);
        let mut again = Vec::new();
        for e in &first {
            emitter.event(e, &mut again).unwrap();
        }
        let second = parse_all(&String::from_utf8(again).unwrap());
        assert_eq!(
            final_counters(&second),
            final_counters(&first),
            "{name}: the counters after emitting and parsing again"
        );
    }
}
