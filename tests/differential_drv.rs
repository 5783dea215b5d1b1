//! Derivations instantiated by real Nix 2.8 against ours.
//!
//! proptest generates batches of derivations as Nix expressions (tricky strings in every
//! field, several outputs, dependencies between them through `${dep}` / `${dep.dev}`
//! interpolation, `builtins.toFile` sources, fixed outputs of every hash algorithm, mode and
//! hash notation). `nix-instantiate` writes each batch into a throwaway chroot store (logical
//! store dir `/nix/store`, so paths are the real ones) and reports the `.drv` and output
//! paths; we build the same derivations the way the `derivation` primop does and compare
//! paths, the ATerm bytes Nix wrote, and `nix show-derivation`'s JSON bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Command;

use drover::engine::format::derivation::{
    BString, Derivation, DrvHashes, FixedOutputHash, NewOutputs, downstream_placeholder,
    write_show_derivation_json,
};
use drover::engine::format::{Hash, HashAlgo, IngestionMethod, StoreDir, StorePath};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// One piece of a string attribute.
#[derive(Debug, Clone)]
enum Part {
    Lit(Vec<u8>),
    /// `${dN}` (first listed output) or `${dN.<output>}`; indices are reduced modulo the
    /// derivations before this one and their outputs.
    Dep {
        drv: usize,
        output: Option<usize>,
    },
    /// `${builtins.toFile "name" "contents"}`.
    ToFile {
        name: String,
        contents: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct Fixed {
    algo: HashAlgo,
    recursive: bool,
    mode_attr: bool,
    digest: Vec<u8>,
    /// 0: base16 + outputHashAlgo, 1: base32 + outputHashAlgo, 2: SRI, 3: SRI + algo.
    notation: u8,
}

/// `__contentAddressed = true` (floating outputs) or `__impure = true`.
#[derive(Debug, Clone)]
struct Ca {
    impure: bool,
    algo: Option<HashAlgo>,
    recursive: Option<bool>,
}

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    system: Vec<u8>,
    builder: Vec<u8>,
    args: Vec<Vec<Part>>,
    env: Vec<(Vec<u8>, Vec<Part>)>,
    outputs: Option<Vec<String>>,
    fixed: Option<Fixed>,
    ca: Option<Ca>,
}

const OUTPUT_NAMES: [&str; 5] = ["out", "dev", "lib", "bin", "doc"];
const RESERVED: [&str; 14] = [
    "name",
    "system",
    "builder",
    "args",
    "outputs",
    "outputHash",
    "outputHashAlgo",
    "outputHashMode",
    "__structuredAttrs",
    "__ignoreNulls",
    "__contentAddressed",
    "__impure",
    "allowedReferences",
    "drvPath",
];

fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&'static [u8]> = vec![
        b"\"",
        b"\\",
        b"\n",
        b"\t",
        b"\r",
        b"${",
        b"$",
        b"}",
        b"'",
        "é".as_bytes(),
        "☃".as_bytes(),
        b"\x01",
        b"\x7f",
        b"\xff",
        b" ",
        b"(",
        b")",
        b",",
        b"[",
        b"]",
    ];
    vec(
        prop_oneof![
            3 => "[a-zA-Z0-9/._-]{1,6}".prop_map(String::into_bytes),
            2 => prop::sample::select(pieces).prop_map(<[u8]>::to_vec),
            1 => vec(1u8..=255, 1..3),
        ],
        0..6,
    )
    .prop_map(|v| v.concat())
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        4 => tricky_bytes().prop_map(Part::Lit),
        3 => (any::<usize>(), proptest::option::of(any::<usize>()))
            .prop_map(|(drv, output)| Part::Dep { drv, output }),
        1 => ("[a-z][a-z0-9.-]{0,8}", tricky_bytes())
            .prop_map(|(name, contents)| Part::ToFile { name, contents }),
    ]
}

fn string_attr() -> impl Strategy<Value = Vec<Part>> {
    vec(part(), 0..4)
}

fn env_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-zA-Z_][a-zA-Z0-9_'-]{0,8}".prop_map(String::into_bytes),
        1 => tricky_bytes().prop_filter("non-empty", |k| !k.is_empty()),
    ]
    .prop_filter("not a reserved or output name", |k| {
        let s = String::from_utf8_lossy(k);
        !RESERVED.contains(&s.as_ref()) && !OUTPUT_NAMES.contains(&s.as_ref())
    })
}

