use std::collections::BTreeSet;
use std::convert::Infallible;

use super::*;
use crate::engine::format::hash::hash_bytes;

fn store() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn path(base: &str) -> StorePath {
    StorePath::from_base_name(base).unwrap()
}

const OUT: &str = "/nix/store/nvcii2w5l03zykhqbncxbdcvpjwrvhxg-n4";
const DEP: &str = "/nix/store/18f3vhlwdsfs8038ih72x9qggydiykn1-n4.drv";
const SRC: &str = "/nix/store/y1hqaydxlirj9vld6f60xpy0n5pk5h0j-builder.sh";

fn sample_text() -> String {
    format!(
        r#"Derive([("dev","","",""),("out","","","")],[("{DEP}",["dev","out"])],["{SRC}"],"x86_64-linux","/bin/sh",["-c","echo \"hi\"\n\t\\"],[("a","x\ry"),("out","{OUT}")])"#
    )
}

fn no_resolver(p: &StorePath) -> Result<Derivation, Infallible> {
    panic!("unexpected resolve of {p}")
}

#[test]
fn parses_every_field() {
    let drv = Derivation::parse(sample_text().as_bytes(), &store()).unwrap();
    assert_eq!(drv.output_names().collect::<Vec<_>>(), vec!["dev", "out"]);
    assert!(
        drv.outputs
            .values()
            .all(|o| *o == DerivationOutput::Deferred)
    );
    assert_eq!(
        drv.input_drvs[&store().parse(DEP).unwrap()],
        BTreeSet::from(["dev".to_owned(), "out".to_owned()])
    );
    assert!(drv.input_srcs.contains(&store().parse(SRC).unwrap()));
    assert_eq!(drv.system, "x86_64-linux");
    assert_eq!(drv.builder, "/bin/sh");
    assert_eq!(
        drv.args,
        vec![BString::from("-c"), BString::from("echo \"hi\"\n\t\\")]
    );
    assert_eq!(drv.env_var("a").unwrap(), "x\ry");
    assert_eq!(drv.to_aterm(&store()), sample_text().as_bytes());
    assert_eq!(
        drv.derivation_type().unwrap(),
        DerivationType::InputAddressed { deferred: true }
    );
}

#[test]
fn keeps_non_utf8_bytes() {
    let text = b"Derive([(\"out\",\"\",\"\",\"\")],[],[],\"x\",\"/b\",[\"\xff\xfe\"],[(\"k\xc3\",\"v\x80\\\\\")])";
    let drv = Derivation::parse(text, &store()).unwrap();
    assert_eq!(drv.args[0].as_slice(), b"\xff\xfe");
    assert_eq!(drv.env.keys().next().unwrap().as_slice(), b"k\xc3");
    assert_eq!(drv.env.values().next().unwrap().as_slice(), b"v\x80\\");
    assert_eq!(drv.to_aterm(&store()), text);
    let (k, v) = drv.env_os().next().unwrap();
    use std::os::unix::ffi::OsStrExt;
    assert_eq!(
        (k.as_bytes(), v.as_bytes()),
        (&b"k\xc3"[..], &b"v\x80\\"[..])
    );
}

#[test]
fn reads_lenient_escapes_like_nix() {
    // Nix reads `\x` as `x` and raw control characters as themselves.
    let text = b"Derive([(\"out\",\"\",\"\",\"\")],[],[],\"x\",\"/b\\in\",[\"a\nb\\q\"],[])";
    let drv = Derivation::parse(text, &store()).unwrap();
    assert_eq!(drv.builder, "/bin");
    assert_eq!(drv.args[0], "a\nbq");
}

