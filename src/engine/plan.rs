//! Plan files: derivations described in TOML instead of the Nix language, instantiated exactly
//! as Nix's `derivation { … }` builtin would instantiate the equivalent expression.
//!
//! A plan has one table per derivation, `[drv.<name>]`, with `builder`, `args`, `env`,
//! `outputs`, `system` and the fixed-output keys `outputHash`, `outputHashAlgo` and
//! `outputHashMode`. A string may interpolate another derivation's output path as `${name}`
//! (its first output) or `${name.output}`; `$${` is a literal `${`. `{ file = "path" }` stands
//! for a file or directory imported into the store like a Nix path literal (relative to the
//! plan's folder). Values are turned into strings as Nix does (lists joined by spaces,
//! booleans `1`/`""`, numbers in decimal), and every reference becomes an input of the
//! derivation, as the string contexts of the Nix evaluator do.
//!
//! Parsing ([`Plan::parse`]) is pure and keeps the line of every key, so each error names the
//! file, the line, the derivation and the key. [`Plan::instantiate`] computes the derivations
//! in dependency order; files are imported through a callback, and
//! [`Plan::instantiate_in_store`] does the imports and writes the `.drv` files with a
//! [`LocalStore`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use thiserror::Error;
use toml::de::{DeTable, DeValue};

use crate::engine::format::derivation::{
    Derivation, DerivationError, DrvHashes, FixedOutputHash, NewOutputs,
};
use crate::engine::format::hash::{Hash, HashAlgo, HashError};
use crate::engine::format::store_path::{DRV_EXTENSION, IngestionMethod, StoreDir, StorePath};
use crate::engine::store::LocalStore;

/// The keys a `[drv.<name>]` table may have besides `env`.
const DRV_KEYS: [&str; 8] = [
    "builder",
    "args",
    "env",
    "outputs",
    "system",
    "outputHash",
    "outputHashAlgo",
    "outputHashMode",
];

/// Attributes Nix's `derivation` treats specially and a plan does not support.
const UNSUPPORTED_ATTRS: [&str; 4] = [
    "__structuredAttrs",
    "__ignoreNulls",
    "__contentAddressed",
    "__impure",
];

/// What is wrong with a plan, and where (boxed: errors travel far, plans are read once).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct PlanError(Box<PlanErrorInfo>);

/// The details of a [`PlanError`].
#[derive(Debug, Error)]
#[error("{}{}: {}{kind}", file.display(), Self::at_line(*line), Self::context(drv, key))]
pub struct PlanErrorInfo {
    pub file: PathBuf,
    /// 1-based line of the offending key or value (0 when no line applies).
    pub line: usize,
    /// The derivation (table key under `drv`) concerned.
    pub drv: Option<String>,
    /// The key concerned, dotted for nested keys (`env.src`, `args`).
    pub key: Option<String>,
    pub kind: PlanErrorKind,
}

impl std::ops::Deref for PlanError {
    type Target = PlanErrorInfo;

    fn deref(&self) -> &PlanErrorInfo {
        &self.0
    }
}

impl PlanError {
    fn new(
        file: &Path,
        line: usize,
        drv: Option<&str>,
        key: Option<&str>,
        kind: PlanErrorKind,
    ) -> PlanError {
        PlanError(Box::new(PlanErrorInfo {
            file: file.to_owned(),
            line,
            drv: drv.map(str::to_owned),
            key: key.map(str::to_owned),
            kind,
        }))
    }
}

impl PlanErrorInfo {
    fn at_line(line: usize) -> String {
        if line == 0 {
            String::new()
        } else {
            format!(":{line}")
        }
    }

    fn context(drv: &Option<String>, key: &Option<String>) -> String {
        match (drv, key) {
            (Some(d), Some(k)) => format!("drv '{d}', key '{k}': "),
            (Some(d), None) => format!("drv '{d}': "),
            (None, Some(k)) => format!("key '{k}': "),
            (None, None) => String::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum PlanErrorKind {
    #[error("cannot read the plan: {0}")]
    Read(std::io::Error),
    #[error("TOML syntax: {0}")]
    Syntax(String),
    #[error("unknown key{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownKey { hint: Option<&'static str> },
    #[error("expected {expected}, got {got}")]
    BadType {
        expected: &'static str,
        got: &'static str,
    },
    #[error("{0}")]
    BadValue(String),
    #[error("required key 'builder' missing")]
    MissingBuilder,
    #[error("the plan has no derivations (add a [drv.<name>] table)")]
    Empty,
    #[error("unknown dependency '{name}' in '{text}' (write $${{ for a literal ${{)")]
    UnknownDependency { name: String, text: String },
    #[error("derivation '{drv}' has no output '{output}' in '{text}' (its outputs: {outputs})")]
    UnknownOutput {
        drv: String,
        output: String,
        text: String,
        outputs: String,
    },
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("bad hash: {0}")]
    BadHash(HashError),
    #[error("cannot import '{}' into the store: {message}", path.display())]
    Import { path: PathBuf, message: String },
    #[error("attribute '{0}' not found in the plan")]
    UnknownAttribute(String),
    #[error("{0}")]
    Derivation(DerivationError),
    #[error("cannot write the derivation: {0}")]
    Write(String),
}

/// A parsed plan: its derivations in file order.
#[derive(Debug, Clone)]
pub struct Plan {
    file: PathBuf,
    dir: PathBuf,
    drvs: Vec<PlanDrv>,
}

/// One `[drv.<name>]` table.
#[derive(Debug, Clone)]
struct PlanDrv {
    name: String,
    line: usize,
    builder: Option<Located<Value>>,
    args: Option<Located<Vec<Value>>>,
    system: Option<Located<String>>,
    outputs: Option<Located<Vec<String>>>,
    output_hash: Option<Located<String>>,
    output_hash_algo: Option<Located<String>>,
    output_hash_mode: Option<Located<String>>,
    /// Environment variables from `env`, in file order.
    env: Vec<(String, Located<Value>)>,
}

#[derive(Debug, Clone)]
struct Located<T> {
    /// The key as written in messages (`env.src`).
    key: String,
    line: usize,
    value: T,
}

impl<T> Located<T> {
    fn at(key: &str, line: usize, value: T) -> Located<T> {
        Located {
            key: key.to_owned(),
            line,
            value,
        }
    }
}

/// A value as Nix would see it before coercion to a string.
#[derive(Debug, Clone)]
enum Value {
    Str(Vec<Part>, usize),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Value>),
}

/// A piece of a string: text, an imported file, or another derivation's output path.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    File(PathBuf),
    Ref {
        /// `name` or `name.output` as written between `${` and `}`.
        target: String,
        /// The interpolation as written, for messages.
        text: String,
    },
}