fn fixed() -> impl Strategy<Value = Fixed> {
    (
        prop::sample::select(HashAlgo::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
        vec(any::<u8>(), 64),
        0u8..4,
    )
        .prop_map(|(algo, recursive, mode_attr, digest, notation)| Fixed {
            algo,
            recursive,
            // Flat is the default: the attribute may be left out.
            mode_attr: mode_attr || recursive,
            digest: digest[..algo.size()].to_vec(),
            notation,
        })
}

fn ca() -> impl Strategy<Value = Ca> {
    (
        any::<bool>(),
        proptest::option::of(prop::sample::select(HashAlgo::ALL.to_vec())),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(impure, algo, recursive)| Ca {
            impure,
            algo,
            recursive,
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    let outputs = proptest::option::of(
        proptest::sample::subsequence(OUTPUT_NAMES.to_vec(), 1..=3)
            .prop_shuffle()
            .prop_map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>()),
    );
    (
        "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{0,12}",
        prop::sample::select(vec![
            b"x86_64-linux".to_vec(),
            b"aarch64-darwin".to_vec(),
            "s\u{e9}s\ttab(),[]".as_bytes().to_vec(),
        ]),
        tricky_bytes().prop_map(|b| [b"/bin/".to_vec(), b].concat()),
        vec(string_attr(), 0..3),
        // Distinct keys: a Nix attribute set cannot define one twice.
        prop::collection::btree_map(env_key(), string_attr(), 0..5)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        outputs,
        proptest::option::weighted(0.25, fixed()),
        proptest::option::weighted(0.15, ca()),
    )
        .prop_map(|(name, system, builder, args, env, outputs, fixed, ca)| {
            let mut s = Spec {
                name,
                system,
                builder,
                args,
                env,
                outputs,
                ca: if fixed.is_some() { None } else { ca },
                fixed,
            };
            if s.fixed.is_some() && s.outputs.as_ref().is_some_and(|o| o != &["out"]) {
                s.outputs = None;
            }
            s
        })
}

/// A Nix string literal for `bytes` (`$` is always escaped so `${` never interpolates).
fn nix_string(out: &mut Vec<u8>, bytes: &[u8]) {
    for &c in bytes {
        match c {
            b'"' | b'\\' | b'$' => out.extend_from_slice(&[b'\\', c]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(c),
        }
    }
}

fn outputs_of(spec: &Spec) -> Vec<String> {
    spec.outputs
        .clone()
        .unwrap_or_else(|| vec!["out".to_owned()])
}

/// Resolves a dependency of derivation `i` to (derivation index, output name).
fn resolve_dep(
    specs: &[Spec],
    i: usize,
    drv: usize,
    output: Option<usize>,
) -> Option<(usize, String)> {
    if i == 0 {
        return None;
    }
    let d = drv % i;
    let outs = outputs_of(&specs[d]);
    Some((d, outs[output.map_or(0, |o| o % outs.len())].clone()))
}

fn nix_parts(out: &mut Vec<u8>, specs: &[Spec], i: usize, parts: &[Part]) {
    out.push(b'"');
    for p in parts {
        match p {
            Part::Lit(b) => nix_string(out, b),
            Part::Dep { drv, output } => {
                if let Some((d, o)) = resolve_dep(specs, i, *drv, *output) {
                    if output.is_some() {
                        out.extend_from_slice(format!("${{d{d}.{o}}}").as_bytes());
                    } else {
                        out.extend_from_slice(format!("${{d{d}}}").as_bytes());
                    }
                }
            }
            Part::ToFile { name, contents } => {
                out.extend_from_slice(format!("${{builtins.toFile \"{name}\" \"").as_bytes());
                nix_string(out, contents);
                out.extend_from_slice(b"\"}");
            }
        }
    }
    out.push(b'"');
}

fn fixed_attrs(f: &Fixed) -> Vec<(&'static str, String)> {
    let hash = Hash::from_digest(f.algo, &f.digest).unwrap();
    let mut attrs = Vec::new();
    let (value, with_algo) = match f.notation {
        0 => (hash.to_base16(), true),
        1 => (hash.to_base32(), true),
        2 => (hash.to_sri(), false),
        _ => (hash.to_sri(), true),
    };
    attrs.push(("outputHash", value));
    if with_algo {
        attrs.push(("outputHashAlgo", f.algo.name().to_owned()));
    }
    if f.mode_attr {
        let mode = if f.recursive { "recursive" } else { "flat" };
        attrs.push(("outputHashMode", mode.to_owned()));
    }
    attrs
}

fn ca_attrs(ca: &Ca) -> Vec<(&'static str, String)> {
    let mut attrs = Vec::new();
    if let Some(algo) = ca.algo {
        attrs.push(("outputHashAlgo", algo.name().to_owned()));
    }
    if let Some(recursive) = ca.recursive {
        let mode = if recursive { "recursive" } else { "flat" };
        attrs.push(("outputHashMode", mode.to_owned()));
    }
    attrs
}

fn nix_expression(specs: &[Spec]) -> Vec<u8> {
    let mut e = b"let\n".to_vec();
    for (i, s) in specs.iter().enumerate() {
        e.extend_from_slice(
            format!(
                "  d{i} = derivation {{\n    name = \"{}\";\n    system = \"",
                s.name
            )
            .as_bytes(),
        );
        nix_string(&mut e, &s.system);
        e.extend_from_slice(b"\";\n    builder = \"");
        nix_string(&mut e, &s.builder);
        e.extend_from_slice(b"\";\n    args = [");
        for a in &s.args {
            e.push(b' ');
            nix_parts(&mut e, specs, i, a);
        }
        e.extend_from_slice(b" ];\n");
        for (k, v) in &s.env {
            e.extend_from_slice(b"    \"");
            nix_string(&mut e, k);
            e.extend_from_slice(b"\" = ");
            nix_parts(&mut e, specs, i, v);
            e.extend_from_slice(b";\n");
        }
        if let Some(outputs) = &s.outputs {
            let list: Vec<String> = outputs.iter().map(|o| format!("\"{o}\"")).collect();
            e.extend_from_slice(format!("    outputs = [ {} ];\n", list.join(" ")).as_bytes());
        }
        if let Some(f) = &s.fixed {
            for (k, v) in fixed_attrs(f) {
                e.extend_from_slice(format!("    {k} = \"{v}\";\n").as_bytes());
            }
        }
        if let Some(ca) = &s.ca {
            let attr = if ca.impure {
                "__impure"
            } else {
                "__contentAddressed"
            };
            e.extend_from_slice(format!("    {attr} = true;\n").as_bytes());
            for (k, v) in ca_attrs(ca) {
                e.extend_from_slice(format!("    {k} = \"{v}\";\n").as_bytes());
            }
        }
        e.extend_from_slice(b"  };\n");
    }
    e.extend_from_slice(
        b"  show = d: { inherit (d) drvPath; outs = builtins.listToAttrs \
          (map (o: { name = o; value = d.${o}.outPath; }) (d.outputs or [ \"out\" ])); };\nin map show [",
    );
    for i in 0..specs.len() {
        e.extend_from_slice(format!(" d{i}").as_bytes());
    }
    e.extend_from_slice(b" ]\n");
    e
}

struct Ours {
    drv_path: StorePath,
    drv: Derivation,
}

/// Builds the derivations as Nix's `derivation` primop does.
fn instantiate(store_dir: &StoreDir, specs: &[Spec], hashes: &mut DrvHashes) -> Vec<Ours> {
    let mut done: Vec<Ours> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let mut drv = Derivation {
            system: s.system.clone().into(),
            builder: s.builder.clone().into(),
            ..Derivation::default()
        };
        let string = |parts: &[Part], drv: &mut Derivation| -> BString {
            let mut v = Vec::new();
            for p in parts {
                match p {
                    Part::Lit(b) => v.extend_from_slice(b),
                    Part::Dep { drv: d, output } => {
                        if let Some((d, o)) = resolve_dep(specs, i, *d, *output) {
                            v.extend_from_slice(output_string(store_dir, &done[d], &o).as_bytes());
                            drv.input_drvs
                                .entry(done[d].drv_path.clone())
                                .or_default()
                                .insert(o);
                        }
                    }
                    Part::ToFile { name, contents } => {
                        let path = store_dir
                            .compute_text_path(name, contents, &BTreeSet::new())
                            .unwrap();
                        v.extend_from_slice(store_dir.display(&path).as_bytes());
                        drv.input_srcs.insert(path);
                    }
                }
            }
            v.into()
        };
        for a in &s.args {
            let a = string(a, &mut drv);
            drv.args.push(a);
        }
        for (k, v) in &s.env {
            let v = string(v, &mut drv);
            drv.env.insert(k.clone().into(), v);
        }
        let mut set = |k: &str, v: &[u8]| drv.env.insert(k.into(), v.into());
        set("name", s.name.as_bytes());
        set("system", &s.system);
        set("builder", &s.builder);
        if let Some(outputs) = &s.outputs {
            set("outputs", outputs.join(" ").as_bytes());
        }
        let new_outputs = match &s.fixed {
            Some(f) => {
                for (k, v) in fixed_attrs(f) {
                    set(k, v.as_bytes());
                }
                let algo = if f.notation == 2 { None } else { Some(f.algo) };
                let hash = Hash::parse_any(&fixed_attrs(f)[0].1, algo).unwrap();
                let method = if f.recursive {
                    IngestionMethod::Recursive
                } else {
                    IngestionMethod::Flat
                };
                NewOutputs::Fixed(FixedOutputHash { method, hash })
            }
            None => {
                let names = outputs_of(s).into_iter().collect();
                match &s.ca {
                    Some(ca) => {
                        for (k, v) in ca_attrs(ca) {
                            set(k, v.as_bytes());
                        }
                        let method = match ca.recursive {
                            Some(false) => IngestionMethod::Flat,
                            _ => IngestionMethod::Recursive,
                        };
                        let algo = ca.algo.unwrap_or(HashAlgo::Sha256);
                        if ca.impure {
                            NewOutputs::Impure {
                                names,
                                method,
                                algo,
                            }
                        } else {
                            NewOutputs::Floating {
                                names,
                                method,
                                algo,
                            }
                        }
                    }
                    None => NewOutputs::InputAddressed(names),
                }
            }
        };
        let drv_path = drv
            .fill_in_outputs(store_dir, &s.name, &new_outputs, hashes, |p: &StorePath| {
                Err::<Derivation, _>(format!("{p} should be known"))
            })
            .unwrap();
        done.push(Ours { drv_path, drv });
    }
    done
}

/// What `${drv.output}` evaluates to: the output path, or a placeholder when the path is
/// not known before building.
fn output_string(store_dir: &StoreDir, drv: &Ours, output: &str) -> String {
    match drv.drv.outputs[output].path() {
        Some(path) => store_dir.display(path),
        None => downstream_placeholder(&drv.drv_path, output),
    }
}

fn nix_command(program: &str) -> Command {
    let mut c = common::nix_command(program);
    c.args([
        "--extra-experimental-features",
        "ca-derivations impure-derivations",
    ]);
    c
}

/// Runs one batch through real Nix and compares.
fn check_batch(store_root: &Path, specs: &[Spec]) -> Result<(), TestCaseError> {
    let store_dir = StoreDir::new("/nix/store").unwrap();
    let expr = nix_expression(specs);
    let output = nix_command("nix-instantiate")
        .arg("--store")
        .arg(store_root)
        .args([
            "--read-write-mode",
            "--eval",
            "--strict",
            "--json",
            "--expr",
        ])
        .arg(OsString::from_vec(expr.clone()))
        .output()
        .expect("running nix-instantiate");
    prop_assert!(
        output.status.success(),
        "nix-instantiate failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&expr)
    );
    let nix: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();

    let ours = instantiate(&store_dir, specs, &mut DrvHashes::new());
    let mut by_path = BTreeMap::new();
    for (o, n) in ours.iter().zip(&nix) {
        prop_assert_eq!(
            store_dir.display(&o.drv_path),
            n["drvPath"].as_str().unwrap(),
            "in\n{}",
            String::from_utf8_lossy(&expr)
        );
        let outs: BTreeMap<String, String> = serde_json::from_value(n["outs"].clone()).unwrap();
        let our_outs: BTreeMap<String, String> = o
            .drv
            .outputs
            .keys()
            .map(|k| (k.clone(), output_string(&store_dir, o, k)))
            .collect();
        prop_assert_eq!(our_outs, outs);

        let file = store_root.join("nix/store").join(o.drv_path.base_name());
        let written = std::fs::read(&file).unwrap();
        let printed = o.drv.to_aterm(&store_dir);
        prop_assert_eq!(
            String::from_utf8_lossy(&printed),
            String::from_utf8_lossy(&written)
        );
        prop_assert_eq!(&printed, &written);
        prop_assert_eq!(&Derivation::parse(&written, &store_dir).unwrap(), &o.drv);
        by_path.insert(o.drv_path.clone(), &o.drv);
    }

    let show = nix_command("nix")
        .args(["show-derivation", "--store"])
        .arg(store_root)
        .args(by_path.keys().map(|p| store_dir.display(p)))
        .output()
        .expect("running nix show-derivation");
    prop_assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let mut json = Vec::new();
    write_show_derivation_json(&mut json, &store_dir, by_path.iter().map(|(p, d)| (p, *d)));
    prop_assert_eq!(
        String::from_utf8_lossy(&json),
        String::from_utf8_lossy(&show.stdout)
    );
    prop_assert_eq!(json, show.stdout);
    Ok(())
}

#[test]
fn generated_derivations_match_nix_instantiate() {
    if !common::require_nix() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let stats = std::cell::RefCell::new(Stats::default());
    runner
        .run(&vec(spec(), 1..12), |specs| {
            stats.borrow_mut().add(&specs);
            check_batch(store.path(), &specs)
        })
        .unwrap();
    let stats = stats.into_inner();
    eprintln!("{stats:?}");
    assert!(stats.batches >= 40);
    assert!(stats.fixed > 0 && stats.with_deps > 0 && stats.multi_output > 0 && stats.to_file > 0);
    assert!(stats.floating > 0 && stats.impure > 0);
}

/// What the generated batches covered.
#[derive(Debug, Default)]
struct Stats {
    batches: usize,
    derivations: usize,
    fixed: usize,
    with_deps: usize,
    multi_output: usize,
    to_file: usize,
    floating: usize,
    impure: usize,
}

impl Stats {
    fn add(&mut self, specs: &[Spec]) {
        self.batches += 1;
        for (i, s) in specs.iter().enumerate() {
            self.derivations += 1;
            self.fixed += usize::from(s.fixed.is_some());
            self.floating += usize::from(s.ca.as_ref().is_some_and(|c| !c.impure));
            self.impure += usize::from(s.ca.as_ref().is_some_and(|c| c.impure));
            self.multi_output += usize::from(outputs_of(s).len() > 1);
            let parts = || s.args.iter().chain(s.env.iter().map(|(_, v)| v)).flatten();
            self.with_deps += usize::from(i > 0 && parts().any(|p| matches!(p, Part::Dep { .. })));
            self.to_file += usize::from(parts().any(|p| matches!(p, Part::ToFile { .. })));
        }
    }
}

#[test]
fn drover_cli_agrees_with_nix_on_written_derivations() {
    // `drover show-derivation` and `drover store-path` on .drv files written by real Nix.
    if !common::require_nix() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 4,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&vec(spec(), 2..6), |specs| {
            check_batch(store.path(), &specs)?;
            let sd = StoreDir::new("/nix/store").unwrap();
            let ours = instantiate(&sd, &specs, &mut DrvHashes::new());
            let root = store.path().join("nix/store");
            let drover = env!("CARGO_BIN_EXE_drover");
            for o in &ours {
                let file = root.join(o.drv_path.base_name());
                let aterm = Command::new(drover)
                    .args(["show-derivation", "--aterm"])
                    .arg(&file)
                    .output()
                    .unwrap();
                prop_assert!(aterm.status.success());
                prop_assert_eq!(aterm.stdout, std::fs::read(&file).unwrap());

                let drv_path = Command::new(drover)
                    .args(["store-path", "--type", "drv"])
                    .arg(&file)
                    .output()
                    .unwrap();
                prop_assert_eq!(
                    String::from_utf8(drv_path.stdout).unwrap(),
                    format!("{}\n", sd.display(&o.drv_path))
                );

                if o.drv.output_paths().values().any(Option::is_none) {
                    continue;
                }
                let outs = Command::new(drover)
                    .args(["store-path", "--type", "output", "--store-root"])
                    .arg(&root)
                    .arg(sd.display(&o.drv_path))
                    .output()
                    .unwrap();
                prop_assert!(
                    outs.status.success(),
                    "{}",
                    String::from_utf8_lossy(&outs.stderr)
                );
                let expected: String = o
                    .drv
                    .output_paths()
                    .values()
                    .map(|p| format!("{}\n", sd.display(p.unwrap())))
                    .collect();
                prop_assert_eq!(String::from_utf8(outs.stdout).unwrap(), expected);
            }
            let last = ours.last().unwrap();
            let show = Command::new(drover)
                .args(["show-derivation", "-r", "--store-root"])
                .arg(&root)
                .arg(sd.display(&last.drv_path))
                .output()
                .unwrap();
            let nix = nix_command("nix")
                .args(["show-derivation", "-r", "--store"])
                .arg(store.path())
                .arg(sd.display(&last.drv_path))
                .output()
                .unwrap();
            prop_assert!(nix.status.success());
            prop_assert_eq!(show.stdout, nix.stdout);
            Ok(())
        })
        .unwrap();
}

#[test]
fn generated_dependencies_point_backwards() {
    // The generator's dependency resolution must never point forward.
    let specs: Vec<Spec> = (0..3)
        .map(|i| Spec {
            name: format!("n{i}"),
            system: b"x".to_vec(),
            builder: b"/b".to_vec(),
            args: vec![],
            env: vec![],
            outputs: Some(vec!["dev".into(), "out".into()]),
            fixed: None,
            ca: None,
        })
        .collect();
    let seen: HashMap<usize, (usize, String)> = (0..10)
        .filter_map(|k| resolve_dep(&specs, 2, k, Some(k)).map(|r| (k, r)))
        .collect();
    assert!(seen.values().all(|(d, _)| *d < 2));
    assert_eq!(resolve_dep(&specs, 0, 5, None), None);
    assert_eq!(resolve_dep(&specs, 1, 5, None), Some((0, "dev".to_owned())));
}

#[test]
fn store_path_cli_matches_nix_store_add() {
    // `drover store-path` against `nix-store --add-fixed`, `nix-store --add` and
    // `builtins.toFile` in a chroot store. NAR hashes come from `nix-hash`.
    if !common::require_nix() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("plain.txt");
    std::fs::write(&file, "quote \" tab \t é\n").unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a"), "a\n").unwrap();
    std::fs::write(tree.join("sub/b"), "b\n").unwrap();

    let run = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    };
    let nix_store = |args: &[&str], path: &Path| {
        run(nix_command("nix-store")
            .arg("--store")
            .arg(store.path())
            .args(args)
            .arg(path))
    };
    let nix_hash = |args: &[&str], path: &Path| run(Command::new("nix-hash").args(args).arg(path));
    let drover = |args: &[&str]| run(Command::new(env!("CARGO_BIN_EXE_drover")).args(args));

    for algo in HashAlgo::ALL {
        let flat = nix_hash(&["--flat", "--type", algo.name()], &file);
        assert_eq!(
            drover(&[
                "store-path",
                "--type",
                "fixed",
                "--name",
                "plain.txt",
                "--hash",
                &format!("{algo}:{flat}"),
            ]),
            nix_store(&["--add-fixed", algo.name()], &file)
        );
        let nar = nix_hash(&["--type", algo.name()], &tree);
        assert_eq!(
            drover(&[
                "store-path",
                "--type",
                "fixed",
                "--method",
                "recursive",
                "--name",
                "tree",
                "--hash",
                &format!("{algo}:{nar}"),
            ]),
            nix_store(&["--add-fixed", "--recursive", algo.name()], &tree)
        );
    }
    let nar = nix_hash(&["--type", "sha256", "--base32"], &tree);
    assert_eq!(
        drover(&[
            "store-path",
            "--type",
            "source",
            "--name",
            "tree",
            "--hash",
            &format!("sha256:{nar}"),
        ]),
        nix_store(&["--add"], &tree)
    );
    // The same path from the tree itself, like a Nix path literal.
    assert_eq!(
        drover(&["store-path", "--type", "source", tree.to_str().unwrap()]),
        nix_store(&["--add"], &tree)
    );

    let eval = |expr: &str| {
        let out = run(nix_command("nix-instantiate")
            .arg("--store")
            .arg(store.path())
            .args(["--read-write-mode", "--eval", "--expr", expr]));
        out.trim_matches('"').to_owned()
    };
    let a = eval(r#"builtins.toFile "a" "x""#);
    let b = eval(r#"builtins.toFile "b" "see ${builtins.toFile "a" "x"}""#);
    std::fs::write(work.path().join("a"), "x").unwrap();
    std::fs::write(work.path().join("b"), format!("see {a}")).unwrap();
    let a_file = work.path().join("a");
    let b_file = work.path().join("b");
    assert_eq!(
        drover(&[
            "store-path",
            "--type",
            "text",
            "--name",
            "a",
            a_file.to_str().unwrap()
        ]),
        a
    );
    assert_eq!(
        drover(&[
            "store-path",
            "--type",
            "text",
            "--name",
            "b",
            "--ref",
            &a,
            b_file.to_str().unwrap(),
        ]),
        b
    );
}
