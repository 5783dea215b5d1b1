//! Registering build outputs (`engine::build::register`) on temporary stores: outputs are
//! written by hand where `prepare_outputs` says the builder writes them, then registered.
//! Comparisons with real Nix are in `differential_register.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use drover::engine::api::BuildMode;
use drover::engine::build::register::{
    BuiltOutput, RegisterRequest, Registered, Rejection, check_location, fallback_path,
    input_rewrites, prepare_outputs, register_outputs,
};
use drover::engine::format::derivation::FixedOutputHash;
use drover::engine::format::hash::{hash_bytes, sha256};
use drover::engine::format::nar;
use drover::engine::format::store_path::output_path_name;
use drover::engine::format::{
    ContentAddress, Derivation, DerivationOutput, Hash, HashAlgo, IngestionMethod, StorePath,
};
use drover::engine::store::{LocalStore, StoreConfig};

static NO_INPUTS: BTreeSet<StorePath> = BTreeSet::new();

struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(StoreConfig::chroot(dir.path())).unwrap();
    Fixture { _dir: dir, store }
}

fn fake_path(seed: &str, name: &str) -> StorePath {
    let digest: [u8; 20] = sha256(seed.as_bytes()).digest()[..20].try_into().unwrap();
    StorePath::from_digest(digest, name).unwrap()
}

/// An input-addressed derivation `name` with these outputs and extra environment.
fn ia_drv(name: &str, outputs: &[&str], env: &[(&str, &str)]) -> (StorePath, Derivation) {
    let drv_path = fake_path(&format!("drv:{name}"), &format!("{name}.drv"));
    let mut drv = Derivation::default();
    for o in outputs {
        let path = fake_path(&format!("out:{name}:{o}"), &output_path_name(name, o));
        drv.outputs
            .insert(o.to_string(), DerivationOutput::InputAddressed(path));
    }
    drv.builder = "/bin/sh".into();
    drv.system = "x86_64-linux".into();
    for (k, v) in env {
        drv.env.insert(k.to_string().into(), v.to_string().into());
    }
    (drv_path, drv)
}

fn fixed_drv(
    store: &LocalStore,
    name: &str,
    method: IngestionMethod,
    hash: Hash,
) -> (StorePath, Derivation) {
    let drv_path = fake_path(&format!("drv:{name}"), &format!("{name}.drv"));
    let path = store
        .store_dir()
        .make_fixed_output_path(method, &hash, name, &BTreeSet::new(), false)
        .unwrap();
    let mut drv = Derivation::default();
    drv.outputs.insert(
        "out".into(),
        DerivationOutput::Fixed {
            path,
            hash: FixedOutputHash { method, hash },
        },
    );
    (drv_path, drv)
}

fn output<'a>(outputs: &'a [BuiltOutput], name: &str) -> &'a BuiltOutput {
    outputs.iter().find(|o| o.name == name).unwrap()
}

/// The logical path of the scratch location the builder was given for `name`.
fn scratch(store: &LocalStore, outputs: &[BuiltOutput], name: &str) -> String {
    store.print(&output(outputs, name).scratch)
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

fn mkdir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
}

fn register(
    store: &LocalStore,
    drv_path: &StorePath,
    drv: &Derivation,
    outputs: Vec<BuiltOutput>,
    inputs: &BTreeSet<StorePath>,
) -> Result<Registered, Rejection> {
    register_outputs(store, RegisterRequest::new(drv_path, drv, outputs, inputs))
}

fn rejected(r: Result<Registered, Rejection>) -> String {
    match r {
        Err(Rejection::OutputRejected {
            message,
            hash_mismatch: false,
        }) => message,
        other => panic!("expected an output rejection, got {other:?}"),
    }
}

fn out_path(drv: &Derivation, name: &str) -> StorePath {
    drv.outputs[name].path().unwrap().clone()
}

fn assert_nothing_valid(store: &LocalStore, drv: &Derivation) {
    for o in drv.outputs.values() {
        let p = o.path().unwrap();
        assert!(!store.is_valid(p).unwrap(), "{p} is valid");
    }
}