/// The platform Nix calls this machine (`x86_64-linux`, `aarch64-darwin`, …).
pub fn host_system() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le",
        a => a,
    };
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        o => o,
    };
    format!("{arch}-{os}")
}

/// Byte offsets to 1-based line numbers.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines(starts)
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&s| s <= offset)
    }
}

/// The context of the value being read, to build errors.
struct Reader<'a> {
    file: &'a Path,
    dir: &'a Path,
    lines: Lines,
}

fn type_name(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Reader<'_> {
    fn error(
        &self,
        line: usize,
        drv: Option<&str>,
        key: Option<&str>,
        kind: PlanErrorKind,
    ) -> PlanError {
        PlanError::new(self.file, line, drv, key, kind)
    }

    fn line_of<T>(&self, s: &toml::Spanned<T>) -> usize {
        self.lines.line(s.span().start)
    }

    fn drv(&self, name: &str, line: usize, table: &DeTable) -> Result<PlanDrv, PlanError> {
        let mut d = PlanDrv {
            name: name.to_owned(),
            line,
            builder: None,
            args: None,
            system: None,
            outputs: None,
            output_hash: None,
            output_hash_algo: None,
            output_hash_mode: None,
            env: Vec::new(),
        };
        for (k, v) in table {
            let key = k.get_ref().as_ref();
            let line = self.line_of(k);
            let err = |kind| self.error(line, Some(name), Some(key), kind);
            match key {
                "builder" => {
                    d.builder = Some(Located::at(key, line, self.string_value(v, name, key)?));
                }
                "args" => {
                    let DeValue::Array(items) = v.get_ref() else {
                        return Err(err(PlanErrorKind::BadType {
                            expected: "an array",
                            got: type_name(v.get_ref()),
                        }));
                    };
                    let values = items
                        .iter()
                        .map(|i| self.value(i, name, key))
                        .collect::<Result<_, _>>()?;
                    d.args = Some(Located::at(key, line, values));
                }
                "outputs" => {
                    let DeValue::Array(items) = v.get_ref() else {
                        return Err(err(PlanErrorKind::BadType {
                            expected: "an array of output names",
                            got: type_name(v.get_ref()),
                        }));
                    };
                    let mut names = Vec::new();
                    for i in items {
                        names.push(self.plain_string(i, name, key)?);
                    }
                    d.outputs = Some(Located::at(key, line, names));
                }
                "system" | "outputHash" | "outputHashAlgo" | "outputHashMode" => {
                    let s = Located::at(key, line, self.plain_string(v, name, key)?);
                    match key {
                        "system" => d.system = Some(s),
                        "outputHash" => d.output_hash = Some(s),
                        "outputHashAlgo" => d.output_hash_algo = Some(s),
                        _ => d.output_hash_mode = Some(s),
                    }
                }
                "env" => {
                    let DeValue::Table(vars) = v.get_ref() else {
                        return Err(err(PlanErrorKind::BadType {
                            expected: "a table of environment variables",
                            got: type_name(v.get_ref()),
                        }));
                    };
                    for (var, value) in vars {
                        let var_name = var.get_ref().as_ref();
                        let env_key = format!("env.{var_name}");
                        let line = self.line_of(var);
                        let var_err = |kind| self.error(line, Some(name), Some(&env_key), kind);
                        if var_name == "name" || var_name == "args" || DRV_KEYS.contains(&var_name)
                        {
                            return Err(var_err(PlanErrorKind::BadValue(format!(
                                "'{var_name}' is not an environment variable here: {}",
                                if var_name == "name" {
                                    "the derivation's name is its table key"
                                } else {
                                    "set it as a key of the derivation's table"
                                }
                            ))));
                        }
                        if UNSUPPORTED_ATTRS.contains(&var_name) {
                            return Err(var_err(PlanErrorKind::BadValue(format!(
                                "'{var_name}' is not supported in plans"
                            ))));
                        }
                        let value = self.value(value, name, &env_key)?;
                        d.env.push((
                            var_name.to_owned(),
                            Located {
                                key: env_key,
                                line,
                                value,
                            },
                        ));
                    }
                }
                _ => {
                    return Err(err(PlanErrorKind::UnknownKey {
                        hint: Some(
                            "a derivation has builder, args, env, outputs, system, outputHash, \
                             outputHashAlgo, outputHashMode; environment variables go in env",
                        ),
                    }));
                }
            }
        }
        Ok(d)
    }

    /// A string without interpolation or files.
    fn plain_string(
        &self,
        v: &toml::Spanned<DeValue>,
        drv: &str,
        key: &str,
    ) -> Result<String, PlanError> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(self.error(
                self.line_of(v),
                Some(drv),
                Some(key),
                PlanErrorKind::BadType {
                    expected: "a string",
                    got: type_name(other),
                },
            )),
        }
    }

    /// A string, possibly with interpolations, or a `{ file = … }`.
    fn string_value(
        &self,
        v: &toml::Spanned<DeValue>,
        drv: &str,
        key: &str,
    ) -> Result<Value, PlanError> {
        match v.get_ref() {
            DeValue::String(_) | DeValue::Table(_) => self.value(v, drv, key),
            other => Err(self.error(
                self.line_of(v),
                Some(drv),
                Some(key),
                PlanErrorKind::BadType {
                    expected: "a string or { file = \"…\" }",
                    got: type_name(other),
                },
            )),
        }
    }

    fn value(&self, v: &toml::Spanned<DeValue>, drv: &str, key: &str) -> Result<Value, PlanError> {
        let line = self.line_of(v);
        let err = |kind| self.error(line, Some(drv), Some(key), kind);
        Ok(match v.get_ref() {
            DeValue::String(s) => Value::Str(
                interpolate(s).map_err(|m| err(PlanErrorKind::BadValue(m)))?,
                line,
            ),
            DeValue::Integer(i) => Value::Int(
                i64::from_str_radix(i.as_str(), i.radix())
                    .map_err(|_| err(PlanErrorKind::BadValue(format!("integer {i} too large"))))?,
            ),
            DeValue::Float(f) => {
                let x: f64 = f.as_str().parse().unwrap_or(f64::NAN);
                if !x.is_finite() {
                    return Err(err(PlanErrorKind::BadValue(format!(
                        "the float {f} has no Nix equivalent"
                    ))));
                }
                Value::Float(x)
            }
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Array(items) => Value::List(
                items
                    .iter()
                    .map(|i| self.value(i, drv, key))
                    .collect::<Result<_, _>>()?,
            ),
            DeValue::Table(t) => {
                let file = match t.iter().next() {
                    Some((k, f)) if t.len() == 1 && k.get_ref() == "file" => f,
                    _ => {
                        return Err(err(PlanErrorKind::BadType {
                            expected: "a string, number, boolean, array or { file = \"…\" }",
                            got: "a table",
                        }));
                    }
                };
                let DeValue::String(p) = file.get_ref() else {
                    return Err(err(PlanErrorKind::BadType {
                        expected: "a path string in { file = … }",
                        got: type_name(file.get_ref()),
                    }));
                };
                if p.is_empty() {
                    return Err(err(PlanErrorKind::BadValue("empty file path".into())));
                }
                Value::Str(
                    vec![Part::File(normalise(&self.dir.join(p.as_ref())))],
                    line,
                )
            }
            DeValue::Datetime(_) => {
                return Err(err(PlanErrorKind::BadType {
                    expected: "a string, number, boolean, array or { file = \"…\" }",
                    got: "a date-time",
                }));
            }
        })
    }
}