#[test]
fn prints_system_and_output_fields_verbatim() {
    // Nix escapes only the builder, args and environment.
    let mut drv = Derivation::parse(sample_text().as_bytes(), &store()).unwrap();
    drv.system = "a\tb".into();
    drv.builder = "a\tb".into();
    let text = drv.to_aterm(&store());
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(r#"["{SRC}"],"a	b","a\tb","#.replace("{SRC}", SRC).as_str()));
}

fn parse_err(text: &str) -> DerivationError {
    Derivation::parse(text.as_bytes(), &store()).unwrap_err()
}

#[test]
fn errors_name_what_and_where() {
    let e = parse_err("Derive[");
    assert!(
        matches!(e, DerivationError::Expected { offset: 0, .. }),
        "{e}"
    );
    assert_eq!(e.to_string(), "expected 'Derive(' at offset 0");

    let e = parse_err(r#"Derive([("out","","","")],[],[],"x","/b",[],[]"#);
    assert_eq!(e.to_string(), "expected ')' at offset 46");

    let e = parse_err(r#"Derive([("out","","","")] [],[],"x","/b",[],[])"#);
    assert_eq!(e.to_string(), "expected ',' at offset 25");

    let e = parse_err(r#"Derive([("out","","","")],[],[],"x","/b",["a" "b"],[])"#);
    assert_eq!(e.to_string(), "expected ',' or ']' at offset 45");

    let e = parse_err(r#"Derive([("out","","","")],[],[],"x","/b",["a"#);
    assert_eq!(e.to_string(), "unterminated string starting at offset 42");
    let e = parse_err(r#"Derive([("out","","","")],[],[],"x","/b",["a\"#);
    assert!(matches!(
        e,
        DerivationError::UnterminatedString { offset: 42 }
    ));

    let e = parse_err(r#"Derive([("out","/tmp/x","","")],[],[],"x","/b",[],[])"#);
    assert!(
        matches!(&e, DerivationError::BadStorePath { path, offset: 15, source: StorePathError::NotInStore(_) } if path == "/tmp/x"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("bad store path '/tmp/x' at offset 15")
    );

    let e = parse_err(
        r#"Derive([("out","","","")],[],["/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"],"x","/b",[],[])"#,
    );
    assert!(matches!(
        e,
        DerivationError::BadStorePath {
            offset: 30,
            source: StorePathError::BadHashChar { .. },
            ..
        }
    ));

    let e = parse_err(r#"Derive([("out","","","")],[],[],"x\"y","/b",[],[])"#);
    assert_eq!(
        e.to_string(),
        "the system at offset 32 has a backslash, but Nix writes it verbatim"
    );

    let e = parse_err(r#"Derive([("out","","","")],[],[],"x","/b",[],[]))"#);
    assert_eq!(
        e.to_string(),
        "unexpected data after the derivation at offset 47"
    );
}

#[test]
fn rejects_unsorted_and_repeated_entries() {
    let e = parse_err(r#"Derive([("out","","",""),("dev","","","")],[],[],"x","/b",[],[])"#);
    assert_eq!(
        e.to_string(),
        "output 'dev' at offset 25 is out of order or repeated"
    );
    let e = parse_err(r#"Derive([("out","","",""),("out","","","")],[],[],"x","/b",[],[])"#);
    assert!(matches!(
        e,
        DerivationError::Unsorted {
            what: "output",
            offset: 25,
            ..
        }
    ));
    let e = parse_err(&format!(
        r#"Derive([("out","","","")],[],["{SRC}","{SRC}"],"x","/b",[],[])"#
    ));
    assert!(matches!(
        e,
        DerivationError::Unsorted {
            what: "input source",
            ..
        }
    ));
    let e = parse_err(&format!(
        r#"Derive([("out","","","")],[("{DEP}",["out","dev"])],[],"x","/b",[],[])"#
    ));
    assert!(matches!(
        e,
        DerivationError::Unsorted {
            what: "input derivation output",
            ..
        }
    ));
    let e = parse_err(r#"Derive([("out","","","")],[],[],"x","/b",[],[("b",""),("a","")])"#);
    assert!(matches!(
        e,
        DerivationError::Unsorted {
            what: "environment variable",
            offset: 54,
            ..
        }
    ));
}

#[test]
fn rejects_bad_outputs() {
    let e = parse_err(r#"Derive([("o\"ut","","","")],[],[],"x","/b",[],[])"#);
    assert!(
        matches!(e, DerivationError::BadOutputName { offset: 9, .. }),
        "{e}"
    );
    let e = parse_err(r#"Derive([("out","","sha257","")],[],[],"x","/b",[],[])"#);
    assert!(
        matches!(e, DerivationError::BadHash { offset: 18, .. }),
        "{e}"
    );
    let e = parse_err(&format!(
        r#"Derive([("out","{OUT}","sha256","abc")],[],[],"x","/b",[],[])"#
    ));
    assert!(matches!(e, DerivationError::BadHash { .. }), "{e}");
    let e = parse_err(&format!(
        r#"Derive([("out","{OUT}","r:sha256","")],[],[],"x","/b",[],[])"#
    ));
    assert!(
        matches!(e, DerivationError::BadOutput { offset: 15, .. }),
        "{e}"
    );
    let e = parse_err(r#"Derive([("out","","","abc")],[],[],"x","/b",[],[])"#);
    assert!(
        matches!(e, DerivationError::BadOutput { offset: 21, .. }),
        "{e}"
    );
    let e = Derivation::parse(
        b"Derive([(\"out\",\"\xff\",\"\",\"\")],[],[],\"x\",\"/b\",[],[])",
        &store(),
    )
    .unwrap_err();
    assert!(
        matches!(e, DerivationError::NotUtf8 { offset: 15, .. }),
        "{e}"
    );
}

#[test]
fn parses_every_output_form() {
    let sha = hash_bytes(HashAlgo::Sha1, b"x");
    let text = format!(
        r#"Derive([("a","","r:sha256",""),("b","","",""),("c","","sha512","impure"),("out","{OUT}","sha1","{}")],[],[],"x","/b",[],[])"#,
        sha.to_base16()
    );
    let drv = Derivation::parse(text.as_bytes(), &store()).unwrap();
    assert_eq!(
        drv.outputs["a"],
        DerivationOutput::Floating {
            method: IngestionMethod::Recursive,
            algo: HashAlgo::Sha256
        }
    );
    assert_eq!(drv.outputs["b"], DerivationOutput::Deferred);
    assert_eq!(
        drv.outputs["c"],
        DerivationOutput::Impure {
            method: IngestionMethod::Flat,
            algo: HashAlgo::Sha512
        }
    );
    assert_eq!(
        drv.outputs["out"],
        DerivationOutput::Fixed {
            path: store().parse(OUT).unwrap(),
            hash: FixedOutputHash {
                method: IngestionMethod::Flat,
                hash: sha
            }
        }
    );
    assert_eq!(drv.to_aterm(&store()), text.as_bytes());
    assert!(matches!(
        drv.derivation_type(),
        Err(DerivationError::MixedOutputTypes)
    ));
    // A base-32 hash is accepted, as Nix does, and printed in base 16.
    let text32 = text.replace(&sha.to_base16(), &sha.to_base32());
    assert_eq!(Derivation::parse(text32.as_bytes(), &store()).unwrap(), drv);
}

#[test]
fn derivation_types() {
    let fixed = |name: &str| {
        (
            name.to_owned(),
            DerivationOutput::Fixed {
                path: store().parse(OUT).unwrap(),
                hash: FixedOutputHash {
                    method: IngestionMethod::Recursive,
                    hash: hash_bytes(HashAlgo::Sha256, b""),
                },
            },
        )
    };
    let mut drv = Derivation::default();
    assert!(matches!(
        drv.derivation_type(),
        Err(DerivationError::NoOutputs)
    ));
    drv.outputs.extend([fixed("out")]);
    assert!(drv.is_fixed_output());
    assert!(!drv.derivation_type().unwrap().is_sandboxed());
    drv.outputs.extend([fixed("dev")]);
    assert!(matches!(
        drv.derivation_type(),
        Err(DerivationError::BadFixedOutput)
    ));
    assert!(!drv.is_fixed_output());
    let floating = |algo| DerivationOutput::Floating {
        method: IngestionMethod::Recursive,
        algo,
    };
    drv.outputs = [
        ("a".to_owned(), floating(HashAlgo::Sha256)),
        ("b".to_owned(), floating(HashAlgo::Sha256)),
    ]
    .into();
    assert_eq!(
        drv.derivation_type().unwrap(),
        DerivationType::ContentAddressed { fixed: false }
    );
    drv.outputs.insert("c".into(), floating(HashAlgo::Sha1));
    assert!(matches!(
        drv.derivation_type(),
        Err(DerivationError::FloatingHashTypes)
    ));
}

#[test]
fn placeholder_matches_nix() {
    // `builtins.placeholder "out"` in Nix 2.8.
    assert_eq!(
        hash_placeholder("out"),
        "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"
    );
}

#[test]
fn downstream_placeholder_matches_nix() {
    // `${a.dev}` of the floating `ca.drv` below, as instantiated by Nix 2.8 with
    // `--extra-experimental-features ca-derivations`: derivation { name = "ca"; system = "x";
    // builder = "/bin/sh"; __contentAddressed = true; outputs = [ "out" "dev" ];
    // outputHashAlgo = "sha1"; }
    let ca = path("ndaihn1kbymwlxxd6fyln7fsivciil8i-ca.drv");
    assert_eq!(
        downstream_placeholder(&ca, "dev"),
        "/0ji5drwj8cn59jsw4wnna5japm2w9lw9pc73n5133ldiygn7m5kd"
    );
}

/// `derivation { name = "t1"; system = "x"; builder = "/bin/sh"; outputs = [ "out" "dev" ];
/// e = "a\"b\\c\nd\te\r${"$"}{"; }`, instantiated by Nix 2.8.
fn new_t1() -> (Derivation, BTreeSet<String>) {
    let mut drv = Derivation {
        system: "x".into(),
        builder: "/bin/sh".into(),
        ..Derivation::default()
    };
    for (k, v) in [
        ("builder", "/bin/sh"),
        ("e", "a\"b\\c\nd\te\r${"),
        ("name", "t1"),
        ("outputs", "out dev"),
        ("system", "x"),
    ] {
        drv.env.insert(k.into(), v.into());
    }
    (drv, ["out".to_owned(), "dev".to_owned()].into())
}

#[test]
fn fills_in_a_new_derivation_like_nix() {
    let sd = store();
    let (mut drv, names) = new_t1();
    let mut hashes = DrvHashes::new();
    let drv_path = drv
        .fill_in_outputs(
            &sd,
            "t1",
            &NewOutputs::InputAddressed(names),
            &mut hashes,
            no_resolver,
        )
        .unwrap();
    assert_eq!(
        sd.display(&drv_path),
        "/nix/store/m6pjp1kg8vqiqhygl8k1fkp1fm7pl6kg-t1.drv"
    );
    let paths = drv.output_paths();
    assert_eq!(
        sd.display(paths["dev"].unwrap()),
        "/nix/store/kldwgq8fajd7f1v0vnkbi8x5088gmblp-t1-dev"
    );
    assert_eq!(
        sd.display(paths["out"].unwrap()),
        "/nix/store/6c9pk6n79xyrq75nr6pd76azc6x125qm-t1"
    );
    assert_eq!(
        drv.env_var("dev").unwrap(),
        "/nix/store/kldwgq8fajd7f1v0vnkbi8x5088gmblp-t1-dev"
    );
    assert!(hashes.get(&drv_path).is_some());
    drv.check_outputs(&sd, &drv_path, &mut hashes, no_resolver)
        .unwrap();

    // A dependent: `derivation { name = "t2"; system = "x"; builder = "/bin/sh";
    // d = "${t1.dev}"; f = builtins.toFile "x" "y"; }`; t1 comes from the cache.
    let x = sd.compute_text_path("x", b"y", &BTreeSet::new()).unwrap();
    let mut t2 = Derivation {
        system: "x".into(),
        builder: "/bin/sh".into(),
        input_drvs: [(drv_path.clone(), ["dev".to_owned()].into())].into(),
        input_srcs: [x.clone()].into(),
        ..Derivation::default()
    };
    for (k, v) in [
        ("builder", "/bin/sh".to_owned()),
        ("d", sd.display(paths["dev"].unwrap())),
        ("f", sd.display(&x)),
        ("name", "t2".to_owned()),
        ("outputs", "out".to_owned()),
        ("system", "x".to_owned()),
    ] {
        t2.env.insert(k.into(), v.into());
    }
    let t2_path = t2
        .fill_in_outputs(
            &sd,
            "t2",
            &NewOutputs::InputAddressed(["out".to_owned()].into()),
            &mut hashes,
            no_resolver,
        )
        .unwrap();
    assert_eq!(
        sd.display(&t2_path),
        "/nix/store/qspn42asnzdwj40iks1cmn6jbhhh63wf-t2.drv"
    );
    assert_eq!(
        sd.display(t2.outputs["out"].path().unwrap()),
        "/nix/store/r266y8x7d1lbnkv1j4ddnnvvxplyga5c-t2"
    );

    // Loading t1 through a resolver instead of the cache gives the same hash.
    let mut fresh = DrvHashes::new();
    let t1 = drv.clone();
    let h = fresh
        .path_hash(&sd, &t2_path, |p: &StorePath| {
            if *p == t2_path {
                Ok(t2.clone())
            } else if *p == drv_path {
                Ok(t1.clone())
            } else {
                Err(format!("no {p}"))
            }
        })
        .unwrap()
        .clone();
    assert_eq!(Some(&h), hashes.get(&t2_path));
    assert_eq!(fresh.len(), 2);
}

#[test]
fn check_outputs_catches_wrong_paths() {
    let sd = store();
    let (mut drv, names) = new_t1();
    let mut hashes = DrvHashes::new();
    let drv_path = drv
        .fill_in_outputs(
            &sd,
            "t1",
            &NewOutputs::InputAddressed(names),
            &mut hashes,
            no_resolver,
        )
        .unwrap();
    let mut bad_env = drv.clone();
    bad_env.env.insert("dev".into(), "/nix/store/x".into());
    assert!(matches!(
        bad_env.check_outputs(&sd, &drv_path, &mut hashes, no_resolver),
        Err(DerivationError::WrongEnv { .. })
    ));
    let mut bad_path = drv.clone();
    bad_path.outputs.insert(
        "dev".into(),
        DerivationOutput::InputAddressed(path("6c9pk6n79xyrq75nr6pd76azc6x125qm-t1-dev")),
    );
    assert!(matches!(
        bad_path.check_outputs(&sd, &drv_path, &mut hashes, no_resolver),
        Err(DerivationError::WrongOutputPath { .. })
    ));
    let other = path("m6pjp1kg8vqiqhygl8k1fkp1fm7pl6kg-t9.drv");
    assert!(matches!(
        drv.check_outputs(&sd, &other, &mut hashes, no_resolver),
        Err(DerivationError::WrongOutputPath { .. })
    ));
}

#[test]
fn fixed_output_derivation_like_nix() {
    // derivation { name="t1"; system="x"; builder="/bin/sh"; outputHashMode="recursive";
    //   outputHash="sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; }
    let sd = store();
    let mut drv = Derivation {
        system: "x".into(),
        builder: "/bin/sh".into(),
        ..Derivation::default()
    };
    for (k, v) in [
        ("builder", "/bin/sh"),
        ("name", "t1"),
        (
            "outputHash",
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ),
        ("outputHashMode", "recursive"),
        ("system", "x"),
    ] {
        drv.env.insert(k.into(), v.into());
    }
    let hash = FixedOutputHash {
        method: IngestionMethod::Recursive,
        hash: Hash::parse_sri("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").unwrap(),
    };
    let mut hashes = DrvHashes::new();
    let p = drv
        .fill_in_outputs(
            &sd,
            "t1",
            &NewOutputs::Fixed(hash),
            &mut hashes,
            no_resolver,
        )
        .unwrap();
    assert_eq!(
        sd.display(&p),
        "/nix/store/wyxrialvcxrv5lwhfiplxdq9b9s3p8h2-t1.drv"
    );
    assert_eq!(hashes.get(&p).unwrap().kind, DrvHashKind::Regular);
}

#[test]
fn floating_outputs_are_deferred() {
    let sd = store();
    let (mut drv, names) = new_t1();
    let mut hashes = DrvHashes::new();
    let spec = NewOutputs::Floating {
        names,
        method: IngestionMethod::Recursive,
        algo: HashAlgo::Sha256,
    };
    let p = drv
        .fill_in_outputs(&sd, "t1", &spec, &mut hashes, no_resolver)
        .unwrap();
    assert_eq!(
        drv.env_var("out").unwrap(),
        hash_placeholder("out").as_str()
    );
    assert_eq!(hashes.get(&p).unwrap().kind, DrvHashKind::Deferred);
    assert_eq!(drv.output_paths()["out"], None);

    // A dependent of a floating derivation stays deferred.
    let mut dep = Derivation {
        system: "x".into(),
        builder: "/bin/sh".into(),
        input_drvs: [(p.clone(), ["out".to_owned()].into())].into(),
        ..Derivation::default()
    };
    dep.fill_in_outputs(
        &sd,
        "dep",
        &NewOutputs::InputAddressed(["out".to_owned()].into()),
        &mut hashes,
        no_resolver,
    )
    .unwrap();
    assert_eq!(dep.outputs["out"], DerivationOutput::Deferred);
    assert_eq!(dep.env_var("out").unwrap(), "");
}

#[test]
fn hashing_errors() {
    let sd = store();
    let a = path("m6pjp1kg8vqiqhygl8k1fkp1fm7pl6kg-a.drv");
    let b = path("qspn42asnzdwj40iks1cmn6jbhhh63wf-b.drv");
    let needs = |p: &StorePath| Derivation {
        outputs: [("out".to_owned(), DerivationOutput::Deferred)].into(),
        input_drvs: [(p.clone(), ["out".to_owned()].into())].into(),
        ..Derivation::default()
    };
    let (da, db) = (needs(&b), needs(&a));
    let resolve = |p: &StorePath| {
        if *p == a {
            Ok(da.clone())
        } else if *p == b {
            Ok(db.clone())
        } else {
            Err("missing")
        }
    };
    let mut hashes = DrvHashes::new();
    assert!(matches!(
        hashes.path_hash(&sd, &a, resolve),
        Err(DerivationError::Cycle(_))
    ));
    let c = path("18f3vhlwdsfs8038ih72x9qggydiykn1-c.drv");
    let e = hashes.path_hash(&sd, &c, resolve).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read input derivation '/nix/store/18f3vhlwdsfs8038ih72x9qggydiykn1-c.drv': missing"
    );
    let mut wants_dev = needs(&c);
    wants_dev
        .input_drvs
        .insert(c.clone(), ["dev".to_owned()].into());
    hashes.insert(
        c.clone(),
        DrvHash {
            hashes: [("out".to_owned(), sha256(b""))].into(),
            kind: DrvHashKind::Regular,
        },
    );
    assert!(matches!(
        hashes.hash_derivation_modulo(&sd, &wants_dev, false, no_resolver),
        Err(DerivationError::MissingInputOutput { .. })
    ));
}

#[test]
fn deep_chains_do_not_recurse() {
    // 20,000 derivations in a chain: hashed once each, without a deep call stack.
    let sd = store();
    let n: usize = 20_000;
    let paths: Vec<StorePath> = (0..n)
        .map(|i| {
            StorePath::from_digest(
                crate::engine::format::hash::compress_hash(sha256(&i.to_le_bytes()).digest()),
                &format!("d{i}.drv"),
            )
            .unwrap()
        })
        .collect();
    let drv_of = |i: usize| Derivation {
        outputs: [("out".to_owned(), DerivationOutput::Deferred)].into(),
        input_drvs: if i == 0 {
            Default::default()
        } else {
            [(paths[i - 1].clone(), ["out".to_owned()].into())].into()
        },
        env: [("i".into(), i.to_string().into())].into(),
        ..Derivation::default()
    };
    let index: std::collections::HashMap<&StorePath, usize> =
        paths.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let mut calls = 0;
    let mut hashes = DrvHashes::new();
    hashes
        .path_hash(&sd, &paths[n - 1], |p: &StorePath| {
            calls += 1;
            Ok::<_, Infallible>(drv_of(index[p]))
        })
        .unwrap();
    assert_eq!(calls, n);
    assert_eq!(hashes.len(), n);
}

#[test]
fn json_escapes_like_nix() {
    let text = b"Derive([(\"out\",\"\",\"\",\"\")],[],[],\"x\",\"/b\",[],[(\"e\",\"a\xff\xfeb\x01c\x7fd\x08\x0c\\\"\\\\\\n\\r\\t\")])";
    let drv = Derivation::parse(text, &store()).unwrap();
    let p = path("vqjvxs0n2fivavyixxp8vs6jrbyxbqxv-t3.drv");
    let mut out = Vec::new();
    write_show_derivation_json(&mut out, &store(), [(&p, &drv)]);
    let expected: &[u8] = b"{\n  \"/nix/store/vqjvxs0n2fivavyixxp8vs6jrbyxbqxv-t3.drv\": {\n    \"outputs\": {\n      \"out\": {}\n    },\n    \"inputSrcs\": [],\n    \"inputDrvs\": {},\n    \"system\": \"x\",\n    \"builder\": \"/b\",\n    \"args\": [],\n    \"env\": {\n      \"e\": \"a\xff\xfeb\\u0001c\x7fd\\u0008\\u000c\\\"\\\\\\n\\r\\t\"\n    }\n  }\n}\n";
    assert_eq!(out.as_bstr(), expected.as_bstr());
    let mut empty = Vec::new();
    write_show_derivation_json(&mut empty, &store(), []);
    assert_eq!(empty, b"{}\n");
}
