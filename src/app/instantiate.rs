//! `drover instantiate plan.toml [-A name]`: writes the plan's derivations into the store and
//! prints their `.drv` paths, like `nix-instantiate` does for a Nix file.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::app::AppError;
use crate::app::plumbing::store::StoreArgs;
use crate::engine::plan::Plan;

/// The plan format, shown by `drover instantiate --help`.
pub const PLAN_FORMAT_HELP: &str = r#"PLAN FORMAT
  One table per derivation; the key is the derivation's name:

    [drv.base]
    builder = "/bin/sh"
    args = ["-c", "echo base > $out"]

    [drv.top]
    builder = "/bin/sh"
    args = ["-e", { file = "build.sh" }]
    env = { src = "${base}", docs = "${base.dev}", jobs = 4, debug = false }
    outputs = ["out", "dev"]
    system = "x86_64-linux"

  builder (required)   the program to run: a string or { file = "…" }
  args                 its arguments (each turned into a string like an env value)
  env                  environment variables: strings, integers, floats, booleans
                       ("1" / ""), arrays (elements joined by spaces), { file = "…" }
  outputs              output names (default ["out"]); also set as $outputs
  system               platform (default: this machine's, e.g. x86_64-linux)
  outputHash           makes a fixed-output derivation: SRI ("sha256-…") or, with
                       outputHashAlgo ("sha256", "sha1", "sha512", "md5"), base-16,
                       base-32 or base-64
  outputHashMode       "flat" (default: the output is a file) or "recursive" (NAR hash)

  ${name} in a string is the path of the first output of derivation name, and
  ${name.output} that of another output; both make it an input. $${ is a literal ${.
  { file = "path" } imports a file or directory (relative to the plan's folder) into
  the store as a Nix path literal does, and stands for its store path.
  Every derivation is exactly what Nix's `derivation { … }` builtin makes of the same
  attributes: name, builder, system, the env values, outputs and outputHash* are its
  environment, and the .drv paths equal nix-instantiate's."#;

#[derive(Debug, Args)]
#[command(after_long_help = PLAN_FORMAT_HELP)]
pub struct InstantiateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this derivation (and what it needs); its `.drv` path is the one printed.
    #[arg(short = 'A', long = "attr", value_name = "NAME")]
    pub attr: Option<String>,
    /// The plan file (TOML; see `--help` for the format).
    pub plan: PathBuf,
}

/// Writes the derivations and prints the requested `.drv` paths, one a line, in plan order;
/// like nix-instantiate, `!<output>` follows when a derivation's first output is not `out`.
pub fn instantiate(args: &InstantiateArgs) -> Result<(), AppError> {
    let plan = Plan::load(&args.plan)?;
    let store = args.store.open()?;
    let inst = plan.instantiate_in_store(&store, args.attr.as_deref())?;
    let mut out = std::io::stdout().lock();
    for t in &inst.targets {
        let path = store.print(&t.drv_path);
        if t.output == "out" {
            writeln!(out, "{path}")
        } else {
            writeln!(out, "{path}!{}", t.output)
        }
        .map_err(AppError::Stdout)?;
    }
    Ok(())
}
