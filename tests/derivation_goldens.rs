//! Derivations written by real Nix 2.8 (tests/fixtures/derivations-*.json, copied from the
//! peer goldens): ATerm round trip, `.drv` paths, hash modulo, output paths, re-instantiation
//! and `nix show-derivation` JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use drover::engine::format::derivation::{
    Derivation, DerivationOutput, DrvHashes, NewOutputs, write_show_derivation_json,
};
use drover::engine::format::{StoreDir, StorePath};
use serde_json::Value;

struct Golden {
    drv_path: StorePath,
    name: String,
    aterm: String,
    hash_modulo: String,
    outputs: BTreeMap<String, String>,
    show: Value,
}

fn store() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn load(file: &str) -> Vec<Golden> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let json: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json["derivations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Golden {
            drv_path: store().parse(d["drv_path"].as_str().unwrap()).unwrap(),
            name: d["name"].as_str().unwrap().to_owned(),
            aterm: d["aterm"].as_str().unwrap().to_owned(),
            hash_modulo: d["hash_modulo_sha256"].as_str().unwrap().to_owned(),
            outputs: serde_json::from_value(d["outputs"].clone()).unwrap(),
            show: d["show_derivation"].clone(),
        })
        .collect()
}

fn all_goldens() -> Vec<Golden> {
    let mut all = load("derivations-basic.json");
    all.extend(load("derivations-rich.json"));
    assert!(all.len() >= 40, "expected the basic and rich sets");
    all
}

fn parsed(goldens: &[Golden]) -> HashMap<StorePath, Derivation> {
    goldens
        .iter()
        .map(|g| {
            let drv = Derivation::parse(g.aterm.as_bytes(), &store())
                .unwrap_or_else(|e| panic!("{}: {e}", g.drv_path));
            (g.drv_path.clone(), drv)
        })
        .collect()
}

#[test]
fn aterm_round_trips_byte_for_byte() {
    let goldens = all_goldens();
    let drvs = parsed(&goldens);
    for g in &goldens {
        let drv = &drvs[&g.drv_path];
        assert_eq!(
            String::from_utf8(drv.to_aterm(&store())).unwrap(),
            g.aterm,
            "{}",
            g.drv_path
        );
    }
    // The rich set has every escape Nix writes.
    let escapes = goldens.iter().find(|g| g.name == "x-escapes").unwrap();
    let tricky = drvs[&escapes.drv_path].env_var("tricky").unwrap();
    assert_eq!(
        tricky,
        "quote \" backslash \\ newline \n tab \t dollar $ brace ${x} unicode é☃ cr \r end"
    );
}

#[test]
fn drv_paths_match_nix() {
    let goldens = all_goldens();
    let drvs = parsed(&goldens);
    for g in &goldens {
        let drv = &drvs[&g.drv_path];
        assert_eq!(drv.name(None), Some(g.name.as_str()));
        assert_eq!(drv.name(Some(&g.drv_path)), Some(g.name.as_str()));
        assert_eq!(drv.drv_path(&store(), &g.name).unwrap(), g.drv_path);
    }
}

#[test]
fn hash_modulo_matches_nix() {
    let goldens = all_goldens();
    let drvs = parsed(&goldens);
    let mut hashes = DrvHashes::new();
    let mut loads = 0;
    for g in &goldens {
        let h = hashes
            .path_hash(&store(), &g.drv_path, |p: &StorePath| {
                loads += 1;
                drvs.get(p).cloned().ok_or("not a golden derivation")
            })
            .unwrap();
        for hash in h.hashes.values() {
            assert_eq!(hash.to_base16(), g.hash_modulo, "{}", g.drv_path);
        }
    }
    // The two sets share their first fixed-output derivations.
    assert_eq!(loads, drvs.len(), "each derivation is loaded once");
}

#[test]
fn output_paths_match_nix() {
    let goldens = all_goldens();
    let drvs = parsed(&goldens);
    let mut hashes = DrvHashes::new();
    for g in &goldens {
        let drv = &drvs[&g.drv_path];
        let paths: BTreeMap<String, String> = drv
            .output_paths()
            .into_iter()
            .map(|(o, p)| (o.to_owned(), store().display(p.unwrap())))
            .collect();
        assert_eq!(paths, g.outputs, "{}", g.drv_path);
        // Recomputed from the hash modulo (or the fixed hash), as Nix checks.
        drv.check_outputs(&store(), &g.drv_path, &mut hashes, |p: &StorePath| {
            drvs.get(p).cloned().ok_or("not a golden derivation")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn reinstantiating_gives_the_same_derivations() {
    // Strip the outputs of each golden derivation and fill them in again, as Nix's
    // `derivation` primop does: same outputs, environment and `.drv` path.
    let goldens = all_goldens();
    let drvs = parsed(&goldens);
    let mut hashes = DrvHashes::new();
    let mut fixed = 0;
    for g in &goldens {
        let original = &drvs[&g.drv_path];
        let mut drv = original.clone();
        let names: BTreeSet<String> = drv.outputs.keys().cloned().collect();
        let spec = match &drv.outputs["out"] {
            DerivationOutput::Fixed { hash, .. } => {
                fixed += 1;
                NewOutputs::Fixed(*hash)
            }
            _ => NewOutputs::InputAddressed(names.clone()),
        };
        for name in &names {
            drv.env.remove(name.as_bytes());
        }
        drv.outputs.clear();
        let path = drv
            .fill_in_outputs(&store(), &g.name, &spec, &mut hashes, |p: &StorePath| {
                drvs.get(p).cloned().ok_or("not a golden derivation")
            })
            .unwrap();
        assert_eq!(path, g.drv_path);
        assert_eq!(&drv, original);
    }
    assert!(fixed >= 6, "the goldens have fixed-output derivations");
}

#[test]
fn show_derivation_json_matches_nix() {
    let goldens = all_goldens();
    let drvs = parsed(&goldens);
    for g in &goldens {
        let mut out = Vec::new();
        write_show_derivation_json(&mut out, &store(), [(&g.drv_path, &drvs[&g.drv_path])]);
        let ours: Value = serde_json::from_slice(&out).unwrap();
        let mut expected = serde_json::Map::new();
        expected.insert(store().display(&g.drv_path), g.show.clone());
        assert_eq!(ours, Value::Object(expected), "{}", g.drv_path);
        // Nix's layout: two-space indentation, `": "`, a final newline.
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\n  \"/nix/store/"));
        assert!(text.contains("\n    \"outputs\": {\n      \""));
        assert!(text.ends_with("\n  }\n}\n"));
    }
}
