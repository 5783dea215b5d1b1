//! Derivation graphs for the simulator: generated shapes (random, wide, chain, diamond) or an
//! explicit plan, stored compactly (one `u32` per edge) so a million nodes fit.

use std::collections::HashMap;

use serde::Deserialize;

/// The generated shapes of `drover simulate --shape`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Every node depends on 0-6 (3 on average) random earlier nodes; the nodes nothing
    /// depends on are the top-level goals.
    Random,
    /// One top-level node depending on all the others.
    Wide,
    /// Each node depends on the previous one.
    Chain,
    /// One bottom node, a wide middle depending on it, one top depending on the middle.
    Diamond,
}

impl std::str::FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Shape, String> {
        match s {
            "random" => Ok(Shape::Random),
            "wide" => Ok(Shape::Wide),
            "chain" => Ok(Shape::Chain),
            "diamond" => Ok(Shape::Diamond),
            _ => Err(format!(
                "unknown shape '{s}' (expected random, wide, chain or diamond)"
            )),
        }
    }
}

/// A DAG in compressed adjacency form: the inputs of node `i` are
/// `deps[offsets[i]..offsets[i + 1]]`, all smaller than `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    offsets: Vec<u32>,
    deps: Vec<u32>,
}

/// SplitMix64: a fast, well-mixed hash of a 64-bit value (the simulator's only randomness).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A reproducible pseudo-random value for (seed, node, what).
pub fn hash3(seed: u64, node: u32, what: u64) -> u64 {
    mix(mix(seed ^ what.wrapping_mul(0x2545_f491_4f6c_dd1d)) ^ u64::from(node))
}

/// A reproducible value in [0, 1).
pub fn unit(seed: u64, node: u32, what: u64) -> f64 {
    (hash3(seed, node, what) >> 11) as f64 / (1u64 << 53) as f64
}

impl Dag {
    pub fn generate(shape: Shape, nodes: u32, seed: u64) -> Dag {
        let mut dag = Dag {
            offsets: Vec::with_capacity(nodes as usize + 1),
            deps: Vec::new(),
        };
        dag.offsets.push(0);
        for i in 0..nodes {
            match shape {
                Shape::Random => {
                    let want = (hash3(seed, i, 1) % 7) as u32;
                    let k = want.min(i);
                    let start = dag.deps.len();
                    let mut salt = 2;
                    while (dag.deps.len() - start) < k as usize {
                        let d = (hash3(seed, i, salt) % u64::from(i)) as u32;
                        salt += 1;
                        if !dag.deps[start..].contains(&d) {
                            dag.deps.push(d);
                        }
                    }
                    dag.deps[start..].sort_unstable();
                }
                Shape::Wide => {
                    if i + 1 == nodes {
                        dag.deps.extend(0..i);
                    }
                }
                Shape::Chain => {
                    if i > 0 {
                        dag.deps.push(i - 1);
                    }
                }
                Shape::Diamond => {
                    if i + 1 == nodes && i > 1 {
                        dag.deps.extend(1..i);
                    } else if i > 0 {
                        dag.deps.push(0);
                    }
                }
            }
            dag.offsets.push(dag.deps.len() as u32);
        }
        dag
    }

    /// A DAG from explicit input lists (each input must be an earlier node).
    pub fn from_inputs(inputs: &[Vec<u32>]) -> Result<Dag, String> {
        let mut dag = Dag {
            offsets: vec![0],
            deps: Vec::new(),
        };
        for (i, deps) in inputs.iter().enumerate() {
            if let Some(d) = deps.iter().find(|&&d| d as usize >= i) {
                return Err(format!(
                    "node {i} depends on node {d}, which is not earlier"
                ));
            }
            dag.deps.extend(deps);
            dag.offsets.push(dag.deps.len() as u32);
        }
        Ok(dag)
    }