#[test]
fn a_single_output_is_canonicalised_hashed_and_registered_with_its_deriver() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("hello", &["out"], &[]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let loc = output(&outputs, "out").location.clone();
    assert_eq!(
        loc,
        f.store.real_path(&out_path(&drv, "out")),
        "built in place"
    );
    mkdir(&loc.join("bin"));
    write(&loc.join("bin/hello"), "#!/bin/sh\necho hello\n");
    std::fs::set_permissions(loc.join("bin/hello"), PermissionsExt::from_mode(0o4755)).unwrap();
    write(&loc.join("data"), "data");
    std::os::unix::fs::symlink("data", loc.join("link")).unwrap();

    let reg = register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new()).unwrap();
    let path = out_path(&drv, "out");
    let info = f.store.path_info(&path).unwrap();
    let (nar_hash, nar_size) = nar::hash_path(&loc, HashAlgo::Sha256).unwrap();
    assert_eq!(info.nar_hash, nar_hash);
    assert_eq!(info.nar_size, nar_size);
    assert_eq!(info.deriver.as_ref(), Some(&drv_path));
    assert!(info.ultimate);
    assert!(info.references.is_empty());
    assert_eq!(info.ca, None);
    assert_eq!(reg.outputs["out"].nar_hash, nar_hash);
    assert_eq!(reg.round_differs, None);
    for (p, mode) in [
        ("", 0o555),
        ("bin", 0o555),
        ("bin/hello", 0o555),
        ("data", 0o444),
    ] {
        let m = std::fs::symlink_metadata(loc.join(p)).unwrap();
        assert_eq!(m.mode() & 0o7777, mode, "{p}");
        assert_eq!(m.mtime(), 1, "{p}");
    }
    assert_eq!(
        std::fs::symlink_metadata(loc.join("link")).unwrap().mtime(),
        1
    );
}

