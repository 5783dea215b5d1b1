//! The builder's environment and the files it finds in its build directory, exactly as Nix
//! 2.8 prepares them (`initEnv`, `initTmpDir`, `writeStructuredAttrs`, exportReferencesGraph):
//!
//! `PATH=/path-not-set`, `HOME=/homeless-shelter`, `NIX_STORE`, `NIX_BUILD_CORES`, then the
//! derivation's attributes (except those passed as files, `passAsFile`, which become
//! `<name>Path`), then `NIX_BUILD_TOP`, `TMPDIR`, `TEMPDIR`, `TMP`, `TEMP`, `PWD`,
//! `NIX_OUTPUT_CHECKED` and the `impureEnvVars` of fixed-output derivations, `NIX_LOG_FD=2`
//! and `TERM=xterm-256color`. With structured attributes (`__json`) the attributes are not in
//! the environment but in `.attrs.json` and `.attrs.sh` (`NIX_ATTRS_JSON_FILE`,
//! `NIX_ATTRS_SH_FILE`). Every string goes through the input rewrites (output placeholders to
//! the paths the build writes to).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::engine::format::derivation::{ByteSlice, hash_placeholder};
use crate::engine::format::hash::sha256;
use crate::engine::format::{StoreDir, StorePath};
use crate::engine::store::{ClosureFlags, LocalStore};

use super::BuildError;
use super::parsed::{ParsedDrv, tokenize};

/// Nix's `StringMap` of rewrites, applied in key order.
pub type Rewrites = BTreeMap<String, String>;

/// Replaces every occurrence of each key by its value, one rewrite after the other (Nix's
/// `rewriteStrings`).
pub fn rewrite_strings(s: &[u8], rewrites: &Rewrites) -> Vec<u8> {
    let mut s = s.to_vec();
    for (from, to) in rewrites {
        if from == to || from.is_empty() {
            continue;
        }
        let (from, to) = (from.as_bytes(), to.as_bytes());
        if memchr::memmem::find(&s, from).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(s.len());
        let mut rest = &s[..];
        while let Some(i) = memchr::memmem::find(rest, from) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(to);
            rest = &rest[i + from.len()..];
        }
        out.extend_from_slice(rest);
        s = out;
    }
    s
}

/// The environment of a builder and the files to write into its build directory (names
/// relative to it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildEnv {
    pub vars: BTreeMap<Vec<u8>, Vec<u8>>,
    pub files: Vec<(String, Vec<u8>)>,
}

/// What [`BuildEnv::new`] needs besides the derivation.
pub struct EnvParams<'a> {
    pub store: &'a LocalStore,
    /// The build directory, as the builder sees it.
    pub tmp_dir: &'a Path,
    pub cores: u32,
    pub rewrites: &'a Rewrites,
    /// The input closure (exportReferencesGraph may only name paths in it).
    pub input_paths: &'a BTreeSet<StorePath>,
    /// The caller's environment (for `impureEnvVars`).
    pub caller_env: &'a dyn Fn(&str) -> Option<String>,
}

