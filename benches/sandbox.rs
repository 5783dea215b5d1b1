//! What the sandbox alone costs per build: trivial builders (`sh -c :`) run one after the
//! other through one build supervisor, each in a sandbox planned as for a real build (one
//! input, `/bin/sh` and `/bin/busybox` bound, a fresh root assembled and deleted), and the
//! same builders without a sandbox; the difference per build is the sandbox's setup and
//! clean-up. `N` (default 300) builds of each, alternating in rounds of 50 so that a change
//! of load on the machine hits both alike.

#[path = "../tests/sandbox_support/mod.rs"]
mod sandbox_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::engine::build::sandbox;
use drover::sandbox::{BuilderEvent, SandboxSpec, Started, Supervisors};

async fn run(sup: &Arc<Supervisors>, spec: &SandboxSpec) {
    let mut b = match sup.start(spec).await.unwrap() {
        Started::Running(b) => b,
        Started::SetupFailed(m) => panic!("setup failed: {m}"),
    };
    let mut buf = vec![0u8; 4096];
    loop {
        if let BuilderEvent::Exited(status) = b.next(&mut buf).await.unwrap() {
            assert_eq!(status, 0);
            return;
        }
    }
}

fn main() {
    if let Err(why) = sandbox::namespaces_available() {
        eprintln!("*** the kernel refuses the sandbox's namespaces ({why}): nothing to measure");
        std::process::exit(1);
    }
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sup = Supervisors::new(PathBuf::from(env!("CARGO_BIN_EXE_drover")));
    let f = sandbox_support::Fake::new();
    let sandboxed = f.spec(":", true);
    let ns = sandboxed.namespaces.clone().unwrap();
    let plain = SandboxSpec {
        program: b"/bin/busybox".to_vec(),
        argv: vec![b"sh".to_vec(), b"-c".to_vec(), b":".to_vec()],
        cwd: f.build_dir(),
        namespaces: None,
        ..sandboxed.clone()
    };
    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
    rt.block_on(async {
        // Warm up: the supervisor started, the page cache filled.
        run(&sup, &plain).await;
        let mut done = 0;
        while done < n {
            let round = (n - done).min(50);
            let start = Instant::now();
            for _ in 0..round {
                run(&sup, &sandboxed).await;
                sandbox::clean_up(&ns, &[], false);
            }
            with += start.elapsed();
            let start = Instant::now();
            for _ in 0..round {
                run(&sup, &plain).await;
            }
            without += start.elapsed();
            done += round;
        }
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(n);
    println!(
        "builds: {n} of each; sandboxed {:.3} ms/build, unsandboxed {:.3} ms/build, \
         sandbox setup alone {:.3} ms/build",
        ms(with),
        ms(without),
        ms(with) - ms(without)
    );
}
