//! The ATerm text of a derivation:
//! `Derive([outputs],[input drvs],[input srcs],"system","builder",[args],[env])`.
//!
//! Strings are double-quoted bytes. Nix escapes `"`, `\`, newline, carriage return and tab in
//! the builder, the arguments and the environment, but writes output names, paths, hash fields
//! and the system verbatim; reading, `\n`, `\r`, `\t` are control characters and `\x` is `x`
//! for any other byte. The printer reproduces Nix's bytes exactly, so printing a parsed
//! Nix-written `.drv` gives the file back. The parser is stricter than Nix's where Nix would
//! silently lose or change data: lists must be well formed, maps and sets sorted without
//! repeats, the verbatim system free of `\`, and nothing may follow the final `)`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use bstr::{BString, ByteSlice};

use super::{Derivation, DerivationError, DerivationOutput, FixedOutputHash, method_algo};
use crate::engine::format::hash::{Hash, HashAlgo};
use crate::engine::format::store_path::{IngestionMethod, StoreDir, StorePath, is_name_char};

type Result<T> = std::result::Result<T, DerivationError>;

pub(super) fn parse(input: &[u8], store_dir: &StoreDir) -> Result<Derivation> {
    let mut p = Parser {
        input,
        pos: 0,
        store_dir,
    };
    let mut drv = Derivation::default();
    p.expect(b"Derive(", "'Derive('")?;

    let mut last: Option<String> = None;
    p.list(|p| {
        let offset = p.pos;
        p.expect(b"(", "'('")?;
        let name = p.output_name()?;
        check_order(&mut last, &name, "output", offset)?;
        let output = p.output(&name)?;
        p.expect(b")", "')'")?;
        drv.outputs.insert(name, output);
        Ok(())
    })?;

    p.comma()?;
    let mut last: Option<StorePath> = None;
    p.list(|p| {
        let offset = p.pos;
        p.expect(b"(", "'('")?;
        let path = p.store_path()?;
        check_order(&mut last, &path, "input derivation", offset)?;
        p.comma()?;
        let mut outputs = BTreeSet::new();
        let mut last_output: Option<String> = None;
        p.list(|p| {
            let offset = p.pos;
            let name = p.output_name()?;
            check_order(&mut last_output, &name, "input derivation output", offset)?;
            outputs.insert(name);
            Ok(())
        })?;
        p.expect(b")", "')'")?;
        drv.input_drvs.insert(path, outputs);
        Ok(())
    })?;

    p.comma()?;
    let mut last: Option<StorePath> = None;
    p.list(|p| {
        let offset = p.pos;
        let path = p.store_path()?;
        check_order(&mut last, &path, "input source", offset)?;
        drv.input_srcs.insert(path);
        Ok(())
    })?;

    p.comma()?;
    drv.system = p.verbatim("system")?.into();
    p.comma()?;
    drv.builder = p.string()?.into_owned().into();

    p.comma()?;
    p.list(|p| {
        drv.args.push(p.string()?.into_owned().into());
        Ok(())
    })?;

    p.comma()?;
    let mut last: Option<BString> = None;
    p.list(|p| {
        let offset = p.pos;
        p.expect(b"(", "'('")?;
        let key: BString = p.string()?.into_owned().into();
        check_order(&mut last, &key, "environment variable", offset)?;
        p.comma()?;
        let value = p.string()?.into_owned().into();
        p.expect(b")", "')'")?;
        drv.env.insert(key, value);
        Ok(())
    })?;

    p.expect(b")", "')'")?;
    if p.pos != input.len() {
        return Err(DerivationError::TrailingData { offset: p.pos });
    }
    Ok(drv)
}

/// Requires `item` to sort strictly after the previous item of its list, and remembers it.
fn check_order<T: Ord + Clone + std::fmt::Display>(
    last: &mut Option<T>,
    item: &T,
    what: &'static str,
    offset: usize,
) -> Result<()> {
    if last.as_ref().is_some_and(|l| l >= item) {
        return Err(DerivationError::Unsorted {
            what,
            item: item.to_string(),
            offset,
        });
    }
    *last = Some(item.clone());
    Ok(())
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    store_dir: &'a StoreDir,
}

impl<'a> Parser<'a> {
    fn expect(&mut self, token: &[u8], expected: &'static str) -> Result<()> {
        if self.input[self.pos..].starts_with(token) {
            self.pos += token.len();
            Ok(())
        } else {
            Err(DerivationError::Expected {
                expected,
                offset: self.pos,
            })
        }
    }

