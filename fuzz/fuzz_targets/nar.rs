//! Arbitrary bytes into the NAR reader: it must never panic, and whatever it accepts must be
//! canonical (written back by the in-memory model byte for byte). The same bytes go through
//! the reference scanner, whose findings must be those of a naive search.
#![no_main]

use std::collections::BTreeSet;

use drover::engine::format::base32;
use drover::engine::format::nar::{NarNode, NarReader};
use drover::engine::format::refs::{HashPart, RefScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let accepted = NarReader::new(data).validate();
    // The same answer when the NAR is embedded in a longer stream, read byte-exactly.
    let embedded = NarReader::new(data).embedded().validate();
    if let Ok(size) = accepted {
        assert_eq!(size, data.len() as u64);
        assert_eq!(embedded.ok(), Some(size));
        let node = NarNode::from_nar(data).expect("accepted once, accepted twice");
        assert_eq!(node.to_nar(), data, "an accepted archive is canonical");
    }

    // Candidates: a fixed one and a few windows of the data itself.
    let mut candidates: Vec<HashPart> = vec![*b"0123456789abcdfghijklmnpqrsvwxyz"];
    if data.len() >= 32 {
        let last = data.len() - 32;
        for at in [0, last / 3, last] {
            candidates.push(data[at..at + 32].try_into().unwrap());
        }
    }
    let mut scanner = RefScanner::new(candidates.iter().copied());
    let step = 1 + data.first().map_or(0, |&b| b as usize % 64);
    for chunk in data.chunks(step) {
        scanner.scan(chunk);
    }
    let expected: BTreeSet<HashPart> = candidates
        .iter()
        .filter(|c| c.iter().all(|&b| base32::is_base32_char(b)))
        .filter(|c| data.windows(32).any(|w| w == &c[..]))
        .copied()
        .collect();
    assert_eq!(scanner.into_found(), expected);
});
