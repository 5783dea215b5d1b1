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
            "Instant::now",
            "SystemTime",
            "crate::engine::store",
            "crate::engine::driver",
            "crate::app",
            "thread::sleep",
        ],
    );
    assert!(
        v.is_empty(),
        "engine::scheduler must be sans-IO:\n{}",
        v.join("\n")
    );
}

#[test]
fn app_and_sandbox_do_not_reach_into_the_scheduler() {
    let mut v = violations("src/app", &["engine::scheduler"]);
    v.extend(violations(
        "src/sandbox",
        &["engine::scheduler", "engine::driver", "crate::app"],
    ));
    assert!(v.is_empty(), "layer rule broken:\n{}", v.join("\n"));
}