#[test]
fn references_to_inputs_itself_and_other_outputs() {
    let f = fixture();
    let used = f
        .store
        .add_text_to_store("used", b"u", &BTreeSet::new())
        .unwrap();
    let unused = f
        .store
        .add_text_to_store("unused", b"x", &BTreeSet::new())
        .unwrap();
    let inputs = BTreeSet::from([used.clone(), unused.clone()]);
    let (drv_path, drv) = ia_drv("multi", &["out", "dev", "lib"], &[]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let (out, dev, lib) = (
        scratch(&f.store, &outputs, "out"),
        scratch(&f.store, &outputs, "dev"),
        scratch(&f.store, &outputs, "lib"),
    );
    // dev -> out -> lib, out -> itself and an input; lib refers to nothing.
    write(&output(&outputs, "lib").location, "plain");
    mkdir(&output(&outputs, "out").location);
    write(
        &output(&outputs, "out").location.join("f"),
        &format!("{out}/bin {lib}/lib {}", f.store.print(&used)),
    );
    write(&output(&outputs, "dev").location, &format!("include {out}"));

    register(&f.store, &drv_path, &drv, outputs, &inputs).unwrap();
    let refs = |o: &str| f.store.path_info(&out_path(&drv, o)).unwrap().references;
    assert_eq!(
        refs("out"),
        BTreeSet::from([out_path(&drv, "out"), out_path(&drv, "lib"), used.clone()])
    );
    assert_eq!(refs("dev"), BTreeSet::from([out_path(&drv, "out")]));
    assert!(refs("lib").is_empty());
    let _ = dev;
}

#[test]
fn a_cycle_between_outputs_is_rejected_and_nothing_is_registered() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("cyc", &["out", "dev"], &[]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let (out, dev) = (
        scratch(&f.store, &outputs, "out"),
        scratch(&f.store, &outputs, "dev"),
    );
    write(&output(&outputs, "out").location, &dev);
    write(&output(&outputs, "dev").location, &out);
    let locations: Vec<_> = outputs.iter().map(|o| o.location.clone()).collect();
    let msg = rejected(register(
        &f.store,
        &drv_path,
        &drv,
        outputs,
        &BTreeSet::new(),
    ));
    assert_eq!(
        msg,
        format!(
            "cycle detected in build of '{}' in the references of output 'dev' from output 'out'",
            f.store.print(&drv_path)
        )
    );
    assert_nothing_valid(&f.store, &drv);
    for l in locations {
        assert!(!l.exists(), "{} left behind", l.display());
    }
}

#[test]
fn a_missing_output_rejects_all_outputs() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("half", &["out", "doc"], &[]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    write(&output(&outputs, "doc").location, "doc");
    let out_loc = output(&outputs, "out").location.clone();
    let msg = rejected(register(
        &f.store,
        &drv_path,
        &drv,
        outputs,
        &BTreeSet::new(),
    ));
    assert_eq!(
        msg,
        format!(
            "builder for '{}' failed to produce output path for output 'out' at '{}'",
            f.store.print(&drv_path),
            out_loc.display()
        )
    );
    assert_nothing_valid(&f.store, &drv);
}

#[test]
fn a_rejection_in_the_checks_registers_none_of_the_outputs() {
    let f = fixture();
    let input = f
        .store
        .add_text_to_store("input", b"i", &BTreeSet::new())
        .unwrap();
    let (drv_path, drv) = ia_drv("atomic", &["out", "bin"], &[("allowedReferences", "")]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    write(&output(&outputs, "out").location, "fine");
    write(&output(&outputs, "bin").location, &f.store.print(&input));
    let locations: Vec<_> = outputs.iter().map(|o| o.location.clone()).collect();
    let msg = rejected(register(
        &f.store,
        &drv_path,
        &drv,
        outputs,
        &BTreeSet::from([input.clone()]),
    ));
    assert!(msg.contains("is not allowed to refer to"), "{msg}");
    assert_nothing_valid(&f.store, &drv);
    for l in &locations {
        assert!(!l.exists(), "{} left behind", l.display());
    }
}

#[test]
fn keep_failed_leaves_rejected_outputs_in_place_unregistered() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("kept", &["out"], &[("allowedReferences", "")]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let out = scratch(&f.store, &outputs, "out");
    write(&output(&outputs, "out").location, &out);
    let mut req = RegisterRequest::new(&drv_path, &drv, outputs, &NO_INPUTS);
    req.keep_failed = true;
    assert!(register_outputs(&f.store, req).is_err());
    assert_nothing_valid(&f.store, &drv);
    assert!(f.store.real_path(&out_path(&drv, "out")).exists());
}

#[test]
fn group_writable_outputs_are_suspicious() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("perm", &["out"], &[]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let loc = output(&outputs, "out").location.clone();
    write(&loc, "x");
    std::fs::set_permissions(&loc, PermissionsExt::from_mode(0o664)).unwrap();
    let msg = rejected(register(
        &f.store,
        &drv_path,
        &drv,
        outputs,
        &BTreeSet::new(),
    ));
    assert_eq!(
        msg,
        format!(
            "suspicious ownership or permission on '{}' for output 'out'; rejecting this build \
             output",
            loc.display()
        )
    );
}

/// Builds `drv` (outputs `out`, and `dev` when present) where `out` refers to `refs` and
/// `dev` to `out`, and returns the registration result.
fn build_with_refs(
    f: &Fixture,
    drv_path: &StorePath,
    drv: &Derivation,
    refs: &[&StorePath],
    inputs: &BTreeSet<StorePath>,
) -> Result<Registered, Rejection> {
    let outputs = prepare_outputs(&f.store, drv_path, drv, BuildMode::Normal).unwrap();
    let text: Vec<String> = refs.iter().map(|r| f.store.print(r)).collect();
    write(&output(&outputs, "out").location, &text.join(" "));
    if drv.outputs.contains_key("dev") {
        let out = scratch(&f.store, &outputs, "out");
        write(&output(&outputs, "dev").location, &out);
    }
    register(&f.store, drv_path, drv, outputs, inputs)
}

#[test]
fn reference_attributes_in_the_environment() {
    let f = fixture();
    let a = f
        .store
        .add_text_to_store("a", b"a", &BTreeSet::new())
        .unwrap();
    let b = f
        .store
        .add_text_to_store("b", b"b", &BTreeSet::new())
        .unwrap();
    // c refers to a: a is a requisite of c.
    let c = f
        .store
        .add_text_to_store(
            "c",
            f.store.print(&a).as_bytes(),
            &BTreeSet::from([a.clone()]),
        )
        .unwrap();
    let inputs = BTreeSet::from([a.clone(), b.clone(), c.clone()]);
    let pa = f.store.print(&a);
    let pb = f.store.print(&b);
    let pc = f.store.print(&c);

    // (attribute, value, what the output refers to, the offending paths if rejected)
    type Case<'a> = (
        &'a str,
        String,
        Vec<&'a StorePath>,
        Option<Vec<&'a StorePath>>,
    );
    let cases: Vec<Case> = vec![
        ("allowedReferences", pa.clone(), vec![&a], None),
        (
            "allowedReferences",
            pa.clone(),
            vec![&a, &b],
            Some(vec![&b]),
        ),
        ("allowedReferences", "".into(), vec![], None),
        (
            "disallowedReferences",
            format!(" {pb}\n"),
            vec![&a, &b],
            Some(vec![&b]),
        ),
        ("disallowedReferences", pb.clone(), vec![&c], None),
        // The closure of c contains a.
        ("allowedRequisites", pc.clone(), vec![&c], Some(vec![&a])),
        ("allowedRequisites", format!("{pc} {pa}"), vec![&c], None),
        ("disallowedRequisites", pa.clone(), vec![&c], Some(vec![&a])),
        ("disallowedRequisites", pb.clone(), vec![&c, &a], None),
    ];
    for (i, (attr, value, refs, bad)) in cases.into_iter().enumerate() {
        let (drv_path, drv) = ia_drv(&format!("refs{i}"), &["out"], &[(attr, &value)]);
        let result = build_with_refs(&f, &drv_path, &drv, &refs, &inputs);
        match bad {
            None => {
                result.unwrap_or_else(|e| panic!("case {i} ({attr}): {e}"));
            }
            Some(bad) => {
                let listed: String = bad
                    .iter()
                    .map(|p| format!("\n  {}", f.store.print(p)))
                    .collect();
                assert_eq!(
                    rejected(result),
                    format!(
                        "output '{}' is not allowed to refer to the following paths:{listed}",
                        f.store.print(&out_path(&drv, "out"))
                    ),
                    "case {i} ({attr})"
                );
                assert_nothing_valid(&f.store, &drv);
            }
        }
    }
}

#[test]
fn output_names_in_reference_lists_and_self_references_of_requisites() {
    let f = fixture();
    // Both outputs refer to out. Legacy requisite checks leave out the output itself, so
    // `allowedRequisites = out` holds for both: out's closure is itself, dev's is {dev, out}.
    let (drv_path, drv) = ia_drv("names", &["out", "dev"], &[("allowedRequisites", "out")]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let out = scratch(&f.store, &outputs, "out");
    write(&output(&outputs, "out").location, &out);
    write(&output(&outputs, "dev").location, &out);
    register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new()).unwrap();

    // A name that is neither a store path nor an output.
    let (drv_path, drv) = ia_drv("bad-spec", &["out"], &[("allowedReferences", "out bin")]);
    let msg = rejected(build_with_refs(&f, &drv_path, &drv, &[], &BTreeSet::new()));
    assert_eq!(
        msg,
        "derivation contains an illegal reference specifier 'bin'"
    );

    // disallowedReferences naming another output.
    let (drv_path, drv) = ia_drv(
        "no-out",
        &["out", "dev"],
        &[("disallowedReferences", "out")],
    );
    let msg = rejected(build_with_refs(&f, &drv_path, &drv, &[], &BTreeSet::new()));
    assert_eq!(
        msg,
        format!(
            "output '{}' is not allowed to refer to the following paths:\n  {}",
            f.store.print(&out_path(&drv, "dev")),
            f.store.print(&out_path(&drv, "out"))
        )
    );
}

fn structured(json: serde_json::Value) -> String {
    json.to_string()
}

#[test]
fn output_checks_from_structured_attributes() {
    let f = fixture();
    let a = f
        .store
        .add_text_to_store("a", b"a", &BTreeSet::new())
        .unwrap();
    let inputs = BTreeSet::from([a.clone()]);
    let pa = f.store.print(&a);
    let a_size = f.store.path_info(&a).unwrap().nar_size;

    // Size limits: `out` is a file with the printed path of a (NAR of 96 + 56 bytes...).
    let json = structured(serde_json::json!({
        "outputChecks": {"out": {"maxSize": 10}}
    }));
    let (drv_path, drv) = ia_drv("size", &["out"], &[("__json", &json)]);
    let msg = rejected(build_with_refs(&f, &drv_path, &drv, &[&a], &inputs));
    let outputs_size = {
        let (_, s) = nar::NarNode::file(pa.clone().into_bytes()).nar_hash(HashAlgo::Sha256);
        s
    };
    assert_eq!(
        msg,
        format!(
            "path '{}' is too large at {outputs_size} bytes; limit is 10 bytes",
            f.store.print(&out_path(&drv, "out"))
        )
    );

    let json = structured(serde_json::json!({
        "outputChecks": {"out": {"maxSize": outputs_size, "maxClosureSize": outputs_size + a_size - 1}}
    }));
    let (drv_path, drv) = ia_drv("closure", &["out"], &[("__json", &json)]);
    let msg = rejected(build_with_refs(&f, &drv_path, &drv, &[&a], &inputs));
    assert_eq!(
        msg,
        format!(
            "closure of path '{}' is too large at {} bytes; limit is {} bytes",
            f.store.print(&out_path(&drv, "out")),
            outputs_size + a_size,
            outputs_size + a_size - 1
        )
    );

    let json = structured(serde_json::json!({
        "outputChecks": {"out": {"maxClosureSize": outputs_size + a_size}}
    }));
    let (drv_path, drv) = ia_drv("closure-ok", &["out"], &[("__json", &json)]);
    build_with_refs(&f, &drv_path, &drv, &[&a], &inputs).unwrap();

    // Per output: `dev` may not refer to `out`, `out` may refer to anything. The legacy
    // attribute is ignored when there are structured attributes.
    let json = structured(serde_json::json!({
        "outputChecks": {"dev": {"allowedReferences": []}},
        "allowedReferences": []
    }));
    let (drv_path, drv) = ia_drv(
        "per-output",
        &["out", "dev"],
        &[("__json", &json), ("allowedReferences", "")],
    );
    let msg = rejected(build_with_refs(&f, &drv_path, &drv, &[&a], &inputs));
    assert!(msg.starts_with(&format!(
        "output '{}'",
        f.store.print(&out_path(&drv, "dev"))
    )));

    // Structured requisite checks count the output itself.
    let json = structured(serde_json::json!({
        "outputChecks": {"out": {"allowedRequisites": [pa]}}
    }));
    let (drv_path, drv) = ia_drv("self-req", &["out"], &[("__json", &json)]);
    let msg = rejected(build_with_refs(&f, &drv_path, &drv, &[&a], &inputs));
    assert_eq!(
        msg,
        format!(
            "output '{0}' is not allowed to refer to the following paths:\n  {0}",
            f.store.print(&out_path(&drv, "out"))
        )
    );

    // Elements must be strings.
    let json = structured(serde_json::json!({
        "outputChecks": {"out": {"disallowedReferences": [1]}}
    }));
    let (drv_path, drv) = ia_drv("not-strings", &["out"], &[("__json", &json)]);
    match build_with_refs(&f, &drv_path, &drv, &[], &inputs) {
        Err(Rejection::Misc { message }) => assert_eq!(
            message,
            format!(
                "attribute 'disallowedReferences' of derivation '{}' must be a list of strings",
                f.store.print(&drv_path)
            )
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fixed_outputs_flat_and_recursive_with_every_algorithm() {
    let f = fixture();
    let contents = b"fixed contents\n";
    for algo in HashAlgo::ALL {
        // Flat: the hash of the file.
        let hash = hash_bytes(algo, contents);
        let name = format!("flat-{}", algo.name());
        let (drv_path, drv) = fixed_drv(&f.store, &name, IngestionMethod::Flat, hash);
        let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
        std::fs::write(&output(&outputs, "out").location, contents).unwrap();
        let reg = register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new()).unwrap();
        let info = f.store.path_info(&out_path(&drv, "out")).unwrap();
        assert_eq!(
            info.ca,
            Some(ContentAddress::Fixed {
                method: IngestionMethod::Flat,
                hash
            })
        );
        assert_eq!(info.deriver.as_ref(), Some(&drv_path));
        assert_eq!(
            reg.outputs["out"],
            drover::engine::store::PathInfo {
                registration_time: 0,
                ..info
            }
        );

        // Recursive: the hash of the NAR.
        let node = nar::NarNode::directory([("f", nar::NarNode::file(contents.to_vec()))]);
        let (hash, _) = node.nar_hash(algo);
        let name = format!("rec-{}", algo.name());
        let (drv_path, drv) = fixed_drv(&f.store, &name, IngestionMethod::Recursive, hash);
        let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
        node.restore_to(&output(&outputs, "out").location).unwrap();
        register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new()).unwrap();
        let info = f.store.path_info(&out_path(&drv, "out")).unwrap();
        assert_eq!(info.nar_hash, node.nar_hash(HashAlgo::Sha256).0);
    }
}

#[test]
fn a_fixed_output_hash_mismatch_registers_the_real_path_and_reports_both_hashes() {
    let f = fixture();
    let wanted = hash_bytes(HashAlgo::Sha256, b"expected");
    let (drv_path, drv) = fixed_drv(&f.store, "fo", IngestionMethod::Flat, wanted);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    std::fs::write(&output(&outputs, "out").location, b"actual").unwrap();
    let got = hash_bytes(HashAlgo::Sha256, b"actual");
    match register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new()) {
        Err(Rejection::OutputRejected {
            message,
            hash_mismatch: true,
        }) => assert_eq!(
            message,
            format!(
                "hash mismatch in fixed-output derivation '{}':\n  specified: {}\n     got:    {}",
                f.store.print(&drv_path),
                wanted.to_sri(),
                got.to_sri()
            )
        ),
        other => panic!("{other:?}"),
    }
    let real = f
        .store
        .store_dir()
        .make_fixed_output_path(IngestionMethod::Flat, &got, "fo", &BTreeSet::new(), false)
        .unwrap();
    let info = f.store.path_info(&real).unwrap();
    assert_eq!(
        info.ca,
        Some(ContentAddress::Fixed {
            method: IngestionMethod::Flat,
            hash: got
        })
    );
    assert_eq!(std::fs::read(f.store.real_path(&real)).unwrap(), b"actual");
    assert!(!f.store.is_valid(&out_path(&drv, "out")).unwrap());
    assert!(!f.store.real_path(&out_path(&drv, "out")).exists());

    // Again, now that the real path is valid: the same error, and the copy goes away.
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    std::fs::write(&output(&outputs, "out").location, b"actual").unwrap();
    let result = register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new());
    assert!(matches!(
        result,
        Err(Rejection::OutputRejected {
            hash_mismatch: true,
            ..
        })
    ));
    assert_eq!(f.store.path_info(&real).unwrap().nar_hash, info.nar_hash);
    assert!(!f.store.real_path(&out_path(&drv, "out")).exists());
}

