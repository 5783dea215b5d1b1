//! `drover build` with binary caches: real processes, temporary stores, caches written by
//! `drover copy --to`, never the network. Builders append their name to a marks file outside
//! the store, so a test sees exactly what was built and what was substituted.

mod build_support;
mod subst_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use build_support::{Run, TestStore};
use drover::engine::api::{BuildMode, EventKind, GoalKind};
use drover::engine::build::Builder;
use drover::engine::driver::{self, Delivery, DriverOptions};
use drover::engine::executor::{LocalExecutor, RunSubstituters};
use drover::engine::format::{SecretKey, StorePath};
use drover::engine::scheduler::{Scheduler, Target};
use drover::engine::settings::Settings;
use drover::sandbox::Supervisors;
use subst_support::{Reply, TestServer};

/// A chain `a <- b <- c` (each output names its input's), built once and then forgotten.
struct Chain {
    t: TestStore,
    drvs: [StorePath; 3],
    outs: [StorePath; 3],
}

/// The attributes `allowSubstitutes = false` gives a derivation (`""`: false).
const NO_SUBSTITUTES: &[(&str, &str)] = &[("allowSubstitutes", "")];

impl Chain {
    fn new() -> Chain {
        Chain::with_attrs([&[], &[], &[]])
    }

    /// The chain with further attributes for `a`, `b` and `c`.
    fn with_attrs(attrs: [&[(&str, &str)]; 3]) -> Chain {
        let mut t = TestStore::new();
        let marks = t.root().join("marks");
        let mark = |name: &str| format!("echo {name} >> {};", marks.display());
        let a = t.drv(
            "a",
            &["out"],
            &format!("{} echo a > $out", mark("a")),
            &[],
            attrs[0],
        );
        let a_out = t.out_str(&a, "out");
        let b = t.drv(
            "b",
            &["out"],
            &format!("{} echo b $a > $out", mark("b")),
            &[(&a, "out")],
            &[&[("a", a_out.as_str())], attrs[1]].concat(),
        );
        let b_out = t.out_str(&b, "out");
        let c = t.drv(
            "c",
            &["out"],
            &format!("{} echo c $b > $out", mark("c")),
            &[(&b, "out")],
            &[&[("b", b_out.as_str())], attrs[2]].concat(),
        );
        let outs = [t.out(&a, "out"), t.out(&b, "out"), t.out(&c, "out")];
        let chain = Chain {
            t,
            drvs: [a, b, c],
            outs,
        };
        let r = chain.build(&[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(chain.marks(), ["a", "b", "c"]);
        chain
    }

    /// `drover build c --no-out-link ARGS`.
    fn build(&self, args: &[&str]) -> Run {
        let top = self.t.print(&self.drvs[2]);
        let mut all = vec![top.as_str(), "--no-out-link"];
        all.extend_from_slice(args);
        self.t.build(&all)
    }

    /// The builders that ran since the last call.
    fn marks(&self) -> Vec<String> {
        let file = self.t.root().join("marks");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let _ = std::fs::remove_file(&file);
        text.lines().map(str::to_owned).collect()
    }

    /// Writes the closure of `paths` to a new cache `name` with `drover copy --to` (NARs
    /// uncompressed, so tests can corrupt them); its `file://` URI.
    fn cache(&self, name: &str, paths: &[&StorePath], params: &str) -> (PathBuf, String) {
        let dir = self.t.root().join(name);
        let mut args = vec![
            "copy".to_owned(),
            "--store".to_owned(),
            self.t.uri.clone(),
            "--to".to_owned(),
            format!("file://{}?compression=none{params}", dir.display()),
        ];
        args.extend(paths.iter().map(|p| self.t.print(p)));
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uri = format!("file://{}", dir.display());
        (dir, uri)
    }

    /// Makes every output invalid and deletes it, as if never built.
    fn forget(&self) {
        let set: BTreeSet<StorePath> = self.outs.iter().cloned().collect();
        self.t.store.delete_paths(&set).unwrap();
        for o in &self.outs {
            assert!(!self.t.is_valid(o));
        }
    }

    fn copying(&self, out: &StorePath, uri: &str) -> String {
        format!("copying path '{}' from '{uri}'...", self.t.print(out))
    }

    fn building(&self, i: usize) -> String {
        format!("building '{}'...", self.t.print(&self.drvs[i]))
    }
}

/// The NAR file a narinfo of `cache` names for `path`.
fn nar_file(cache: &Path, path: &StorePath) -> PathBuf {
    let info = std::fs::read_to_string(subst_support::narinfo_path(cache, path)).unwrap();
    let url = info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    cache.join(url)
}

/// Changes a byte of the file contents in the NAR `cache` has for `path` (its size and
/// structure stay right: only its hash is wrong).
fn corrupt(cache: &Path, path: &StorePath) {
    let file = nar_file(cache, path);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(7)
        .rposition(|w| w == b"/store/")
        .expect("the contents name a store path");
    bytes[at + 7] = if bytes[at + 7] == b'0' { b'1' } else { b'0' };
    std::fs::write(&file, bytes).unwrap();
}

const NO_SIGS: [&str; 2] = ["require-sigs", "false"];

fn opt<'a>(name: &'a str, value: &'a str) -> [&'a str; 3] {
    ["--option", name, value]
}

#[test]
fn a_derivation_whose_outputs_are_all_cached_is_never_built() {
    let c = Chain::new();
    let (_, uri) = c.cache("cache", &[&c.outs[2]], "");
    c.forget();
    let r = c.build(&[opt("substituters", &uri), opt(NO_SIGS[0], NO_SIGS[1])].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(c.marks().is_empty(), "nothing is built: {}", r.stderr);
    for out in &c.outs {
        assert!(c.t.is_valid(out));
        assert!(r.stderr.contains(&c.copying(out, &uri)), "{}", r.stderr);
    }
    assert!(!r.stderr.contains("building '"), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), c.t.print(&c.outs[2]));
    // References first: a, then b, then c.
    let at = |i: usize| r.stderr.find(&c.copying(&c.outs[i], &uri)).unwrap();
    assert!(at(0) < at(1) && at(1) < at(2), "{}", r.stderr);
}

#[test]
fn a_partial_closure_in_the_cache_plus_a_local_build_of_the_rest() {
    let c = Chain::new();
    // Only the leaf is cached: it is substituted, the rest built on top of it.
    let (_, uri) = c.cache("leaf", &[&c.outs[0]], "");
    c.forget();
    let r = c.build(&[opt("substituters", &uri), opt(NO_SIGS[0], NO_SIGS[1])].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.marks(), ["b", "c"]);
    assert!(
        r.stderr.contains(&c.copying(&c.outs[0], &uri)),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&c.building(1)), "{}", r.stderr);

