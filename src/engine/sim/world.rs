//! The simulated world: a DAG of derivations and how each one behaves, from a plan or from
//! a seeded random model; and the simulated store, whose paths encode their node so no table
//! of paths is kept.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::format::{StoreDir, StorePath, base32};
use crate::engine::scheduler::{DrvInfo, StoreView};

use super::dag::{Dag, Plan, PlanNode, hash3, unit};

/// The random model of `drover simulate`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimModel {
    pub seed: u64,
    /// Fraction of builds that fail (exit code 1).
    pub fail_rate: f64,
    /// Failing builds fail only on their first attempt (a retry succeeds).
    pub transient_failures: bool,
    /// Mean build time, virtual milliseconds (exponentially distributed, capped at 10x).
    pub mean_duration_ms: u64,
    /// Log lines per build.
    pub log_lines: u32,
    /// Fraction of outputs whose lock another process holds at the start.
    pub lock_rate: f64,
    /// How long such a lock is held at most, virtual milliseconds.
    pub lock_hold_ms: u64,
    /// Fraction of outputs the simulated binary cache has.
    pub cached_rate: f64,
    /// Fraction of builds that hang silently (for `--max-silent-time`).
    pub hang_rate: f64,
}

impl Default for SimModel {
    fn default() -> SimModel {
        SimModel {
            seed: 0,
            fail_rate: 0.0,
            transient_failures: false,
            mean_duration_ms: 10_000,
            log_lines: 3,
            lock_rate: 0.0,
            lock_hold_ms: 30_000,
            cached_rate: 0.0,
            hang_rate: 0.0,
        }
    }
}

/// How one simulated derivation behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub duration_ms: u64,
    /// Attempt numbers (1-based) on which the builder fails; `u32::MAX` in the list means
    /// always.
    pub fails_on: Vec<u32>,
    pub hang: bool,
    /// How many log lines the builder writes ([`World::log_line`]).
    pub log_lines: u32,
    pub lock_held_ms: u64,
    pub valid: bool,
    pub cached: bool,
    pub prefer_local_build: bool,
    pub fixed_output: bool,
    pub nondeterministic: bool,
    pub nar_size: u64,
}

impl NodeSpec {
    pub fn fails(&self, attempt: u32) -> bool {
        self.fails_on.contains(&attempt) || self.fails_on.contains(&u32::MAX)
    }
}

const WORDS: &[&str] = &[
    "acl",
    "attr",
    "autoconf",
    "automake",
    "bash",
    "binutils",
    "bison",
    "boost",
    "bzip2",
    "cmake",
    "coreutils",
    "curl",
    "db",
    "diffutils",
    "ed",
    "expat",
    "file",
    "findutils",
    "flex",
    "gawk",
    "gcc",
    "gdbm",
    "gettext",
    "glibc",
    "gmp",
    "gnugrep",
    "gnum4",
    "gnused",
    "gnutar",
    "gzip",
    "help2man",
    "icu",
    "isl",
    "kmod",
    "libarchive",
    "libcap",
    "libffi",
    "libidn2",
    "libssh2",
    "libtool",
    "libunistring",
    "libxml2",
    "libxslt",
    "linux-headers",
    "lzo",
    "mpc",
    "mpfr",
    "ncurses",
    "nghttp2",
    "openssl",
    "patch",
    "patchelf",
    "perl",
    "pkg-config",
    "python3",
    "readline",
    "sqlite",
    "texinfo",
    "unzip",
    "util-linux",
    "which",
    "xz",
    "zlib",
    "zstd",
];

/// The derivations of a simulation and how they behave.
#[derive(Debug)]
pub struct World {
    pub dag: Dag,
    pub model: SimModel,
    plan: Option<Vec<PlanNode>>,
    targets: Vec<u32>,
    /// A plan's node names, back to back; node `i` ends at `name_ends[i]`. Generated names
    /// are computed when needed (cheaper than a cache miss).
    names: String,
    name_ends: Vec<u32>,
    /// A path's digest is (node, kind) scrambled into bytes 0..5 and a hash of (seed, node,
    /// kind) in bytes 5..20, so paths look as random as real ones and another world's paths
    /// are not mistaken for ours.
    salt: u64,
}

impl World {
    pub fn generated(dag: Dag, model: SimModel) -> World {
        let targets = dag.roots();
        World::new(dag, model, None, targets)
    }