impl BuildEnv {
    pub fn new(parsed: &ParsedDrv<'_>, p: &EnvParams<'_>) -> Result<BuildEnv, BuildError> {
        let drv = parsed.derivation();
        let store_dir = p.store.store_dir();
        let tmp = p.tmp_dir.as_os_str().as_encoded_bytes().to_vec();
        let mut env = BuildEnv::default();
        let set = |env: &mut BuildEnv, k: &str, v: &[u8]| {
            env.vars.insert(k.as_bytes().to_vec(), v.to_vec());
        };
        set(&mut env, "PATH", b"/path-not-set");
        set(&mut env, "HOME", b"/homeless-shelter");
        set(&mut env, "NIX_STORE", store_dir.as_str().as_bytes());
        set(&mut env, "NIX_BUILD_CORES", p.cores.to_string().as_bytes());

        if parsed.structured_attrs().is_none() {
            let pass_as_file: BTreeSet<String> = drv
                .env_var("passAsFile")
                .map(|v| {
                    tokenize(&v.to_str_lossy())
                        .into_iter()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in &drv.env {
                let name = k.to_str_lossy();
                if !pass_as_file.contains(name.as_ref()) {
                    env.vars.insert(k.to_vec(), v.to_vec());
                    continue;
                }
                let file = format!(".attr-{}", sha256(k).to_base32());
                env.files
                    .push((file.clone(), rewrite_strings(v, p.rewrites)));
                let mut var = k.to_vec();
                var.extend_from_slice(b"Path");
                let mut path = tmp.clone();
                path.push(b'/');
                path.extend_from_slice(file.as_bytes());
                env.vars.insert(var, path);
            }
        }
        for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
            set(&mut env, k, &tmp);
        }
        let drv_type = drv
            .derivation_type()
            .map_err(|e| BuildError::Other(e.to_string()))?;
        if drv_type.is_fixed() {
            set(&mut env, "NIX_OUTPUT_CHECKED", b"1");
        }
        if !drv_type.is_sandboxed() {
            let names = parsed
                .get_strings_attr("impureEnvVars")
                .map_err(BuildError::Other)?
                .unwrap_or_default();
            for name in names {
                let value = (p.caller_env)(&name).unwrap_or_default();
                set(&mut env, &name, value.as_bytes());
            }
        }
        set(&mut env, "NIX_LOG_FD", b"2");
        set(&mut env, "TERM", b"xterm-256color");

        if let Some(attrs) = parsed.structured_attrs() {
            let json = prepare_structured_attrs(attrs, drv.output_names(), p)?;
            let sh = structured_attrs_shell(&json);
            let mut dumped = String::new();
            dump_json(&json, &mut dumped);
            env.files.push((
                ".attrs.sh".into(),
                rewrite_strings(sh.as_bytes(), p.rewrites),
            ));
            env.files.push((
                ".attrs.json".into(),
                rewrite_strings(dumped.as_bytes(), p.rewrites),
            ));
            for (var, file) in [
                ("NIX_ATTRS_SH_FILE", ".attrs.sh"),
                ("NIX_ATTRS_JSON_FILE", ".attrs.json"),
            ] {
                let mut path = tmp.clone();
                path.push(b'/');
                path.extend_from_slice(file.as_bytes());
                set(&mut env, var, &path);
            }
        } else if let Some(spec) = drv.env_var("exportReferencesGraph") {
            let spec = spec.to_str_lossy();
            let tokens = tokenize(&spec);
            if !tokens.len().is_multiple_of(2) {
                return Err(BuildError::Rejected(format!(
                    "odd number of tokens in 'exportReferencesGraph': '{spec}'"
                )));
            }
            for pair in tokens.chunks(2) {
                let (file, path) = (pair[0], pair[1]);
                if !is_graph_file_name(file) {
                    return Err(BuildError::Other(format!(
                        "invalid file name '{file}' in 'exportReferencesGraph'"
                    )));
                }
                if !store_dir.is_in_store(path) {
                    return Err(BuildError::Rejected(format!(
                        "'exportReferencesGraph' contains a non-store path '{path}'"
                    )));
                }
                let (store_path, _) = store_dir
                    .split_path(path)
                    .map_err(|e| BuildError::Other(e.to_string()))?;
                let paths =
                    export_references(p.store, &BTreeSet::from([store_path]), p.input_paths)?;
                env.files
                    .push((file.to_owned(), validity_registration(p.store, &paths)?));
            }
        }
        Ok(env)
    }

    /// The environment as `NAME=value` entries, rewritten.
    pub fn entries(&self, rewrites: &Rewrites) -> Vec<Vec<u8>> {
        self.vars
            .iter()
            .map(|(k, v)| {
                let mut e = k.clone();
                e.push(b'=');
                e.extend_from_slice(v);
                rewrite_strings(&e, rewrites)
            })
            .collect()
    }
}

/// `[A-Za-z_][A-Za-z0-9_.-]*`
fn is_graph_file_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn store_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Other(e.to_string())
}

/// Nix's `exportReferences`: the closure of `paths` (which must be in the input closure),
/// plus the closures of the outputs of every derivation in it.
pub fn export_references(
    store: &LocalStore,
    paths: &BTreeSet<StorePath>,
    input_paths: &BTreeSet<StorePath>,
) -> Result<BTreeSet<StorePath>, BuildError> {
    for p in paths {
        if !input_paths.contains(p) {
            return Err(BuildError::Rejected(format!(
                "cannot export references of path '{}' because it is not in the input closure \
                 of the derivation",
                store.print(p)
            )));
        }
    }
    let mut closure = store
        .compute_fs_closure(paths.iter().cloned(), ClosureFlags::default())
        .map_err(store_err)?;
    let drvs: Vec<StorePath> = closure
        .iter()
        .filter(|p| p.is_derivation())
        .cloned()
        .collect();
    for drv in drvs {
        let d = store.read_derivation(&drv).map_err(store_err)?;
        for (_, out) in d.output_paths() {
            let Some(out) = out else {
                return Err(BuildError::Other(
                    "exportReferences on CA derivations is not yet implemented".into(),
                ));
            };
            closure.extend(
                store
                    .compute_fs_closure([out.clone()], ClosureFlags::default())
                    .map_err(store_err)?,
            );
        }
    }
    Ok(closure)
}