    // The top of the chain is cached but its leaf is not: an incomplete closure. The leaf is
    // built, then the others are substituted after all.
    let (dir, uri) = c.cache("top", &[&c.outs[2]], "");
    std::fs::remove_file(subst_support::narinfo_path(&dir, &c.outs[0])).unwrap();
    c.forget();
    let r = c.build(&[opt("substituters", &uri), opt(NO_SIGS[0], NO_SIGS[1])].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.marks(), ["a"]);
    assert!(
        r.stderr.contains(&c.copying(&c.outs[1], &uri)),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&c.copying(&c.outs[2], &uri)),
        "{}",
        r.stderr
    );
    for out in &c.outs {
        assert!(c.t.is_valid(out));
    }
}

/// Which outputs of the chain `r` says it copied from `uri`, by their chain index.
fn copied(c: &Chain, r: &Run, uri: &str) -> Vec<usize> {
    (0..3)
        .filter(|&i| r.stderr.contains(&c.copying(&c.outs[i], uri)))
        .collect()
}

#[test]
fn allow_substitutes_false_builds_the_derivation_and_still_fetches_its_inputs() {
    let c = Chain::with_attrs([&[], &[], NO_SUBSTITUTES]);
    let (_, uri) = c.cache("cache", &[&c.outs[2]], "");
    let args = [opt("substituters", &uri), opt(NO_SIGS[0], NO_SIGS[1])].concat();
    c.forget();
    let r = c.build(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // c's output is in the cache but c says no substitutes: its builder runs (Nix 2.8's
    // haveDerivation), while a and b, which allow them, are fetched.
    assert_eq!(c.marks(), ["c"], "{}", r.stderr);
    assert_eq!(copied(&c, &r, &uri), [0, 1], "{}", r.stderr);
    assert!(r.stderr.contains(&c.building(2)), "{}", r.stderr);
    assert!(c.outs.iter().all(|o| c.t.is_valid(o)));
    assert_eq!(r.stdout.trim(), c.t.print(&c.outs[2]));

    // Nix 2.8 has no `always-allow-substitutes` (later Nix does): it warns about an unknown
    // setting and builds c all the same.
    c.forget();
    let mut always = opt("always-allow-substitutes", "true").to_vec();
    always.extend_from_slice(&args);
    let r = c.build(&always);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("warning: unknown setting 'always-allow-substitutes'\n"),
        "{}",
        r.stderr
    );
    assert_eq!(c.marks(), ["c"], "{}", r.stderr);
    assert_eq!(copied(&c, &r, &uri), [0, 1], "{}", r.stderr);
}

