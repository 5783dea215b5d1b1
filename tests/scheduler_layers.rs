//! Layer rules 2 and 4 (see `src/lib.rs`), checked on the source: the scheduler is sans-IO,
//! and the line front-ends use only `engine::api`.

use std::path::Path;

fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    out
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_scheduler_does_no_io_and_reads_no_clock() {
    let forbidden = [
        "tokio",
        "std::process",
        "std::fs",
        "std::net",
        "std::thread",
        "Instant",
        "SystemTime",
        "std::io",
        "crate::engine::driver",
        "crate::engine::sim",
        "crate::app",
    ];
    for (file, text) in sources(&root().join("src/engine/scheduler")) {
        for word in forbidden {
            assert!(!text.contains(word), "{file} uses {word}");
        }
    }
}

#[test]
fn line_front_ends_use_only_the_api() {
    for name in ["plain.rs", "json.rs"] {
        let file = root().join("src/app").join(name);
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| l.contains("crate::engine::")) {
            assert!(
                line.contains("crate::engine::api"),
                "{}: {line}",
                file.display()
            );
        }
    }
}