/// Nix's `makeValidityRegistration` without derivers or hashes: for each path, the path, an
/// empty deriver line, the number of references and the references.
fn validity_registration(
    store: &LocalStore,
    paths: &BTreeSet<StorePath>,
) -> Result<Vec<u8>, BuildError> {
    let mut out = String::new();
    for p in paths {
        let info = store.path_info(p).map_err(store_err)?;
        out.push_str(&store.print(p));
        out.push_str("\n\n");
        out.push_str(&format!("{}\n", info.references.len()));
        for r in &info.references {
            out.push_str(&store.print(r));
            out.push('\n');
        }
    }
    Ok(out.into_bytes())
}

/// The structured attributes with `outputs` (output name → placeholder) and the
/// exportReferencesGraph entries (name → path infos of the closure) added.
fn prepare_structured_attrs<'n>(
    attrs: &serde_json::Map<String, Value>,
    outputs: impl Iterator<Item = &'n str>,
    p: &EnvParams<'_>,
) -> Result<Value, BuildError> {
    let mut json = attrs.clone();
    let outs: serde_json::Map<String, Value> = outputs
        .map(|o| {
            let placeholder = hash_placeholder(o);
            let rewritten = rewrite_strings(placeholder.as_bytes(), p.rewrites);
            (
                o.to_owned(),
                Value::String(String::from_utf8_lossy(&rewritten).into_owned()),
            )
        })
        .collect();
    json.insert("outputs".into(), Value::Object(outs));
    if let Some(Value::Object(graph)) = json.get("exportReferencesGraph").cloned() {
        for (key, value) in graph {
            let mut paths = BTreeSet::new();
            for item in value.as_array().into_iter().flatten() {
                let s = item.as_str().ok_or_else(|| {
                    BuildError::Other("exportReferencesGraph entries must be strings".into())
                })?;
                paths.insert(p.store.parse(s).map_err(store_err)?);
            }
            let closure = export_references(p.store, &paths, p.input_paths)?;
            let mut list = Vec::new();
            for path in &closure {
                list.push(path_info_json(p.store, path)?);
            }
            json.insert(key, Value::Array(list));
        }
    }
    Ok(Value::Object(json))
}

/// Nix's `pathInfoToJSON` without impure fields, with the closure size.
fn path_info_json(store: &LocalStore, path: &StorePath) -> Result<Value, BuildError> {
    let info = store.path_info(path).map_err(store_err)?;
    let closure = store
        .compute_fs_closure([path.clone()], ClosureFlags::default())
        .map_err(store_err)?;
    let mut closure_size = 0u64;
    for q in &closure {
        closure_size += store.path_info(q).map_err(store_err)?.nar_size;
    }
    let mut m = serde_json::Map::new();
    m.insert("path".into(), Value::String(store.print(path)));
    m.insert(
        "narHash".into(),
        Value::String(info.nar_hash.to_nix32_prefixed()),
    );
    m.insert("narSize".into(), Value::from(info.nar_size));
    m.insert(
        "references".into(),
        Value::Array(
            info.references
                .iter()
                .map(|r| Value::String(store.print(r)))
                .collect(),
        ),
    );
    if let Some(ca) = &info.ca {
        m.insert("ca".into(), Value::String(ca.to_string()));
    }
    m.insert("closureSize".into(), Value::from(closure_size));
    Ok(Value::Object(m))
}