#[test]
fn allow_substitutes_false_on_an_input_does_not_stop_its_output_coming_as_a_reference() {
    let c = Chain::with_attrs([&[], NO_SUBSTITUTES, &[]]);
    let (dir, uri) = c.cache("cache", &[&c.outs[2]], "");
    let args = [opt("substituters", &uri), opt(NO_SIGS[0], NO_SIGS[1])].concat();
    c.forget();
    let r = c.build(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // c is substituted with its closure; b's output comes as a reference of c's, which no
    // derivation goal of b decides.
    assert!(c.marks().is_empty(), "{}", r.stderr);
    assert_eq!(copied(&c, &r, &uri), [0, 1, 2], "{}", r.stderr);

    // The cache lacks a: c's closure is incomplete, so its inputs are realised: a is built
    // (nobody has it), b is built (it allows no substitutes), then c is substituted after
    // all.
    std::fs::remove_file(subst_support::narinfo_path(&dir, &c.outs[0])).unwrap();
    c.forget();
    let r = c.build(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.marks(), ["a", "b"], "{}", r.stderr);
    assert_eq!(copied(&c, &r, &uri), [2], "{}", r.stderr);
    assert!(c.outs.iter().all(|o| c.t.is_valid(o)));
}

#[test]
fn an_incomplete_closure_under_a_derivation_that_allows_no_substitutes() {
    let c = Chain::with_attrs([&[], &[], NO_SUBSTITUTES]);
    let (dir, uri) = c.cache("cache", &[&c.outs[2]], "");
    // The cache has b and c but not a, which b's output refers to.
    std::fs::remove_file(subst_support::narinfo_path(&dir, &c.outs[0])).unwrap();
    c.forget();
    let r = c.build(&[opt("substituters", &uri), opt(NO_SIGS[0], NO_SIGS[1])].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    // b's substitution is an incomplete closure: a is built, then b is substituted on the
    // retry; c is built whatever the cache has.
    assert_eq!(c.marks(), ["a", "c"], "{}", r.stderr);
    assert_eq!(copied(&c, &r, &uri), [1], "{}", r.stderr);
    assert!(c.outs.iter().all(|o| c.t.is_valid(o)));
}

#[test]
fn a_corrupt_substitute_fails_without_fallback_and_is_built_with_it() {
    let c = Chain::new();
    let (dir, uri) = c.cache("cache", &[&c.outs[2]], "");
    corrupt(&dir, &c.outs[2]);
    c.forget();
    let args = [opt("substituters", &uri), opt(NO_SIGS[0], NO_SIGS[1])].concat();
    let r = c.build(&args);
    // Nix 2.8: exit status 1 (a transient failure), the hash mismatch, then the advice.
    assert_eq!(r.code, 1, "{}", r.stderr);
    let top = c.t.print(&c.outs[2]);
    assert!(
        r.stderr
            .contains(&format!("error: hash mismatch importing path '{top}';\n")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "error: some substitutes for the outputs of derivation '{}' failed (usually \
             happens due to networking issues); try '--fallback' to build derivation from \
             source\n",
            c.t.print(&c.drvs[2])
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("is required, but"), "{}", r.stderr);
    assert!(c.marks().is_empty());
    assert!(!c.t.is_valid(&c.outs[2]));
    assert!(c.t.is_valid(&c.outs[1]), "the good references stay");
    let leftovers: Vec<String> = subst_support::store_entries(&c.t.store)
        .into_iter()
        .filter(|e| e.contains(c.outs[2].hash_part()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let mut with_fallback = args.clone();
    with_fallback.push("--fallback");
    let r = c.build(&with_fallback);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.marks(), ["c"]);
    assert!(
        r.stderr.contains("hash mismatch importing path"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&c.building(2)), "{}", r.stderr);
    assert!(c.t.is_valid(&c.outs[2]));
}

#[test]
fn substitute_false_builds_and_leaves_the_caches_alone() {
    let c = Chain::new();
    let (dir, uri) = c.cache("cache", &[&c.outs[2]], "");
    c.forget();
    // A cache that would fail loudly if it were read at all.
    std::fs::write(dir.join("nix-cache-info"), "StoreDir: /elsewhere\n").unwrap();
    let r = c.build(
        &[
            opt("substituters", &uri),
            opt("substitute", "false"),
            opt(NO_SIGS[0], NO_SIGS[1]),
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.marks(), ["a", "b", "c"]);
    assert!(!r.stderr.contains("copying path"), "{}", r.stderr);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn an_untrusted_signature_skips_that_cache_and_the_next_one_is_used() {
    let c = Chain::new();
    let root = c.t.root();
    let key = |name: &str, seed: u8| {
        let sk = SecretKey::from_seed(name, &[seed; 32]).unwrap();
        let file = root.join(format!("{name}.sk"));
        std::fs::write(&file, sk.to_file_contents()).unwrap();
        (file, sk.to_public_key().to_string())
    };
    let (stranger, _) = key("stranger-1", 1);
    let (friend, friend_pk) = key("friend-1", 2);
    let sign = |file: &Path| format!("&secret-key={}", file.display());
    let (_, untrusted) = c.cache("untrusted", &[&c.outs[2]], &sign(&stranger));
    let (_, trusted) = c.cache("trusted", &[&c.outs[2]], &sign(&friend));
    c.forget();
    // The untrusted cache comes first (priority 10 before 20).
    let subs = format!("{untrusted}?priority=10 {trusted}?priority=20");
    let r = c.build(
        &[
            opt("substituters", &subs),
            opt("trusted-public-keys", &friend_pk),
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(c.marks().is_empty(), "{}", r.stderr);
    for out in &c.outs {
        assert!(
            r.stderr.contains(&format!(
                "warning: the substitute for '{}' from '{untrusted}' is not signed by any of \
                 the keys in 'trusted-public-keys'",
                c.t.print(out)
            )),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(&c.copying(out, &trusted)), "{}", r.stderr);
        let sigs = c.t.store.path_info(out).unwrap().sigs;
        assert!(sigs.iter().all(|s| s.starts_with("friend-1:")), "{sigs:?}");
    }

    // Without a trusted key nothing is substituted: the chain is built.
    c.forget();
    let r = c.build(&opt("substituters", &subs));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.marks(), ["a", "b", "c"]);
}

#[test]
fn an_http_cache_drives_a_build_and_an_unreachable_one_costs_one_failed_connection() {
    let c = Chain::new();
    let (dir, _) = c.cache("cache", &[&c.outs[2]], "");
    c.forget();
    let server = TestServer::start(&dir, Box::new(|_, _| Reply::Serve));
    // A port nobody listens on: the connection is refused at once.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let subs = format!("{dead} {}", server.url());
    let started = std::time::Instant::now();
    let r = c.build(&[opt("substituters", &subs), opt(NO_SIGS[0], NO_SIGS[1])].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(c.marks().is_empty(), "{}", r.stderr);
    for out in &c.outs {
        assert!(
            r.stderr.contains(&c.copying(out, &server.url())),
            "{}",
            r.stderr
        );
    }
    // One warning for the unreachable cache, no retries with back-off.
    let warnings: Vec<&str> = r.stderr.lines().filter(|l| l.contains(&dead)).collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(
        warnings[0].starts_with("warning: unable to download"),
        "{warnings:?}"
    );
    assert!(!r.stderr.contains("retrying"), "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(server.count("/nix-cache-info"), 1);
    assert_eq!(server.count(".narinfo"), 3);
    assert_eq!(server.count(".nar"), 3);
}

/// The real executor in this process, on the real driver: events can be looked at.
#[test]
fn substitution_progress_reaches_the_nar_size() {
    let c = Chain::new();
    let (dir, _) = c.cache("cache", &[&c.outs[2]], "");
    c.forget();
    let server = TestServer::start(
        &dir,
        Box::new(|path, _| {
            if path.ends_with(".nar") {
                Reply::Slow {
                    chunk: 16,
                    pause: std::time::Duration::from_millis(40),
                }
            } else {
                Reply::Serve
            }
        }),
    );
    let mut settings = Settings::default();
    settings.set("substituters", &server.url()).unwrap();
    settings.set("require-sigs", "false").unwrap();
    settings.set("max-substitution-jobs", "2").unwrap();
    let store =
        Arc::new(drover::engine::store::LocalStore::open(c.t.store.config().clone()).unwrap());
    let subs = RunSubstituters::open(&settings, store.store_dir()).unwrap();
    let mut sched_settings = settings.scheduler_settings(store.store_dir());
    sched_settings.substituters = subs.uris();
    let builder = Arc::new(Builder::new(
        store.clone(),
        settings.build_settings(),
        Supervisors::new(PathBuf::from(env!("CARGO_BIN_EXE_drover"))),
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let targets = [Target::Derivation {
        drv: c.drvs[2].clone(),
        outputs: vec![],
    }];
    let (exit_status, events) = runtime.block_on(async {
        let executor = LocalExecutor::new(builder, subs);
        let (driver, handle) = driver::driver(
            Scheduler::new(sched_settings),
            executor,
            DriverOptions::default(),
        );
        let mut stream = handle.subscribe(Delivery::Lossless { capacity: 1 << 16 });
        let collector = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(batch) = stream.recv().await {
                all.extend(batch.iter().cloned());
            }
            all
        });
        drop(handle);
        let mut outcome = driver.run(&targets, BuildMode::Normal).await;
        outcome.executor.shutdown().await;
        (outcome.exit_status, collector.await.unwrap())
    });
    assert_eq!(exit_status, 0);
    assert!(c.marks().is_empty());
    let mut nar_total = 0;
    for out in &c.outs {
        let nar_size = store.path_info(out).unwrap().nar_size;
        nar_total += nar_size;
        let goal = events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::GoalAdded {
                    goal,
                    kind: GoalKind::Substitution { path, .. },
                    ..
                } if *path == store.print(out) => Some(*goal),
                _ => None,
            })
            .unwrap();
        let progress: Vec<(u64, u64, u64)> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::SubstitutionProgress {
                    goal: g,
                    nar_done,
                    nar_expected,
                    download_done,
                    ..
                } if *g == goal => Some((*nar_done, *nar_expected, *download_done)),
                _ => None,
            })
            .collect();
        // Several reports while the slow download goes, growing, ending at the NAR size.
        assert!(progress.len() >= 2, "{}: {progress:?}", out.name());
        assert!(
            progress
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].2 <= w[1].2)
        );
        assert_eq!(*progress.last().unwrap(), (nar_size, nar_size, nar_size));
    }
    let last = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::Progress { progress } => Some(*progress),
            _ => None,
        })
        .unwrap();
    assert_eq!((last.nar.done, last.nar.expected), (nar_total, nar_total));
    assert_eq!(last.download.done, nar_total, "uncompressed: file = NAR");
    assert_eq!(last.substitutions.done, 3);
    assert_eq!(last.builds.done, 0);
}