    fn comma(&mut self) -> Result<()> {
        self.expect(b",", "','")
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// `[]` or `[item,item,…]`.
    fn list(&mut self, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.expect(b"[", "'['")?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => {
                    return Err(DerivationError::Expected {
                        expected: "',' or ']'",
                        offset: self.pos,
                    });
                }
            }
        }
    }

    /// A quoted string, unescaped; borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, [u8]>> {
        let start = self.pos;
        self.expect(b"\"", "'\"'")?;
        let input = self.input;
        let unterminated = || DerivationError::UnterminatedString { offset: start };
        let mut i = self.pos;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            let rel = memchr::memchr2(b'"', b'\\', &input[i..]).ok_or_else(unterminated)?;
            let stop = i + rel;
            if input[stop] == b'"' {
                self.pos = stop + 1;
                return Ok(match owned {
                    None => Cow::Borrowed(&input[i..stop]),
                    Some(mut buf) => {
                        buf.extend_from_slice(&input[i..stop]);
                        Cow::Owned(buf)
                    }
                });
            }
            let buf = owned.get_or_insert_with(Vec::new);
            buf.extend_from_slice(&input[i..stop]);
            let escaped = *input.get(stop + 1).ok_or_else(unterminated)?;
            buf.push(match escaped {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                other => other,
            });
            i = stop + 2;
        }
    }

    /// A string of a field Nix writes without escaping: it cannot contain escapes (nor,
    /// therefore, `"` or `\`), or printing it again would change it.
    fn verbatim(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let offset = self.pos;
        match self.string()? {
            Cow::Borrowed(s) => Ok(s.to_vec()),
            Cow::Owned(_) => Err(DerivationError::Escaped { what, offset }),
        }
    }

    /// A string that must be UTF-8 text.
    fn text(&mut self, what: &'static str) -> Result<(Cow<'a, str>, usize)> {
        let offset = self.pos;
        let s = self.string()?;
        let s = match s {
            Cow::Borrowed(b) => Cow::Borrowed(
                std::str::from_utf8(b).map_err(|_| DerivationError::NotUtf8 { what, offset })?,
            ),
            Cow::Owned(b) => Cow::Owned(
                String::from_utf8(b).map_err(|_| DerivationError::NotUtf8 { what, offset })?,
            ),
        };
        Ok((s, offset))
    }

    /// An output name: non-empty, made of store path name characters.
    fn output_name(&mut self) -> Result<String> {
        let (name, offset) = self.text("output name")?;
        if name.is_empty() || !name.chars().all(is_name_char) {
            return Err(DerivationError::BadOutputName {
                name: name.into_owned(),
                offset,
            });
        }
        Ok(name.into_owned())
    }

    fn store_path(&mut self) -> Result<StorePath> {
        let (path, offset) = self.text("store path")?;
        self.parse_store_path(&path, offset)
    }

    fn parse_store_path(&self, path: &str, offset: usize) -> Result<StorePath> {
        self.store_dir
            .parse(path)
            .map_err(|source| DerivationError::BadStorePath {
                path: path.to_owned(),
                offset,
                source,
            })
    }

    /// The rest of an output after its name: `,"path","algo","hash"`.
    fn output(&mut self, name: &str) -> Result<DerivationOutput> {
        self.comma()?;
        let (path, path_offset) = self.text("output path")?;
        self.comma()?;
        let (algo, algo_offset) = self.text("output hash algorithm")?;
        self.comma()?;
        let (hash, hash_offset) = self.text("output hash")?;
        let bad = |offset, problem| DerivationError::BadOutput {
            output: name.to_owned(),
            offset,
            problem,
        };
        let bad_hash = |offset, source| DerivationError::BadHash {
            output: name.to_owned(),
            offset,
            source,
        };
        if algo.is_empty() {
            if !hash.is_empty() {
                return Err(bad(hash_offset, "hash without a hash algorithm"));
            }
            return Ok(if path.is_empty() {
                DerivationOutput::Deferred
            } else {
                DerivationOutput::InputAddressed(self.parse_store_path(&path, path_offset)?)
            });
        }
        let (method, algo_name) = match algo.strip_prefix("r:") {
            Some(rest) => (IngestionMethod::Recursive, rest),
            None => (IngestionMethod::Flat, &*algo),
        };
        let algo: HashAlgo = algo_name.parse().map_err(|e| bad_hash(algo_offset, e))?;
        if &*hash == "impure" || hash.is_empty() {
            if !path.is_empty() {
                return Err(bad(
                    path_offset,
                    "a floating or impure output cannot have a path",
                ));
            }
            return Ok(if hash.is_empty() {
                DerivationOutput::Floating { method, algo }
            } else {
                DerivationOutput::Impure { method, algo }
            });
        }
        let path = self.parse_store_path(&path, path_offset)?;
        let hash = Hash::parse_unprefixed(&hash, algo).map_err(|e| bad_hash(hash_offset, e))?;
        Ok(DerivationOutput::Fixed {
            path,
            hash: FixedOutputHash { method, hash },
        })
    }
}

