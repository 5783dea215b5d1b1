//! A checker of Nix's `internal-json` schema (../shared/design/internal-json.md §2), written
//! from the specification and independent of drover's emitter and parser: record layout
//! (compact JSON, keys sorted as nlohmann writes them, `fields` omitted when empty), the keys
//! and value types of each action, the `fields` of each activity and result type, and the
//! activity life cycle (ids unique, results and stops only for open activities, parents
//! open).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Activity types and the shape of their `fields` (`s` string, `i` integer; `None`: any).
fn activity_fields(kind: u64) -> Option<Option<&'static [&'static str]>> {
    Some(match kind {
        0 => Some(&[]),
        100 => Some(&["s", "s", "s"]),
        101 => Some(&["s"]),
        102..=104 => Some(&[]),
        105 => Some(&["s", "s", "i", "i"]),
        106 | 107 => Some(&[]),
        108 => Some(&["s", "s"]),
        109 => Some(&["s", "s"]),
        110 => Some(&["s"]),
        // Lock and build-user waits have none; CA resolution has two paths.
        111 => None,
        112 => Some(&[]),
        113 => Some(&["s", "i"]),
        _ => return None,
    })
}

/// Result types and the shape of their `fields`.
fn result_fields(kind: u64) -> Option<&'static [&'static str]> {
    Some(match kind {
        100 => &["i", "i"],
        101 => &["s"],
        102 | 103 => &["s"],
        104 => &["s"],
        105 => &["i", "i", "i", "i"],
        106 => &["i", "i"],
        107 => &["s"],
        108 => &["s"],
        109 => &["s"],
        _ => return None,
    })
}

/// Follows a stream line by line.
#[derive(Debug, Default)]
pub struct Validator {
    /// Nix 2.8 writes no `parent`; newer Nix (and drover) always do.
    pub parent_optional: bool,
    open: HashMap<u64, u64>,
    used: HashSet<u64>,
    lines: usize,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "s",
        Value::Number(n) if n.is_u64() => "i",
        _ => "?",
    }
}

fn u64_of(o: &Map<String, Value>, key: &str) -> Result<u64, String> {
    o.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("'{key}' must be an unsigned integer"))
}

fn check_keys(o: &Map<String, Value>, required: &[&str], optional: &[&str]) -> Result<(), String> {
    for k in required {
        if !o.contains_key(*k) {
            return Err(format!("missing key '{k}'"));
        }
    }
    for k in o.keys() {
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            return Err(format!("unexpected key '{k}'"));
        }
    }
    Ok(())
}

fn check_fields(o: &Map<String, Value>, shape: Option<&[&str]>) -> Result<(), String> {
    let fields: Vec<&Value> = match o.get("fields") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.is_empty() => return Err("empty 'fields' is omitted".into()),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => return Err("'fields' must be an array".into()),
    };
    if let Some(f) = fields.iter().find(|f| kind_of(f) == "?") {
        return Err(format!(
            "field {f} is neither an unsigned integer nor a string"
        ));
    }
    if let Some(shape) = shape {
        let got: Vec<&str> = fields.iter().map(|f| kind_of(f)).collect();
        if got != shape {
            return Err(format!("fields {got:?}, expected {shape:?}"));
        }
    }
    Ok(())
}

impl Validator {
    pub fn new(parent_optional: bool) -> Validator {
        Validator {
            parent_optional,
            ..Validator::default()
        }
    }

    /// Checks one line.
    pub fn line(&mut self, line: &str) -> Result<(), String> {
        self.lines += 1;
        let n = self.lines;
        self.check(line)
            .map_err(|e| format!("line {n}: {e}: {line}"))
    }