    pub fn planned(plan: &Plan, model: SimModel) -> Result<World, String> {
        let (dag, index) = plan.dag()?;
        let targets = if plan.targets.is_empty() {
            dag.roots()
        } else {
            plan.targets
                .iter()
                .map(|t| {
                    index
                        .get(t)
                        .copied()
                        .ok_or_else(|| format!("plan target '{t}' is not a node"))
                })
                .collect::<Result<_, _>>()?
        };
        if let Some(bad) = plan.nodes.iter().find(|n| {
            n.name.is_empty()
                || n.name.len() > 200
                || !n
                    .name
                    .chars()
                    .all(crate::engine::format::store_path::is_name_char)
        }) {
            return Err(format!(
                "plan node name '{}' is not a valid store path name",
                bad.name
            ));
        }
        Ok(World::new(dag, model, Some(plan.nodes.clone()), targets))
    }

    fn new(dag: Dag, model: SimModel, plan: Option<Vec<PlanNode>>, targets: Vec<u32>) -> World {
        let salt = hash3(model.seed, 2, 77);
        let mut names = String::new();
        let mut name_ends = Vec::new();
        for node in plan.iter().flatten() {
            names.push_str(&node.name);
            name_ends.push(names.len() as u32);
        }
        World {
            dag,
            model,
            plan,
            targets,
            names,
            name_ends,
            salt,
        }
    }

    pub fn len(&self) -> u32 {
        self.dag.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dag.is_empty()
    }

    /// The top-level goals.
    pub fn targets(&self) -> &[u32] {
        &self.targets
    }

