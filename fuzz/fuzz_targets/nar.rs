//! Arbitrary bytes into the NAR reader: it must never panic, and whatever it accepts must be
//! canonical (written back by the in-memory model byte for byte) and scan without panicking.
#![no_main]

use drover::engine::format::nar::{NarNode, NarReader};
use drover::engine::format::refs::RefScanner;
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
    let mut scanner = RefScanner::new([*b"0123456789abcdfghijklmnpqrsvwxyz"]);
    for chunk in data.chunks(7) {
        scanner.scan(chunk);
    }
});