#[test]
fn check_mode_of_a_fixed_output() {
    let f = fixture();
    let hash = hash_bytes(HashAlgo::Sha1, b"same");
    let (drv_path, drv) = fixed_drv(&f.store, "fo-check", IngestionMethod::Flat, hash);
    build_out(&f, &drv_path, &drv, BuildMode::Normal, "same", |_| {}).unwrap();
    let reg = build_out(&f, &drv_path, &drv, BuildMode::Check, "same", |_| {}).unwrap();
    assert_eq!(reg.outputs["out"].path, out_path(&drv, "out"));
    // Other contents are a hash mismatch, and nothing new becomes valid.
    let before = f.store.query_all_valid_paths().unwrap();
    let result = build_out(&f, &drv_path, &drv, BuildMode::Check, "other", |_| {});
    assert!(matches!(
        result,
        Err(Rejection::OutputRejected {
            hash_mismatch: true,
            ..
        })
    ));
    assert_eq!(f.store.query_all_valid_paths().unwrap(), before);
    assert_eq!(
        std::fs::read(f.store.real_path(&out_path(&drv, "out"))).unwrap(),
        b"same"
    );
}

#[test]
fn fixed_outputs_must_be_plain_files_when_flat_and_refer_to_nothing() {
    let f = fixture();
    let (drv_path, drv) = fixed_drv(
        &f.store,
        "exe",
        IngestionMethod::Flat,
        hash_bytes(HashAlgo::Sha256, b"x"),
    );
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let loc = output(&outputs, "out").location.clone();
    write(&loc, "x");
    std::fs::set_permissions(&loc, PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(
        rejected(register(
            &f.store,
            &drv_path,
            &drv,
            outputs,
            &BTreeSet::new()
        )),
        format!(
            "output path '{}' should be a non-executable regular file since recursive hashing \
             is not enabled (outputHashMode=flat)",
            loc.display()
        )
    );

    let input = f
        .store
        .add_text_to_store("in", b"i", &BTreeSet::new())
        .unwrap();
    let text = f.store.print(&input);
    let (drv_path, drv) = fixed_drv(
        &f.store,
        "refs",
        IngestionMethod::Recursive,
        nar::NarNode::file(text.clone().into_bytes())
            .nar_hash(HashAlgo::Sha256)
            .0,
    );
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    write(&output(&outputs, "out").location, &text);
    assert_eq!(
        rejected(register(
            &f.store,
            &drv_path,
            &drv,
            outputs,
            &BTreeSet::from([input])
        )),
        format!(
            "illegal path references in fixed-output derivation '{}'",
            f.store.print(&drv_path)
        )
    );
    assert_nothing_valid(&f.store, &drv);
}

/// Builds `drv` (one output `out`) with `contents`, which may name `$out` as `@out@`.
fn build_out<'a>(
    f: &Fixture,
    drv_path: &'a StorePath,
    drv: &'a Derivation,
    mode: BuildMode,
    contents: &str,
    adjust: impl FnOnce(&mut RegisterRequest<'a>),
) -> Result<Registered, Rejection> {
    let outputs = prepare_outputs(&f.store, drv_path, drv, mode).unwrap();
    let out = scratch(&f.store, &outputs, "out");
    write(
        &output(&outputs, "out").location,
        &contents.replace("@out@", &out),
    );
    let mut req = RegisterRequest::new(drv_path, drv, outputs, &NO_INPUTS);
    req.mode = mode;
    adjust(&mut req);
    register_outputs(&f.store, req)
}

#[test]
fn check_mode_compares_with_the_registered_output() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("det", &["out"], &[]);
    // A self-reference: in check mode the builder writes its scratch path, which must be
    // rewritten back for the hashes to compare equal.
    build_out(&f, &drv_path, &drv, BuildMode::Normal, "I am @out@", |_| {}).unwrap();
    let path = out_path(&drv, "out");
    let before = f.store.path_info(&path).unwrap();

    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Check).unwrap();
    let o = output(&outputs, "out");
    assert_eq!(
        o.scratch,
        fallback_path(f.store.store_dir(), &drv_path, &path)
    );
    assert_ne!(o.scratch, path);
    assert_eq!(
        input_rewrites(&outputs),
        BTreeMap::from([(
            path.hash_part().to_owned(),
            o.scratch.hash_part().to_owned()
        )])
    );
    let scratch_loc = o.location.clone();
    drop(outputs);

    let reg = build_out(&f, &drv_path, &drv, BuildMode::Check, "I am @out@", |_| {}).unwrap();
    assert_eq!(reg.outputs["out"].nar_hash, before.nar_hash);
    assert_eq!(f.store.path_info(&path).unwrap(), before);
    assert!(!scratch_loc.exists(), "the scratch copy is removed");

    let differs = |keep_failed| {
        build_out(&f, &drv_path, &drv, BuildMode::Check, "I differ", |r| {
            r.keep_failed = keep_failed
        })
    };
    let real = f.store.real_path(&path);
    match differs(false) {
        Err(Rejection::NotDeterministic { message }) => assert_eq!(
            message,
            format!(
                "derivation '{}' may not be deterministic: output '{}' differs",
                f.store.print(&drv_path),
                real.display()
            )
        ),
        other => panic!("{other:?}"),
    }
    assert!(!check_location(&f.store, &path).exists());
    match differs(true) {
        Err(Rejection::NotDeterministic { message }) => assert_eq!(
            message,
            format!(
                "derivation '{}' may not be deterministic: output '{}' differs from '{}'",
                f.store.print(&drv_path),
                real.display(),
                check_location(&f.store, &path).display()
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(check_location(&f.store, &path)).unwrap(),
        "I differ"
    );
    // The registered output is untouched.
    assert_eq!(f.store.path_info(&path).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        format!("I am {}", f.store.print(&path))
    );
}

#[test]
fn outputs_valid_already_are_kept_and_their_scratch_hashes_rewritten_in_the_others() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("partial", &["out", "dev"], &[]);
    // First build: both outputs.
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let out = scratch(&f.store, &outputs, "out");
    write(&output(&outputs, "out").location, "out");
    write(&output(&outputs, "dev").location, &format!("dev of {out}"));
    register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new()).unwrap();
    let dev_info = f.store.path_info(&out_path(&drv, "dev")).unwrap();
    // dev disappears (garbage collected).
    f.store.delete_path(&out_path(&drv, "dev")).unwrap();

    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let o = output(&outputs, "out");
    assert!(o.already_valid);
    assert_ne!(o.scratch, o.path, "a valid output is redirected");
    assert!(!output(&outputs, "dev").already_valid);
    let out_scratch = scratch(&f.store, &outputs, "out");
    let out_loc = o.location.clone();
    write(&out_loc, "out, rebuilt");
    write(
        &output(&outputs, "dev").location,
        &format!("dev of {out_scratch}"),
    );
    let reg = register(&f.store, &drv_path, &drv, outputs, &BTreeSet::new()).unwrap();
    assert_eq!(reg.outputs.keys().collect::<Vec<_>>(), ["dev"]);
    let new_dev = f.store.path_info(&out_path(&drv, "dev")).unwrap();
    assert_eq!(
        new_dev.nar_hash, dev_info.nar_hash,
        "scratch hash rewritten"
    );
    assert_eq!(new_dev.references, BTreeSet::from([out_path(&drv, "out")]));
    assert_eq!(
        std::fs::read_to_string(f.store.real_path(&out_path(&drv, "out"))).unwrap(),
        "out"
    );
    assert!(!out_loc.exists(), "the redirected copy is removed");
}