    /// Activities still open.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    fn check(&mut self, line: &str) -> Result<(), String> {
        let json = line.strip_prefix("@nix ").ok_or("no '@nix ' prefix")?;
        let value: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let o = value.as_object().ok_or("not an object")?;
        let keys: Vec<&String> = o.keys().collect();
        if !keys.windows(2).all(|w| w[0] < w[1]) {
            return Err("keys are not in nlohmann's sorted order".into());
        }
        if serde_json::to_string(&value).unwrap() != json {
            return Err("not compact JSON as nlohmann's dump(-1) writes it".into());
        }
        let level_ok = |o: &Map<String, Value>| -> Result<(), String> {
            match o.get("level").and_then(Value::as_u64) {
                Some(l) if l <= 7 => Ok(()),
                _ => Err("'level' must be a verbosity 0..=7".into()),
            }
        };
        match o.get("action").and_then(Value::as_str) {
            Some("start") => {
                let required: &[&str] = if self.parent_optional {
                    &["action", "id", "level", "text", "type"]
                } else {
                    &["action", "id", "level", "parent", "text", "type"]
                };
                check_keys(o, required, &["fields", "parent"])?;
                level_ok(o)?;
                let id = u64_of(o, "id")?;
                let kind = u64_of(o, "type")?;
                let shape = activity_fields(kind).ok_or(format!("unknown activity type {kind}"))?;
                check_fields(o, shape)?;
                if !o["text"].is_string() {
                    return Err("'text' must be a string".into());
                }
                if id == 0 || !self.used.insert(id) {
                    return Err(format!("activity id {id} is zero or reused"));
                }
                if let Some(parent) = o.get("parent") {
                    let parent = parent.as_u64().ok_or("'parent' must be an integer")?;
                    if parent != 0 && !self.open.contains_key(&parent) {
                        return Err(format!("parent {parent} is not an open activity"));
                    }
                }
                if kind == 105 {
                    let drv = o["fields"][0].as_str().unwrap();
                    if !drv.starts_with('/') || !drv.ends_with(".drv") {
                        return Err("actBuild's first field must be a .drv path".into());
                    }
                }
                self.open.insert(id, kind);
            }
            Some("stop") => {
                check_keys(o, &["action", "id"], &[])?;
                let id = u64_of(o, "id")?;
                if self.open.remove(&id).is_none() {
                    return Err(format!("stop of activity {id}, which is not open"));
                }
            }
            Some("result") => {
                check_keys(o, &["action", "id", "type"], &["fields"])?;
                let id = u64_of(o, "id")?;
                let kind = u64_of(o, "type")?;
                let shape = result_fields(kind).ok_or(format!("unknown result type {kind}"))?;
                check_fields(o, Some(shape))?;
                let act = *self
                    .open
                    .get(&id)
                    .ok_or(format!("result for activity {id}, which is not open"))?;
                let allowed = match kind {
                    101 | 104 => act == 105,
                    105 => matches!(act, 100 | 101 | 103 | 104 | 106 | 107),
                    106 => act == 102,
                    _ => true,
                };
                if !allowed {
                    return Err(format!("result type {kind} on activity type {act}"));
                }
                if kind == 106 && activity_fields(o["fields"][0].as_u64().unwrap()).is_none() {
                    return Err("resSetExpected's first field must be an activity type".into());
                }
            }
            Some("msg") => {
                level_ok(o)?;
                if o.contains_key("raw_msg") {
                    check_keys(
                        o,
                        &[
                            "action", "column", "file", "level", "line", "msg", "raw_msg",
                        ],
                        &["trace"],
                    )?;
                    for k in ["column", "line"] {
                        if !(o[k].is_null() || o[k].is_u64()) {
                            return Err(format!("'{k}' must be null or an integer"));
                        }
                    }
                    if !(o["file"].is_null() || o["file"].is_string()) {
                        return Err("'file' must be null or a string".into());
                    }
                    if !o["raw_msg"].is_string() {
                        return Err("'raw_msg' must be a string".into());
                    }
                    if o["level"] == 0
                        && !o["msg"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with("\u{1b}[31;1merror:\u{1b}[0m ")
                    {
                        return Err("an error's msg starts with Nix's red 'error:'".into());
                    }
                } else {
                    check_keys(o, &["action", "level", "msg"], &[])?;
                }
                if !o["msg"].is_string() {
                    return Err("'msg' must be a string".into());
                }
            }
            other => return Err(format!("unknown action {other:?}")),
        }
        Ok(())
    }
}

/// Checks every line of a stream; with `complete`, every activity must have stopped.
pub fn validate(text: &str, parent_optional: bool, complete: bool) -> Result<usize, String> {
    let mut v = Validator::new(parent_optional);
    let mut n = 0;
    for line in text.lines() {
        v.line(line)?;
        n += 1;
    }
    if complete && v.open() != 0 {
        return Err(format!("{} activities never stopped", v.open()));
    }
    Ok(n)
}