/// Splits a string into text and `${name}` / `${name.output}` references; `$${` is a
/// literal `${`.
fn interpolate(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            text.push_str(&rest[..i - 1]);
            text.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        text.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated '${{' in '{s}' (write $${{ for a literal ${{)"))?;
        let inner = after[..end].trim();
        if inner.is_empty() {
            return Err(format!("empty '${{}}' in '{s}'"));
        }
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Ref {
            target: inner.to_owned(),
            text: format!("${{{}}}", &after[..end]),
        });
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() || parts.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// Nix's `canonPath` without following symlinks: `.` and `..` resolved lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The store paths a string refers to, as the Nix evaluator's string context.
#[derive(Default)]
struct Context {
    srcs: BTreeSet<StorePath>,
    /// Input derivation (index in the plan) → the outputs used.
    drvs: BTreeMap<usize, BTreeSet<String>>,
}

/// One derivation of a plan, ready to be written into a store.
#[derive(Debug, Clone)]
pub struct Instantiated {
    /// The derivation's name (its table key).
    pub name: String,
    pub drv_path: StorePath,
    pub drv: Derivation,
}

/// The result of instantiating (part of) a plan.
#[derive(Debug, Clone)]
pub struct Instantiation {
    /// Every derivation needed, each after its inputs.
    pub derivations: Vec<Instantiated>,
    /// The requested derivations, in plan order.
    pub targets: Vec<Target>,
}

/// A requested derivation: what `${name}` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub drv_path: StorePath,
    /// Its first output, the one `${name}` stands for.
    pub output: String,
}

/// What an instantiated derivation offers its dependents.
struct Done {
    drv_path: StorePath,
    /// Output name → path, in the order of `outputs` (the first is `${name}`).
    outputs: Vec<(String, StorePath)>,
}

impl Value {
    /// Calls `f(target, text, line)` for every `${…}` in the value.
    fn for_each_ref(&self, f: &mut dyn FnMut(&str, &str, usize)) {
        match self {
            Value::Str(parts, line) => {
                for p in parts {
                    if let Part::Ref { target, text } = p {
                        f(target, text, *line);
                    }
                }
            }
            Value::List(items) => items.iter().for_each(|i| i.for_each_ref(f)),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => {}
        }
    }
}

/// Resolves `name` or `name.output`: a whole name that is a derivation wins (names may
/// contain dots), else the part after the last dot is an output.
fn resolve_target(target: &str, index: &HashMap<&str, usize>) -> Option<(usize, Option<String>)> {
    if let Some(&i) = index.get(target) {
        return Some((i, None));
    }
    let (name, output) = target.rsplit_once('.')?;
    index.get(name).map(|&i| (i, Some(output.to_owned())))
}

impl Plan {
    /// Parses the plan text read from `file` (whose folder `{ file = … }` paths are relative
    /// to).
    pub fn parse(text: &str, file: &Path) -> Result<Plan, PlanError> {
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
        let dir = normalise(&absolute)
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_owned);
        let reader = Reader {
            file,
            dir: &dir,
            lines: Lines::new(text),
        };
        let doc = DeTable::parse(text).map_err(|e| {
            let line = e.span().map_or(1, |s| reader.lines.line(s.start));
            reader.error(
                line,
                None,
                None,
                PlanErrorKind::Syntax(e.message().trim().to_owned()),
            )
        })?;
        let mut drvs = Vec::new();
        for (k, v) in doc.get_ref() {
            let key = k.get_ref().as_ref();
            let line = reader.line_of(k);
            if key != "drv" {
                return Err(reader.error(
                    line,
                    None,
                    Some(key),
                    PlanErrorKind::UnknownKey {
                        hint: Some("derivations are tables [drv.<name>]"),
                    },
                ));
            }
            let DeValue::Table(table) = v.get_ref() else {
                return Err(reader.error(
                    line,
                    None,
                    Some(key),
                    PlanErrorKind::BadType {
                        expected: "a table of derivations",
                        got: type_name(v.get_ref()),
                    },
                ));
            };
            for (name, spec) in table {
                let line = reader.line_of(name);
                let name = name.get_ref().as_ref();
                let DeValue::Table(spec) = spec.get_ref() else {
                    return Err(reader.error(
                        line,
                        Some(name),
                        None,
                        PlanErrorKind::BadType {
                            expected: "a table",
                            got: type_name(spec.get_ref()),
                        },
                    ));
                };
                drvs.push(reader.drv(name, line, spec)?);
            }
        }
        if drvs.is_empty() {
            return Err(reader.error(1, None, None, PlanErrorKind::Empty));
        }
        Ok(Plan {
            file: file.to_owned(),
            dir,
            drvs,
        })
    }

    /// Reads and parses a plan file.
    pub fn load(file: &Path) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| PlanError::new(file, 0, None, None, PlanErrorKind::Read(e)))?;
        Plan::parse(&text, file)
    }

    /// The plan's file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The folder `{ file = … }` paths are relative to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The derivations' names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.drvs.iter().map(|d| d.name.as_str())
    }

    fn error(&self, line: usize, drv: &str, key: Option<&str>, kind: PlanErrorKind) -> PlanError {
        PlanError::new(&self.file, line, Some(drv), key, kind)
    }

    fn index(&self) -> HashMap<&str, usize> {
        self.drvs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i))
            .collect()
    }

    /// Computes the derivations of the plan (or only of `attr` and what it needs), each
    /// after its inputs. `import` puts a file or directory into the store as a Nix path
    /// literal is (recursive sha256, named after its base name) and returns its store path.
    pub fn instantiate(
        &self,
        store_dir: &StoreDir,
        attr: Option<&str>,
        import: &mut dyn FnMut(&Path) -> Result<StorePath, String>,
    ) -> Result<Instantiation, PlanError> {
        let index = self.index();
        let roots: Vec<usize> = match attr {
            None => (0..self.drvs.len()).collect(),
            Some(a) => vec![*index.get(a).ok_or_else(|| {
                let kind = PlanErrorKind::UnknownAttribute(a.to_owned());
                PlanError::new(&self.file, 0, None, None, kind)
            })?],
        };
        let order = self.dependency_order(&index, &roots)?;
        let mut inst = Instantiator {
            plan: self,
            store_dir,
            index,
            done: (0..self.drvs.len()).map(|_| None).collect(),
            imported: HashMap::new(),
            import,
            hashes: DrvHashes::new(),
        };
        let mut derivations = Vec::with_capacity(order.len());
        for i in order {
            derivations.push(inst.instantiate(i)?);
        }
        let targets = roots
            .iter()
            .map(|&r| {
                let done = inst.done[r].as_ref().expect("instantiated");
                Target {
                    drv_path: done.drv_path.clone(),
                    output: done.outputs[0].0.clone(),
                }
            })
            .collect();
        Ok(Instantiation {
            derivations,
            targets,
        })
    }

    /// Imports the plan's files into `store`, computes its derivations (all, or `attr` and
    /// its inputs) and writes their `.drv` files.
    pub fn instantiate_in_store(
        &self,
        store: &LocalStore,
        attr: Option<&str>,
    ) -> Result<Instantiation, PlanError> {
        let mut import = |p: &Path| {
            store
                .add_to_store(p, None, IngestionMethod::Recursive, HashAlgo::Sha256)
                .map_err(|e| e.to_string())
        };
        let inst = self.instantiate(store.store_dir(), attr, &mut import)?;
        for d in &inst.derivations {
            store.write_derivation(&d.drv, &d.name).map_err(|e| {
                let line = self
                    .drvs
                    .iter()
                    .find(|x| x.name == d.name)
                    .map_or(0, |x| x.line);
                self.error(line, &d.name, None, PlanErrorKind::Write(e.to_string()))
            })?;
        }
        Ok(inst)
    }

    /// The output names in the order written (default `out`), checked as Nix checks them.
    fn outputs(&self, d: &PlanDrv) -> Result<Vec<String>, PlanError> {
        let Some(o) = &d.outputs else {
            return Ok(vec!["out".to_owned()]);
        };
        let err =
            |m: String| self.error(o.line, &d.name, Some("outputs"), PlanErrorKind::BadValue(m));
        // Nix splits the `outputs` string on whitespace.
        let joined = o.value.join(" ");
        let names: Vec<String> = joined.split_whitespace().map(str::to_owned).collect();
        let mut seen = BTreeSet::new();
        for n in &names {
            if n == "drv" {
                return Err(err("invalid derivation output name 'drv'".into()));
            }
            if !seen.insert(n) {
                return Err(err(format!("duplicate derivation output '{n}'")));
            }
        }
        if names.is_empty() {
            return Err(err("derivation cannot have an empty set of outputs".into()));
        }
        Ok(names)
    }

    /// How the outputs are made: fixed (from `outputHash*`) or input-addressed. Sets the
    /// `outputHash*` environment variables.
    fn new_outputs(
        &self,
        d: &PlanDrv,
        outputs: &[String],
        drv: &mut Derivation,
    ) -> Result<NewOutputs, PlanError> {
        for (var, v) in [
            ("outputHash", &d.output_hash),
            ("outputHashAlgo", &d.output_hash_algo),
            ("outputHashMode", &d.output_hash_mode),
        ] {
            if let Some(v) = v {
                drv.env.insert(var.into(), v.value.as_str().into());
            }
        }
        let err = |line, key, kind| self.error(line, &d.name, Some(key), kind);
        let method = match &d.output_hash_mode {
            None => IngestionMethod::Flat,
            Some(m) => match m.value.as_str() {
                "flat" => IngestionMethod::Flat,
                "recursive" => IngestionMethod::Recursive,
                other => {
                    return Err(err(
                        m.line,
                        "outputHashMode",
                        PlanErrorKind::BadValue(format!(
                            "invalid value '{other}' for 'outputHashMode' (flat or recursive)"
                        )),
                    ));
                }
            },
        };
        let Some(h) = &d.output_hash else {
            return Ok(NewOutputs::InputAddressed(
                outputs.iter().cloned().collect(),
            ));
        };
        if outputs != ["out"] {
            let line = d.outputs.as_ref().map_or(h.line, |o| o.line);
            return Err(err(
                line,
                "outputs",
                PlanErrorKind::BadValue(
                    "multiple outputs are not supported in fixed-output derivations".into(),
                ),
            ));
        }
        let algo = match &d.output_hash_algo {
            Some(a) if !a.value.is_empty() => Some(
                a.value
                    .parse::<HashAlgo>()
                    .map_err(|e| err(a.line, "outputHashAlgo", PlanErrorKind::BadHash(e)))?,
            ),
            _ => None,
        };
        if h.value.is_empty() {
            return Err(err(
                h.line,
                "outputHash",
                PlanErrorKind::BadValue("outputHash is empty; give the expected hash".into()),
            ));
        }
        let hash = Hash::parse_any(&h.value, algo)
            .map_err(|e| err(h.line, "outputHash", PlanErrorKind::BadHash(e)))?;
        Ok(NewOutputs::Fixed(FixedOutputHash { method, hash }))
    }

    /// The derivations reachable from `roots` through references, dependencies first;
    /// an unknown name or a cycle is an error at the reference.
    fn dependency_order(
        &self,
        index: &HashMap<&str, usize>,
        roots: &[usize],
    ) -> Result<Vec<usize>, PlanError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        /// A derivation being visited: its references (target, line, key) and the next one.
        struct Frame {
            drv: usize,
            refs: Vec<(usize, usize, String)>,
            next: usize,
        }
        let mut marks = vec![Mark::New; self.drvs.len()];
        let mut order = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        for &root in roots {
            if marks[root] != Mark::New {
                continue;
            }
            marks[root] = Mark::Active;
            stack.push(Frame {
                drv: root,
                refs: self.references(root, index)?,
                next: 0,
            });
            while let Some(top) = stack.last_mut() {
                let Some((dep, line, key)) = top.refs.get(top.next).cloned() else {
                    marks[top.drv] = Mark::Done;
                    order.push(top.drv);
                    stack.pop();
                    continue;
                };
                top.next += 1;
                let drv = top.drv;
                match marks[dep] {
                    Mark::Done => {}
                    Mark::Active => {
                        let start = stack.iter().position(|f| f.drv == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|f| self.drvs[f.drv].name.clone())
                            .collect();
                        cycle.push(self.drvs[dep].name.clone());
                        return Err(self.error(
                            line,
                            &self.drvs[drv].name,
                            Some(&key),
                            PlanErrorKind::Cycle(cycle),
                        ));
                    }
                    Mark::New => {
                        marks[dep] = Mark::Active;
                        stack.push(Frame {
                            drv: dep,
                            refs: self.references(dep, index)?,
                            next: 0,
                        });
                    }
                }
            }
        }
        Ok(order)
    }

    /// The derivations `drv` refers to, with the line and key of each reference.
    fn references(
        &self,
        drv: usize,
        index: &HashMap<&str, usize>,
    ) -> Result<Vec<(usize, usize, String)>, PlanError> {
        let d = &self.drvs[drv];
        let mut values: Vec<(&Value, &str)> = Vec::new();
        if let Some(b) = &d.builder {
            values.push((&b.value, &b.key));
        }
        if let Some(a) = &d.args {
            values.extend(a.value.iter().map(|v| (v, a.key.as_str())));
        }
        values.extend(d.env.iter().map(|(_, v)| (&v.value, v.key.as_str())));
        let mut out = Vec::new();
        let mut unknown = None;
        for (v, key) in values {
            v.for_each_ref(
                &mut |target, text, line| match resolve_target(target, index) {
                    Some((dep, _)) => out.push((dep, line, key.to_owned())),
                    None if unknown.is_none() => {
                        let name = target.to_owned();
                        unknown = Some((line, key.to_owned(), name, text.to_owned()));
                    }
                    None => {}
                },
            );
            if let Some((line, key, name, text)) = unknown {
                return Err(self.error(
                    line,
                    &d.name,
                    Some(&key),
                    PlanErrorKind::UnknownDependency { name, text },
                ));
            }
        }
        Ok(out)
    }
}