#[test]
fn repair_replaces_corrupt_contents() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("fragile", &["out"], &[]);
    build_out(&f, &drv_path, &drv, BuildMode::Normal, "good @out@", |_| {}).unwrap();
    let path = out_path(&drv, "out");
    let good = f.store.path_info(&path).unwrap();
    let real = f.store.real_path(&path);
    std::fs::set_permissions(&real, PermissionsExt::from_mode(0o644)).unwrap();
    write(&real, "corrupted");

    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Repair).unwrap();
    assert!(!output(&outputs, "out").already_valid, "corrupt");
    assert_ne!(output(&outputs, "out").scratch, path);
    drop(outputs);
    build_out(&f, &drv_path, &drv, BuildMode::Repair, "good @out@", |_| {}).unwrap();
    assert_eq!(f.store.path_info(&path).unwrap().nar_hash, good.nar_hash);
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        format!("good {}", f.store.print(&path))
    );
    assert_eq!(std::fs::metadata(&real).unwrap().mode() & 0o7777, 0o444);

    // Intact outputs are left alone when repairing.
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Repair).unwrap();
    assert!(output(&outputs, "out").already_valid);
}

#[test]
fn repeated_rounds_register_only_at_the_end_and_compare() {
    let f = fixture();
    let (drv_path, drv) = ia_drv("rounds", &["out"], &[]);
    let path = out_path(&drv, "out");
    let round = |n: u32, contents: &str, prev: Option<&Registered>, keep: bool, enforce: bool| {
        build_out(&f, &drv_path, &drv, BuildMode::Normal, contents, |r| {
            r.round = n;
            r.nr_rounds = 2;
            r.previous_round = prev;
            r.keep_failed = keep;
            r.enforce_determinism = enforce;
        })
    };
    // Same twice.
    let first = round(1, "same", None, false, true).unwrap();
    assert!(
        !f.store.is_valid(&path).unwrap(),
        "not registered after round 1"
    );
    let second = round(2, "same", Some(&first), false, true).unwrap();
    assert_eq!(second.round_differs, None);
    assert!(f.store.is_valid(&path).unwrap());
    f.store.delete_path(&path).unwrap();

    // Different, enforced: nothing registered.
    let first = round(1, "one", None, false, true).unwrap();
    match round(2, "two", Some(&first), false, true) {
        Err(Rejection::RoundDiffers { message }) => assert_eq!(
            message,
            format!(
                "output '{}' of '{}' differs from previous round",
                f.store.print(&path),
                f.store.print(&drv_path)
            )
        ),
        other => panic!("{other:?}"),
    }
    assert!(!f.store.is_valid(&path).unwrap());

    // With keep-failed the first round is kept as `.check` and named.
    let first = round(1, "one", None, true, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(check_location(&f.store, &path)).unwrap(),
        "one"
    );
    match round(2, "two", Some(&first), true, true) {
        Err(Rejection::RoundDiffers { message }) => assert_eq!(
            message,
            format!(
                "output '{0}' of '{1}' differs from '{0}.check' from previous round",
                f.store.print(&path),
                f.store.print(&drv_path)
            )
        ),
        other => panic!("{other:?}"),
    }

    // Not enforced: registered, with the message.
    let first = round(1, "one", None, false, false).unwrap();
    let second = round(2, "two", Some(&first), false, false).unwrap();
    assert!(second.round_differs.is_some());
    assert!(f.store.is_valid(&path).unwrap());
    assert!(
        !check_location(&f.store, &path).exists(),
        ".check removed at the end"
    );
}

