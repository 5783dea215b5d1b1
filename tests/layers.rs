//! The layer rules of `src/lib.rs`, checked on the source text: a module may not name what
//! its layer must not depend on.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Lines of code under `dir` (comments dropped) that contain any of `forbidden`.
fn violations(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(Path::new(dir)) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for f in forbidden {
                if code.contains(f) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn format_depends_on_nothing_else_in_the_crate() {
    let v = violations(
        "src/engine/format",
        &[
            "crate::app",
            "crate::sandbox",
            "crate::engine::store",
            "crate::engine::scheduler",
            "crate::engine::driver",
            "crate::engine::build",
            "rusqlite",
            "tokio",
            "std::process",
        ],
    );
    assert!(
        v.is_empty(),
        "engine::format must stay pure:\n{}",
        v.join("\n")
    );
}

#[test]
fn scheduler_is_sans_io() {
    let v = violations(
        "src/engine/scheduler",
        &[
            "tokio",
            "std::process",
            "std::fs",
            "std::net",
            "std::thread",
            "std::io",
            "Instant",
            "SystemTime",
            "crate::engine::store",
            "crate::engine::driver",
            "crate::engine::sim",
            "crate::app",
        ],
    );
    assert!(
        v.is_empty(),
        "engine::scheduler must be sans-IO:\n{}",
        v.join("\n")
    );
}

#[test]
fn front_ends_use_only_the_api() {
    // The command runners (plumbing, simulate, later build) wire up the engine; the
    // front-ends that render a run see nothing but engine::api.
    let mut v = Vec::new();
    for name in [
        "plain.rs",
        "json.rs",
        "tui",
        "nix_json",
        "output.rs",
        "record.rs",
    ] {
        let path = format!("src/app/{name}");
        let files = if name.ends_with(".rs") {
            vec![PathBuf::from(&path)]
        } else {
            rust_files(Path::new(&path))
        };
        for file in files.into_iter().filter(|f| f.exists()) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.contains("crate::engine::") && !line.contains("crate::engine::api") {
                    v.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        v.is_empty(),
        "front-ends must use only engine::api:\n{}",
        v.join("\n")
    );
}

#[test]
fn sandbox_knows_nothing_of_goals() {
    let v = violations(
        "src/sandbox",
        &[
            "engine::scheduler",
            "engine::driver",
            "engine::api",
            "crate::app",
        ],
    );
    assert!(v.is_empty(), "layer rule 5 broken:\n{}", v.join("\n"));
}