/// The state of one instantiation: what is done, what was imported.
struct Instantiator<'a> {
    plan: &'a Plan,
    store_dir: &'a StoreDir,
    index: HashMap<&'a str, usize>,
    done: Vec<Option<Done>>,
    /// Source paths already imported (Nix's `srcToStore`).
    imported: HashMap<PathBuf, StorePath>,
    import: &'a mut dyn FnMut(&Path) -> Result<StorePath, String>,
    hashes: DrvHashes,
}

impl Instantiator<'_> {
    /// Derivation `i` as Nix's `derivationStrict` makes it; its inputs are done.
    fn instantiate(&mut self, i: usize) -> Result<Instantiated, PlanError> {
        let plan = self.plan;
        let d = &plan.drvs[i];
        let name = d.name.as_str();
        let err = |line, key: Option<&str>, kind| plan.error(line, name, key, kind);
        if name.ends_with(DRV_EXTENSION) {
            return Err(err(
                d.line,
                None,
                PlanErrorKind::BadValue(format!(
                    "derivation names are not allowed to end in '{DRV_EXTENSION}'"
                )),
            ));
        }
        let mut ctx = Context::default();
        let mut drv = Derivation::default();

        let builder = d
            .builder
            .as_ref()
            .ok_or_else(|| err(d.line, None, PlanErrorKind::MissingBuilder))?;
        let builder_s = self.coerce_to_string(&builder.value, name, &builder.key, &mut ctx)?;
        if builder_s.is_empty() {
            return Err(err(
                builder.line,
                Some("builder"),
                PlanErrorKind::MissingBuilder,
            ));
        }
        drv.builder = builder_s.clone().into();
        drv.env.insert("builder".into(), builder_s.into());
        if let Some(args) = &d.args {
            for a in &args.value {
                let s = self.coerce_to_string(a, name, &args.key, &mut ctx)?;
                drv.args.push(s.into());
            }
        }
        for (var, v) in &d.env {
            let s = self.coerce_to_string(&v.value, name, &v.key, &mut ctx)?;
            drv.env.insert(var.as_str().into(), s.into());
        }
        let system = d
            .system
            .as_ref()
            .map_or_else(host_system, |s| s.value.clone());
        if system.is_empty() {
            let line = d.system.as_ref().map_or(d.line, |s| s.line);
            return Err(err(
                line,
                Some("system"),
                PlanErrorKind::BadValue("required attribute 'system' is empty".into()),
            ));
        }
        drv.system = system.clone().into();
        drv.env.insert("system".into(), system.into());
        drv.env.insert("name".into(), name.into());
        if let Some(o) = &d.outputs {
            drv.env.insert("outputs".into(), o.value.join(" ").into());
        }
        let outputs = plan.outputs(d)?;
        let new_outputs = plan.new_outputs(d, &outputs, &mut drv)?;

        drv.input_srcs = ctx.srcs;
        for (dep, wanted) in ctx.drvs {
            let done = self.done[dep]
                .as_ref()
                .expect("inputs are instantiated first");
            drv.input_drvs.insert(done.drv_path.clone(), wanted);
        }
        let drv_path = drv
            .fill_in_outputs(
                self.store_dir,
                name,
                &new_outputs,
                &mut self.hashes,
                |p: &StorePath| Err::<Derivation, String>(format!("'{p}' is not in the plan")),
            )
            .map_err(|e| {
                let (line, key) = d
                    .outputs
                    .as_ref()
                    .map_or((d.line, None), |o| (o.line, Some("outputs")));
                err(line, key, PlanErrorKind::Derivation(e))
            })?;
        let outputs = outputs
            .iter()
            .map(|o| {
                let path = drv.outputs[o].path().expect("known output path").clone();
                (o.clone(), path)
            })
            .collect();
        self.done[i] = Some(Done {
            drv_path: drv_path.clone(),
            outputs,
        });
        Ok(Instantiated {
            name: name.to_owned(),
            drv_path,
            drv,
        })
    }

    fn coerce_to_string(
        &mut self,
        v: &Value,
        drv: &str,
        key: &str,
        ctx: &mut Context,
    ) -> Result<String, PlanError> {
        let mut s = String::new();
        self.coerce(v, drv, key, ctx, &mut s)?;
        Ok(s)
    }

    /// Nix's `coerceToString` with `coerceMore`: appends `v` to `out`, recording what it
    /// refers to in `ctx`.
    fn coerce(
        &mut self,
        v: &Value,
        drv: &str,
        key: &str,
        ctx: &mut Context,
        out: &mut String,
    ) -> Result<(), PlanError> {
        match v {
            Value::Int(i) => out.push_str(&i.to_string()),
            // C++'s std::to_string(double): "%f".
            Value::Float(f) => out.push_str(&format!("{f:.6}")),
            Value::Bool(true) => out.push('1'),
            Value::Bool(false) => {}
            Value::List(items) => {
                for (n, item) in items.iter().enumerate() {
                    self.coerce(item, drv, key, ctx, out)?;
                    let empty_list = matches!(item, Value::List(l) if l.is_empty());
                    if n + 1 < items.len() && !empty_list {
                        out.push(' ');
                    }
                }
            }
            Value::Str(parts, line) => {
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::File(path) => {
                            let sp = self.import(path, drv, key, *line)?;
                            out.push_str(&self.store_dir.display(&sp));
                            ctx.srcs.insert(sp);
                        }
                        Part::Ref { target, text } => {
                            let (dep, output) =
                                resolve_target(target, &self.index).expect("checked when ordering");
                            let done = self.done[dep].as_ref().expect("inputs are done first");
                            let found = match &output {
                                None => done.outputs.first(),
                                Some(o) => done.outputs.iter().find(|(n, _)| n == o),
                            };
                            let Some((output, path)) = found else {
                                let outputs = done
                                    .outputs
                                    .iter()
                                    .map(|(n, _)| n.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ");
                                return Err(self.plan.error(
                                    *line,
                                    drv,
                                    Some(key),
                                    PlanErrorKind::UnknownOutput {
                                        drv: self.plan.drvs[dep].name.clone(),
                                        output: output.unwrap_or_default(),
                                        text: text.clone(),
                                        outputs,
                                    },
                                ));
                            };
                            out.push_str(&self.store_dir.display(path));
                            ctx.drvs.entry(dep).or_default().insert(output.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Imports a file once (Nix's `copyPathToStore`).
    fn import(
        &mut self,
        path: &Path,
        drv: &str,
        key: &str,
        line: usize,
    ) -> Result<StorePath, PlanError> {
        if let Some(sp) = self.imported.get(path) {
            return Ok(sp.clone());
        }
        let err = |message: String| {
            self.plan.error(
                line,
                drv,
                Some(key),
                PlanErrorKind::Import {
                    path: path.to_owned(),
                    message,
                },
            )
        };
        if path.to_string_lossy().ends_with(DRV_EXTENSION) {
            return Err(err(format!(
                "file names are not allowed to end in '{DRV_EXTENSION}'"
            )));
        }
        let sp = (self.import)(path).map_err(err)?;
        self.imported.insert(path.to_owned(), sp.clone());
        Ok(sp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    /// Imports without a store: the path a recursive sha256 of the file name would have.
    fn fake_import(p: &Path) -> Result<StorePath, String> {
        let name = p.file_name().unwrap().to_string_lossy();
        let h = crate::engine::format::hash::sha256(p.to_string_lossy().as_bytes());
        store()
            .make_fixed_output_path(
                IngestionMethod::Recursive,
                &h,
                &name,
                &BTreeSet::new(),
                false,
            )
            .map_err(|e| e.to_string())
    }

    fn instantiate(text: &str, attr: Option<&str>) -> Result<Instantiation, PlanError> {
        let plan = Plan::parse(text, Path::new("/plans/plan.toml"))?;
        plan.instantiate(&store(), attr, &mut fake_import)
    }

    fn error(text: &str) -> PlanError {
        instantiate(text, None).expect_err("the plan is wrong")
    }

    fn env<'a>(i: &'a Instantiation, name: &str, var: &str) -> &'a str {
        let d = i.derivations.iter().find(|d| d.name == name).unwrap();
        std::str::from_utf8(d.drv.env_var(var).unwrap()).unwrap()
    }

    #[test]
    fn interpolation_splits_text_references_and_escapes() {
        let parts = interpolate("a ${b} $${c} ${d.dev}!").unwrap();
        let shown: Vec<String> = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => format!("T({t})"),
                Part::Ref { target, .. } => format!("R({target})"),
                Part::File(_) => unreachable!(),
            })
            .collect();
        assert_eq!(shown, ["T(a )", "R(b)", "T( ${c} )", "R(d.dev)", "T(!)"]);
        assert!(interpolate("x ${y").unwrap_err().contains("unterminated"));
        assert!(interpolate("${}").unwrap_err().contains("empty"));
    }

    #[test]
    fn values_become_strings_as_in_nix() {
        let i = instantiate(
            r#"
[drv.a]
builder = "/bin/sh"
env = { t = true, f = false, n = -3, h = 0x10, x = 1.5, l = [[], "a", [], [1, [2]], "b", []] }
"#,
            None,
        )
        .unwrap();
        assert_eq!(env(&i, "a", "t"), "1");
        assert_eq!(env(&i, "a", "f"), "");
        assert_eq!(env(&i, "a", "n"), "-3");
        assert_eq!(env(&i, "a", "h"), "16");
        assert_eq!(env(&i, "a", "x"), "1.500000");
        // Nix adds no space after an empty list.
        assert_eq!(env(&i, "a", "l"), "a 1 2 b ");
        assert_eq!(env(&i, "a", "name"), "a");
        assert_eq!(env(&i, "a", "system"), host_system());
        assert!(i.derivations[0].drv.env_var("outputs").is_none());
    }

    #[test]
    fn references_name_the_first_output_and_add_inputs() {
        let i = instantiate(
            r#"
[drv."lib-1.2"]
builder = "/bin/sh"
outputs = ["dev", "out"]

[drv.app]
builder = "${lib-1.2.out}/bin/sh"
args = [{ file = "../src/build.sh" }]
env = { lib = "${lib-1.2}" }
"#,
            Some("app"),
        )
        .unwrap();
        assert_eq!(i.derivations.len(), 2);
        let (lib, app) = (&i.derivations[0], &i.derivations[1]);
        assert_eq!(i.targets[0].drv_path, app.drv_path);
        assert_eq!(i.targets[0].output, "out");
        let dev = store().display(lib.drv.outputs["dev"].path().unwrap());
        assert_eq!(env(&i, "app", "lib"), dev);
        assert!(env(&i, "app", "builder").ends_with("-lib-1.2/bin/sh"));
        let wanted: Vec<&str> = app.drv.input_drvs[&lib.drv_path]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(wanted, ["dev", "out"]);
        let src = app.drv.input_srcs.iter().next().unwrap();
        assert_eq!(src.name(), "build.sh");
        assert_eq!(*src, fake_import(Path::new("/src/build.sh")).unwrap());
        assert_eq!(env(&i, "lib-1.2", "outputs"), "dev out");
    }

    #[test]
    fn fixed_outputs_take_sri_or_algo_and_digest() {
        let sri = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let text = format!(
            r#"
[drv.a]
builder = "/bin/sh"
outputHash = "{sri}"

[drv.b]
builder = "/bin/sh"
outputHash = "{hex}"
outputHashAlgo = "sha256"
outputHashMode = "flat"
"#
        );
        let i = instantiate(&text, None).unwrap();
        let a = &i.derivations[0].drv;
        assert!(a.is_fixed_output());
        assert_eq!(env(&i, "a", "outputHash"), sri);
        // The same content hash gives the same output path name-wise.
        let pa = a.outputs["out"].path().unwrap();
        assert_eq!(pa.name(), "a");
    }

    #[test]
    fn errors_name_file_line_drv_and_key() {
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\nenv = { x = \"${nope}\" }\n");
        assert_eq!(
            e.to_string(),
            "/plans/plan.toml:3: drv 'a', key 'env.x': unknown dependency 'nope' in '${nope}' \
             (write $${ for a literal ${)"
        );
        let e = error(
            "[drv.a]\nbuilder = \"/bin/sh\"\nargs = [\"${b}\"]\n\n[drv.b]\nbuilder = \"${a}\"\n",
        );
        assert_eq!(
            e.to_string(),
            "/plans/plan.toml:6: drv 'b', key 'builder': dependency cycle: a -> b -> a"
        );
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\n\noutputHash = \"sha256-abc\"\n");
        assert_eq!((e.line, e.key.as_deref()), (4, Some("outputHash")));
        assert!(matches!(e.kind, PlanErrorKind::BadHash(_)), "{e}");
        let e = error("[drv.a]\nbuilder = 5\n");
        assert_eq!(
            e.to_string(),
            "/plans/plan.toml:2: drv 'a', key 'builder': expected a string or { file = \"…\" }, \
             got an integer"
        );
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\nenv = { when = 1979-05-27 }\n");
        assert!(e.to_string().contains("got a date-time"), "{e}");
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\nsrc = \"x\"\n");
        assert_eq!((e.line, e.key.as_deref()), (3, Some("src")));
        assert!(e.to_string().contains("environment variables go in env"));
        let e = error("[drv.a]\nargs = []\n");
        assert_eq!(e.line, 1);
        assert!(matches!(e.kind, PlanErrorKind::MissingBuilder));
        let e = error(
            "[drv.a]\nbuilder = \"/bin/sh\"\noutputs = [\"out\", \"dev\"]\noutputHash = \"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n",
        );
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("multiple outputs"));
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\n[drv.b]\nbuilder = \"${a.dev}\"\n");
        assert!(e.to_string().contains("has no output 'dev'"), "{e}");
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\nenv = { name = \"x\" }\n");
        assert!(e.to_string().contains("its table key"), "{e}");
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\noutputs = [\"out\", \"out\"]\n");
        assert!(e.to_string().contains("duplicate derivation output 'out'"));
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\nenv = { x = \"${a\" }\n");
        assert!(e.to_string().contains("unterminated"));
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\nargs = [{ path = \"x\" }]\n");
        assert!(e.to_string().contains("got a table"));
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\noutputHashMode = \"deep\"\n");
        assert!(e.to_string().contains("invalid value 'deep'"));
    }

    #[test]
    fn syntax_errors_and_unknown_attributes() {
        let e = error("[drv.a]\nbuilder = \"/bin/sh\"\nargs = [\n");
        assert!(matches!(e.kind, PlanErrorKind::Syntax(_)));
        assert!(e.line >= 3, "{e}");
        let e = error("[stuff]\n");
        assert_eq!(e.key.as_deref(), Some("stuff"));
        let e = error("# nothing\n");
        assert!(matches!(e.kind, PlanErrorKind::Empty));
        let e = instantiate("[drv.a]\nbuilder = \"/bin/sh\"\n", Some("b")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/plans/plan.toml: attribute 'b' not found in the plan"
        );
        let e = error("[drv.\"x.drv\"]\nbuilder = \"/bin/sh\"\n");
        assert!(e.to_string().contains("not allowed to end in '.drv'"));
    }

    #[test]
    fn a_file_is_imported_once() {
        let plan = Plan::parse(
            "[drv.a]\nbuilder = { file = \"b.sh\" }\nargs = [{ file = \"./b.sh\" }]\n",
            Path::new("/p/plan.toml"),
        )
        .unwrap();
        let mut calls = Vec::new();
        let i = plan
            .instantiate(&store(), None, &mut |p| {
                calls.push(p.to_owned());
                fake_import(p)
            })
            .unwrap();
        assert_eq!(calls, [PathBuf::from("/p/b.sh")]);
        let d = &i.derivations[0].drv;
        assert_eq!(d.builder, d.args[0]);
        let err = plan
            .instantiate(&store(), None, &mut |_| Err("no such file".into()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/p/plan.toml:2: drv 'a', key 'builder': cannot import '/p/b.sh' into the store: \
             no such file"
        );
    }
}