    pub fn len(&self) -> u32 {
        (self.offsets.len() - 1) as u32
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn deps(&self, node: u32) -> &[u32] {
        let i = node as usize;
        &self.deps[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn edges(&self) -> usize {
        self.deps.len()
    }

    /// The nodes no other node depends on (the top-level goals).
    pub fn roots(&self) -> Vec<u32> {
        let mut needed = vec![false; self.len() as usize];
        for &d in &self.deps {
            needed[d as usize] = true;
        }
        (0..self.len()).filter(|&i| !needed[i as usize]).collect()
    }
}

/// An explicit simulation plan (JSON): named nodes, their inputs and their behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub nodes: Vec<PlanNode>,
    /// Names of the top-level goals (default: the nodes nothing depends on).
    #[serde(default)]
    pub targets: Vec<String>,
}

/// One derivation of a plan.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanNode {
    pub name: String,
    /// Names of input nodes, which must come earlier in the plan.
    pub deps: Vec<String>,
    /// Build time in virtual milliseconds.
    pub duration_ms: Option<u64>,
    /// The builder fails (exit code 1) on these attempts (1-based); `fail: true` = always.
    pub fail: bool,
    pub fail_attempts: Vec<u32>,
    /// The builder never finishes and never writes (for timeouts).
    pub hang: bool,
    /// Log lines the builder writes, spread over its run.
    pub log: Vec<String>,
    /// Another process holds the output lock for this long from the start.
    pub lock_held_ms: u64,
    /// The output is already valid.
    pub valid: bool,
    /// The simulated binary cache has the output.
    pub cached: bool,
    pub prefer_local_build: bool,
    pub fixed_output: bool,
    /// Rebuilds give different outputs (`--check`, `--repeat`).
    pub nondeterministic: bool,
}

impl Plan {
    /// The DAG of the plan and the index of each name.
    pub fn dag(&self) -> Result<(Dag, HashMap<String, u32>), String> {
        let mut index = HashMap::new();
        let mut inputs = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let deps = node
                .deps
                .iter()
                .map(|d| {
                    index.get(d).copied().ok_or_else(|| {
                        format!(
                            "plan node '{}' depends on '{d}', which is not before it",
                            node.name
                        )
                    })
                })
                .collect::<Result<Vec<u32>, String>>()?;
            if index.insert(node.name.clone(), i as u32).is_some() {
                return Err(format!("plan node '{}' appears twice", node.name));
            }
            inputs.push(deps);
        }
        Ok((Dag::from_inputs(&inputs)?, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_expected_edges_and_roots() {
        let chain = Dag::generate(Shape::Chain, 5, 1);
        assert_eq!(chain.deps(4), &[3]);
        assert_eq!(chain.roots(), vec![4]);
        let wide = Dag::generate(Shape::Wide, 5, 1);
        assert_eq!(wide.deps(4), &[0, 1, 2, 3]);
        assert_eq!(wide.roots(), vec![4]);
        let diamond = Dag::generate(Shape::Diamond, 5, 1);
        assert_eq!(diamond.deps(1), &[0]);
        assert_eq!(diamond.deps(4), &[1, 2, 3]);
        assert_eq!(diamond.roots(), vec![4]);
    }

    #[test]
    fn random_dags_average_three_inputs_and_are_reproducible() {
        let a = Dag::generate(Shape::Random, 10_000, 7);
        assert_eq!(a, Dag::generate(Shape::Random, 10_000, 7));
        assert_ne!(a, Dag::generate(Shape::Random, 10_000, 8));
        let avg = a.edges() as f64 / f64::from(a.len());
        assert!((2.8..3.2).contains(&avg), "{avg}");
        for i in 0..a.len() {
            assert!(a.deps(i).iter().all(|&d| d < i));
        }
    }

    #[test]
    fn plans_name_their_nodes() {
        let plan: Plan = serde_json::from_str(
            r#"{"nodes": [{"name": "a"}, {"name": "b", "deps": ["a"], "fail": true}]}"#,
        )
        .unwrap();
        let (dag, index) = plan.dag().unwrap();
        assert_eq!(dag.deps(index["b"]), &[0]);
        let bad: Plan =
            serde_json::from_str(r#"{"nodes": [{"name": "b", "deps": ["a"]}]}"#).unwrap();
        assert!(bad.dag().unwrap_err().contains("not before it"));
    }
}