    /// Calls `f` with the name of `node` (`gcc-4.12.345`: a word, a version, the node).
    pub fn with_name<R>(&self, node: u32, f: impl FnOnce(&str) -> R) -> R {
        let i = node as usize;
        if self.plan.is_some() {
            let start = if i == 0 {
                0
            } else {
                self.name_ends[i - 1] as usize
            };
            return f(&self.names[start..self.name_ends[i] as usize]);
        }
        let h = hash3(self.model.seed, node, 3);
        let mut buf = [0u8; 64];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        put(WORDS[(h % WORDS.len() as u64) as usize].as_bytes());
        put(b"-");
        put(&[b'0' + ((h >> 16) % 10) as u8, b'.']);
        let minor = ((h >> 24) % 20) as u32;
        for n in [minor, node] {
            let mut digits = [0u8; 10];
            let mut k = digits.len();
            let mut v = n;
            loop {
                k -= 1;
                digits[k] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            put(&digits[k..]);
            put(b".");
        }
        f(std::str::from_utf8(&buf[..len - 1]).expect("ASCII name"))
    }

    pub fn name(&self, node: u32) -> String {
        self.with_name(node, str::to_owned)
    }

    /// Log line `k` (0-based) of a build of `node`.
    pub fn log_line(&self, node: u32, k: u32) -> String {
        const LINES: [&str; 8] = [
            "unpacking sources",
            "patching sources",
            "configuring",
            "building",
            "running tests",
            "installing",
            "post-installation fixup",
            "shrinking RPATHs of ELF executables and libraries",
        ];
        match &self.plan {
            Some(plan) => plan[node as usize].log[k as usize].clone(),
            None => {
                let n = self.model.log_lines.max(1) as usize;
                let i = (k as usize * LINES.len() / n).min(LINES.len() - 1);
                LINES[i].to_owned()
            }
        }
    }

    /// Whether the output is valid before the run (plans only).
    pub fn initially_valid(&self, node: u32) -> bool {
        self.plan.as_ref().is_some_and(|p| p[node as usize].valid)
    }

    /// (fixed-output, preferLocalBuild) of a node (plans only).
    fn drv_flags(&self, node: u32) -> (bool, bool) {
        self.plan.as_ref().map_or((false, false), |p| {
            let n = &p[node as usize];
            (n.fixed_output, n.prefer_local_build)
        })
    }

    pub fn spec(&self, node: u32) -> NodeSpec {
        let m = &self.model;
        let u = |what| unit(m.seed, node, what);
        let nar_size = 1024 + hash3(m.seed, node, 13) % (64 << 20);
        if let Some(plan) = &self.plan {
            let p = &plan[node as usize];
            let mut fails_on = p.fail_attempts.clone();
            if p.fail {
                fails_on.push(u32::MAX);
            }
            return NodeSpec {
                duration_ms: p.duration_ms.unwrap_or(m.mean_duration_ms),
                fails_on,
                hang: p.hang,
                log_lines: p.log.len() as u32,
                lock_held_ms: p.lock_held_ms,
                valid: p.valid,
                cached: p.cached,
                prefer_local_build: p.prefer_local_build,
                fixed_output: p.fixed_output,
                nondeterministic: p.nondeterministic,
                nar_size,
            };
        }
        let mean = m.mean_duration_ms as f64;
        let duration_ms = ((-(1.0 - u(4)).ln()) * mean).min(10.0 * mean) as u64 + 1;
        let fails_on = if u(5) < m.fail_rate {
            vec![if m.transient_failures { 1 } else { u32::MAX }]
        } else {
            Vec::new()
        };
        NodeSpec {
            duration_ms,
            fails_on,
            hang: u(6) < m.hang_rate,
            log_lines: m.log_lines,
            lock_held_ms: if u(7) < m.lock_rate {
                (u(8) * m.lock_hold_ms as f64) as u64 + 1
            } else {
                0
            },
            valid: false,
            cached: u(9) < m.cached_rate,
            prefer_local_build: false,
            fixed_output: false,
            nondeterministic: false,
            nar_size,
        }
    }

    fn path(&self, node: u32, kind: u8) -> StorePath {
        // `<hash part>-<name>[.drv]` in a stack buffer: the hash part is the world's prefix
        // and the base-32 digits of (node, kind), least significant last.
        let mut buf = [0u8; 256];
        buf[..24].copy_from_slice(&self.hash_prefix(node, kind));
        let low = self.scramble(node, kind);
        for n in 0..8 {
            buf[31 - n] = base32::ALPHABET[((low >> (5 * n)) & 0x1f) as usize];
        }
        buf[32] = b'-';
        self.with_name(node, |name| {
            let mut len = 33 + name.len();
            buf[33..len].copy_from_slice(name.as_bytes());
            if kind == 0 {
                buf[len..len + 4].copy_from_slice(b".drv");
                len += 4;
            }
            let base = std::str::from_utf8(&buf[..len]).expect("ASCII path");
            StorePath::from_base_name(base).expect("simulated names are valid")
        })
    }

    /// The first 24 base-32 characters of a path's hash part: digest bytes 5..20, a hash of
    /// (seed, node, kind). (Character `p` holds bits `5 * (31 - p)` and up of the digest.)
    fn hash_prefix(&self, node: u32, kind: u8) -> [u8; 24] {
        // Bytes 5..20 are 120 bits, exactly the 24 characters' worth.
        let low = hash3(self.salt, node, u64::from(kind));
        let high = hash3(self.salt, node, 2 + u64::from(kind)) & ((1 << 56) - 1);
        let bits = u128::from(low) | u128::from(high) << 64;
        let mut out = [0u8; 24];
        for (p, c) in out.iter_mut().enumerate() {
            *c = base32::ALPHABET[((bits >> ((23 - p) * 5)) & 0x1f) as usize];
        }
        out
    }

    /// (node, kind) as 40 bits that look random: an odd multiplier and an xor, both
    /// reversible.
    fn scramble(&self, node: u32, kind: u8) -> u64 {
        let n = node.wrapping_mul(0x9E37_79B1) ^ (self.salt as u32);
        let k = kind ^ (self.salt >> 32) as u8;
        u64::from(n) | u64::from(k) << 32
    }

    fn unscramble(&self, low: u64) -> (u32, u8) {
        let n = (low as u32 ^ self.salt as u32).wrapping_mul(0x0E8B_2F51);
        let k = (low >> 32) as u8 ^ (self.salt >> 32) as u8;
        (n, k)
    }

    pub fn drv_path(&self, node: u32) -> StorePath {
        self.path(node, 0)
    }

    pub fn out_path(&self, node: u32) -> StorePath {
        self.path(node, 1)
    }

    /// The node and kind (0 `.drv`, 1 output) of one of this world's paths.
    pub fn node_of(&self, path: &StorePath) -> Option<(u32, u8)> {
        let hash = path.hash_part_bytes();
        let mut low = 0u64;
        for n in 0..8 {
            let digit = base32::ALPHABET.iter().position(|&c| c == hash[31 - n])? as u64;
            low |= digit << (5 * n);
        }
        let (node, kind) = self.unscramble(low);
        // The first 8 characters (40 bits) tell this world's paths from others'.
        (kind <= 1 && node < self.len() && hash[..8] == self.hash_prefix(node, kind)[..8])
            .then_some((node, kind))
    }
}

/// The simulated store: every `.drv` is valid; outputs become valid when built or
/// substituted.
#[derive(Debug)]
pub struct SimStore {
    pub world: Arc<World>,
    pub store_dir: StoreDir,
    valid: Vec<bool>,
    drv_cache: HashMap<u32, Arc<DrvInfo>>,
}

impl SimStore {
    pub fn new(world: Arc<World>) -> SimStore {
        let valid = (0..world.len()).map(|i| world.initially_valid(i)).collect();
        SimStore {
            world,
            store_dir: StoreDir::new("/nix/store").expect("valid store dir"),
            valid,
            drv_cache: HashMap::new(),
        }
    }