/// Writes the ATerm of `drv`. With `mask_outputs`, output paths and the environment variables
/// named after outputs are blanked; with `input_hashes`, the input derivations are replaced
/// by those (hash modulo in base 16 → wanted outputs), as in Nix's hash modulo.
pub(super) fn write(
    drv: &Derivation,
    out: &mut Vec<u8>,
    store_dir: &StoreDir,
    mask_outputs: bool,
    input_hashes: Option<&BTreeMap<String, BTreeSet<String>>>,
) {
    out.extend_from_slice(b"Derive([");
    for (i, (name, output)) in drv.outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'(');
        raw(out, name.as_bytes());
        out.push(b',');
        let (path, algo, hash) = match output {
            DerivationOutput::InputAddressed(path) => (Some(path), String::new(), String::new()),
            DerivationOutput::Fixed { path, hash } => {
                (Some(path), hash.method_algo(), hash.hash.to_base16())
            }
            DerivationOutput::Floating { method, algo } => {
                (None, method_algo(*method, *algo), String::new())
            }
            DerivationOutput::Deferred => (None, String::new(), String::new()),
            DerivationOutput::Impure { method, algo } => {
                (None, method_algo(*method, *algo), "impure".to_owned())
            }
        };
        match path {
            Some(path) if !mask_outputs => store_path(out, store_dir, path),
            _ => raw(out, b""),
        }
        out.push(b',');
        raw(out, algo.as_bytes());
        out.push(b',');
        raw(out, hash.as_bytes());
        out.push(b')');
    }

    out.extend_from_slice(b"],");
    match input_hashes {
        Some(hashes) => list(out, hashes, |out, (hash, outputs)| {
            out.push(b'(');
            raw(out, hash.as_bytes());
            out.push(b',');
            list(out, outputs, |out, o| raw(out, o.as_bytes()));
            out.push(b')');
        }),
        None => list(out, &drv.input_drvs, |out, (path, outputs)| {
            out.push(b'(');
            store_path(out, store_dir, path);
            out.push(b',');
            list(out, outputs, |out, o| raw(out, o.as_bytes()));
            out.push(b')');
        }),
    }
    out.push(b',');
    list(out, &drv.input_srcs, |out, p| store_path(out, store_dir, p));
    out.push(b',');
    raw(out, &drv.system);
    out.push(b',');
    escaped(out, &drv.builder);
    out.push(b',');
    list(out, &drv.args, |out, a| escaped(out, a));
    out.push(b',');
    list(out, &drv.env, |out, (key, value)| {
        out.push(b'(');
        escaped(out, key);
        out.push(b',');
        let blank = mask_outputs && key.to_str().is_ok_and(|k| drv.outputs.contains_key(k));
        escaped(out, if blank { b"" } else { value.as_slice() });
        out.push(b')');
    });
    out.push(b')');
}

fn list<I: IntoIterator>(out: &mut Vec<u8>, items: I, mut item: impl FnMut(&mut Vec<u8>, I::Item)) {
    out.push(b'[');
    for (i, x) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, x);
    }
    out.push(b']');
}

fn raw(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

fn store_path(out: &mut Vec<u8>, store_dir: &StoreDir, path: &StorePath) {
    out.push(b'"');
    out.extend_from_slice(store_dir.as_str().as_bytes());
    out.push(b'/');
    out.extend_from_slice(path.hash_part_bytes());
    out.push(b'-');
    out.extend_from_slice(path.name().as_bytes());
    out.push(b'"');
}

fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s;
    while let Some(i) = rest
        .iter()
        .position(|&c| matches!(c, b'"' | b'\\' | b'\n' | b'\r' | b'\t'))
    {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\\');
        out.push(match rest[i] {
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            c => c,
        });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}