/// Nix's `shellEscape`: single quotes, with `'` written as `'\''`.
fn shell_escape(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A JSON value Nix writes into `.attrs.sh` as a plain shell value, if it is one.
fn simple_shell_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(shell_escape(s)),
        Value::Number(n) => {
            // Nix reads the number as a float and, when that is integral, prints it as an int.
            let f = n.as_f64()? as f32;
            if f.ceil() != f {
                return None;
            }
            let i = if let Some(i) = n.as_i64() {
                i as i32
            } else if let Some(u) = n.as_u64() {
                u as i32
            } else {
                n.as_f64()? as i32
            };
            Some(i.to_string())
        }
        Value::Null => Some("''".into()),
        Value::Bool(b) => Some(if *b { "1" } else { "" }.into()),
        _ => None,
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_shell_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Nix's `writeStructuredAttrsShell`: every top-level attribute representable in bash (strings,
/// integers, null, Booleans, and lists or attribute sets of those) as a `declare`.
pub fn structured_attrs_shell(json: &Value) -> String {
    let mut out = String::new();
    let Some(map) = json.as_object() else {
        return out;
    };
    for (key, value) in map {
        if !is_shell_var_name(key) {
            continue;
        }
        if let Some(s) = simple_shell_value(value) {
            out.push_str(&format!("declare {key}={s}\n"));
        } else if let Value::Array(items) = value {
            let mut s = String::new();
            if items.iter().all(|item| match simple_shell_value(item) {
                Some(v) => {
                    s.push_str(&v);
                    s.push(' ');
                    true
                }
                None => false,
            }) {
                out.push_str(&format!("declare -a {key}=({s})\n"));
            }
        } else if let Value::Object(items) = value {
            let mut s = String::new();
            if items
                .iter()
                .all(|(k, item)| match simple_shell_value(item) {
                    Some(v) => {
                        s.push_str(&format!("[{}]={v} ", shell_escape(k)));
                        true
                    }
                    None => false,
                })
            {
                out.push_str(&format!("declare -A {key}=({s})\n"));
            }
        }
    }
    out
}

/// Writes `v` as nlohmann::json's `dump()` does: compact, keys sorted, strings escaped only
/// where JSON requires it, floats in their shortest form (`1.5`, `3.0`, `1e+100`).
pub fn dump_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&format_float(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => dump_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_string(k, out);
                out.push(':');
                dump_json(&map[k], out);
            }
            out.push('}');
        }
    }
}

fn dump_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// nlohmann's float layout: the shortest digits, in fixed notation when the decimal point
/// falls within 15 digits (and at most 4 zeros after it), else `d.ddde+XX`.
fn format_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().expect("an integer exponent");
    let k = digits.len() as i32;
    let n = exp + 1;
    let mut out = String::new();
    if f < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 15 {
        out.push_str(&digits);
        out.push_str(&"0".repeat((n - k) as usize));
        out.push_str(".0");
    } else if 0 < n && n <= 15 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -4 < n && n <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", e.abs()));
    }
    out
}

/// The store paths a build may write the placeholders of its outputs as: the paths from
/// `scratch` (output name → path), for [`Rewrites`].
pub fn placeholder_rewrites(
    store_dir: &StoreDir,
    scratch: &BTreeMap<String, StorePath>,
) -> Rewrites {
    scratch
        .iter()
        .map(|(name, path)| (hash_placeholder(name), store_dir.display(path)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_apply_in_key_order() {
        let mut r = Rewrites::new();
        r.insert("aa".into(), "bb".into());
        r.insert("bb".into(), "cc".into());
        assert_eq!(rewrite_strings(b"xaax", &r), b"xccx");
        assert_eq!(rewrite_strings(b"none", &r), b"none");
    }

    #[test]
    fn json_like_nlohmann() {
        let v: Value = serde_json::from_str(
            r#"{"b":[1,2.5,3.0,1e100,-0.001,0.0001,1e-5,123456789012345678],"a":"q\"\n\u0001é","c":null}"#,
        )
        .unwrap();
        let mut s = String::new();
        dump_json(&v, &mut s);
        assert_eq!(
            s,
            r#"{"a":"q\"\n\u0001é","b":[1,2.5,3.0,1e+100,-0.001,0.0001,1e-05,123456789012345678],"c":null}"#
        );
        assert_eq!(format_float(1234567.0), "1234567.0");
        assert_eq!(format_float(1e14), "100000000000000.0");
        assert_eq!(format_float(1e15), "1e+15");
        assert_eq!(format_float(1e16), "1e+16");
        assert_eq!(format_float(0.5), "0.5");
    }

    #[test]
    fn attrs_sh_like_nix() {
        // The expected text was produced by Nix 2.8 for the same attributes.
        let v: Value = serde_json::from_str(
            r#"{"bad-name":"x","builder":"/bin/busybox","flag":true,"flt":1.5,"lst":["a","b",3],
                "name":"structured","nested":[[1]],"nul":null,"num":42,"obj":{"x":"y","z":1},
                "quote":"it's"}"#,
        )
        .unwrap();
        assert_eq!(
            structured_attrs_shell(&v),
            "declare builder='/bin/busybox'\n\
             declare flag=1\n\
             declare -a lst=('a' 'b' 3 )\n\
             declare name='structured'\n\
             declare nul=''\n\
             declare num=42\n\
             declare -A obj=(['x']='y' ['z']=1 )\n\
             declare quote='it'\\''s'\n"
        );
    }

    #[test]
    fn graph_file_names() {
        assert!(is_graph_file_name("closure"));
        assert!(is_graph_file_name("_a.b-c9"));
        assert!(!is_graph_file_name("9a"));
        assert!(!is_graph_file_name("a/b"));
        assert!(!is_graph_file_name(""));
    }
}