    pub fn set_valid(&mut self, node: u32) {
        self.valid[node as usize] = true;
    }

    pub fn output_valid(&self, node: u32) -> bool {
        self.valid[node as usize]
    }

    /// Builds the `DrvInfo`s of a plan once (plans are small; generated worlds make them on
    /// demand so that a million nodes need no table).
    pub fn preload_plan(&mut self) {
        if self.world.plan.is_some() {
            for i in 0..self.world.len() {
                let info = Arc::new(self.make_drv(i));
                self.drv_cache.insert(i, info);
            }
        }
    }

    fn make_drv(&self, node: u32) -> DrvInfo {
        let w = &self.world;
        let (fixed_output, prefer_local_build) = w.drv_flags(node);
        DrvInfo {
            name: w.name(node),
            outputs: vec![("out".to_owned(), Some(w.out_path(node)))],
            input_drvs: w
                .dag
                .deps(node)
                .iter()
                .map(|&d| (w.drv_path(d), vec!["out".to_owned()]))
                .collect(),
            input_srcs: Vec::new(),
            platform: "x86_64-linux".to_owned(),
            fixed_output,
            prefer_local_build,
            allow_substitutes: true,
            required_features: Vec::new(),
        }
    }
}

impl StoreView for SimStore {
    fn is_valid(&self, path: &StorePath) -> bool {
        match self.world.node_of(path) {
            Some((_, 0)) => true,
            Some((node, _)) => self.valid[node as usize],
            None => false,
        }
    }

    fn load_derivation(&self, drv: &StorePath) -> Result<Arc<DrvInfo>, String> {
        match self.world.node_of(drv) {
            Some((node, 0)) => Ok(match self.drv_cache.get(&node) {
                Some(info) => info.clone(),
                None => Arc::new(self.make_drv(node)),
            }),
            _ => Err(format!(
                "path '{}' is not a valid derivation",
                self.store_dir.display(drv)
            )),
        }
    }

    fn references(&self, path: &StorePath) -> Vec<StorePath> {
        match self.world.node_of(path) {
            Some((node, kind)) => self
                .world
                .dag
                .deps(node)
                .iter()
                .map(|&d| self.world.path(d, kind))
                .collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::dag::Shape;
    use super::*;

    #[test]
    fn paths_encode_their_node() {
        let world = Arc::new(World::generated(
            Dag::generate(Shape::Chain, 10, 3),
            SimModel::default(),
        ));
        let store = SimStore::new(world.clone());
        let drv = world.drv_path(7);
        assert!(drv.is_derivation());
        assert_eq!(world.node_of(&drv), Some((7, 0)));
        assert_eq!(world.node_of(&world.out_path(7)), Some((7, 1)));
        assert!(store.is_valid(&drv));
        assert!(!store.is_valid(&world.out_path(7)));
        let info = store.load_derivation(&drv).unwrap();
        assert_eq!(
            info.input_drvs,
            vec![(world.drv_path(6), vec!["out".into()])]
        );
        assert_eq!(
            store.references(&world.out_path(7)),
            vec![world.out_path(6)]
        );
        // Another seed's paths are not ours.
        let other = World::generated(
            Dag::generate(Shape::Chain, 10, 3),
            SimModel {
                seed: 1,
                ..SimModel::default()
            },
        );
        assert_eq!(world.node_of(&other.drv_path(7)), None);
    }
}
