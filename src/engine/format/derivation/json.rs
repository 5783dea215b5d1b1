//! The JSON of `nix show-derivation` (Nix 2.8), byte for byte.
//!
//! Nix 2.8 writes this JSON with its own small writer: objects and lists indented by two
//! spaces per level, `"key": value`, empty containers as `{}` / `[]`, and strings escaped
//! only for `"`, `\`, `\n`, `\r`, `\t` and other bytes below 0x20 (`\u00XX`). Other bytes,
//! including invalid UTF-8, are written as they are, so the output is not always UTF-8;
//! a `serde_json` value could not carry such strings, hence this writer.

use super::{Derivation, DerivationOutput, method_algo};
use crate::engine::format::store_path::{StoreDir, StorePath};

/// Writes the object `nix show-derivation` prints for these derivations (keyed by `.drv`
/// path, in the given order), followed by a newline.
pub fn write_show_derivation_json<'a>(
    out: &mut Vec<u8>,
    store_dir: &StoreDir,
    drvs: impl IntoIterator<Item = (&'a StorePath, &'a Derivation)>,
) {
    let mut w = Writer {
        out,
        first: Vec::new(),
    };
    w.open(b'{');
    for (path, drv) in drvs {
        w.key(store_dir.display(path).as_bytes());
        write_derivation(&mut w, store_dir, drv);
    }
    w.close(b'}');
    w.out.push(b'\n');
}

fn write_derivation(w: &mut Writer, store_dir: &StoreDir, drv: &Derivation) {
    w.open(b'{');
    w.key(b"outputs");
    w.open(b'{');
    for (name, output) in &drv.outputs {
        w.key(name.as_bytes());
        w.open(b'{');
        match output {
            DerivationOutput::InputAddressed(path) => {
                w.key(b"path");
                w.string(store_dir.display(path).as_bytes());
            }
            DerivationOutput::Fixed { path, hash } => {
                w.key(b"path");
                w.string(store_dir.display(path).as_bytes());
                w.key(b"hashAlgo");
                w.string(hash.method_algo().as_bytes());
                w.key(b"hash");
                w.string(hash.hash.to_base16().as_bytes());
            }
            DerivationOutput::Floating { method, algo } => {
                w.key(b"hashAlgo");
                w.string(method_algo(*method, *algo).as_bytes());
            }
            DerivationOutput::Deferred => {}
            DerivationOutput::Impure { method, algo } => {
                w.key(b"hashAlgo");
                w.string(method_algo(*method, *algo).as_bytes());
                w.key(b"impure");
                w.out.extend_from_slice(b"true");
            }
        }
        w.close(b'}');
    }
    w.close(b'}');

    w.key(b"inputSrcs");
    w.open(b'[');
    for path in &drv.input_srcs {
        w.element();
        w.string(store_dir.display(path).as_bytes());
    }
    w.close(b']');

    w.key(b"inputDrvs");
    w.open(b'{');
    for (path, outputs) in &drv.input_drvs {
        w.key(store_dir.display(path).as_bytes());
        w.open(b'[');
        for output in outputs {
            w.element();
            w.string(output.as_bytes());
        }
        w.close(b']');
    }
    w.close(b'}');

    w.key(b"system");
    w.string(&drv.system);
    w.key(b"builder");
    w.string(&drv.builder);

    w.key(b"args");
    w.open(b'[');
    for arg in &drv.args {
        w.element();
        w.string(arg);
    }
    w.close(b']');

    w.key(b"env");
    w.open(b'{');
    for (key, value) in &drv.env {
        w.key(key);
        w.string(value);
    }
    w.close(b'}');
    w.close(b'}');
}

/// Pretty printing as Nix's writer does it; `first` tracks, per open container, whether
/// nothing has been written into it yet.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    first: Vec<bool>,
}

impl Writer<'_> {
    fn open(&mut self, bracket: u8) {
        self.first.push(true);
        self.out.push(bracket);
    }

    fn close(&mut self, bracket: u8) {
        let empty = self.first.pop().unwrap_or(true);
        if !empty {
            self.newline();
        }
        self.out.push(bracket);
    }

    fn newline(&mut self) {
        self.out.push(b'\n');
        self.out
            .extend(std::iter::repeat_n(b' ', 2 * self.first.len()));
    }

    /// Starts a list element or an object member.
    fn element(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(b',');
            }
            *first = false;
        }
        self.newline();
    }

    fn key(&mut self, key: &[u8]) {
        self.element();
        self.string(key);
        self.out.extend_from_slice(b": ");
    }

    fn string(&mut self, s: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.out.push(b'"');
        for &c in s {
            match c {
                b'"' | b'\\' => self.out.extend_from_slice(&[b'\\', c]),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                0..0x20 => self.out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 0xf)],
                ]),
                _ => self.out.push(c),
            }
        }
        self.out.push(b'"');
    }
}