/// With a build user, outputs must be its own; a hard link to someone else's file is
/// refused, hard links between the outputs are not. Changing owners needs root.
#[test]
fn a_build_users_outputs_must_be_its_own() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: changing file owners needs root");
        return;
    }
    const BUILD_UID: u32 = 30001;
    let f = fixture();
    let chown = |p: &Path| std::os::unix::fs::lchown(p, Some(BUILD_UID), None).unwrap();
    let with_uid = |r: &mut RegisterRequest<'_>| r.build_uid = Some(BUILD_UID);

    // Owned by someone else at the top: suspicious.
    let (drv_path, drv) = ia_drv("foreign", &["out"], &[]);
    let msg = rejected(build_out(
        &f,
        &drv_path,
        &drv,
        BuildMode::Normal,
        "x",
        with_uid,
    ));
    assert!(
        msg.starts_with("suspicious ownership or permission on"),
        "{msg}"
    );

    // A hard link to a file of root's inside: refused.
    let (drv_path, drv) = ia_drv("smuggler", &["out"], &[]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let loc = output(&outputs, "out").location.clone();
    mkdir(&loc);
    let secret = f.store.config().state_dir.join("secret");
    write(&secret, "secret");
    std::fs::hard_link(&secret, loc.join("shadow")).unwrap();
    chown(&loc);
    let mut req = RegisterRequest::new(&drv_path, &drv, outputs, &NO_INPUTS);
    with_uid(&mut req);
    match register_outputs(&f.store, req) {
        Err(Rejection::Misc { message }) => assert_eq!(
            message,
            format!(
                "invalid ownership on file '{}'",
                loc.join("shadow").display()
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_nothing_valid(&f.store, &drv);

    // Hard links between two outputs of the build user: fine.
    let (drv_path, drv) = ia_drv("linked", &["out", "dev"], &[]);
    let outputs = prepare_outputs(&f.store, &drv_path, &drv, BuildMode::Normal).unwrap();
    let (out, dev) = (
        output(&outputs, "out").location.clone(),
        output(&outputs, "dev").location.clone(),
    );
    mkdir(&out);
    mkdir(&dev);
    write(&out.join("f"), "shared");
    std::fs::hard_link(out.join("f"), dev.join("g")).unwrap();
    for p in [&out, &dev, &out.join("f")] {
        chown(p);
    }
    let mut req = RegisterRequest::new(&drv_path, &drv, outputs, &NO_INPUTS);
    with_uid(&mut req);
    register_outputs(&f.store, req).unwrap();
    assert_eq!(std::fs::metadata(dev.join("g")).unwrap().uid(), 0);
}
