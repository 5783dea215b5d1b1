//! Reference scanning: which of a set of candidate store paths a file system object refers to.
//!
//! Like Nix, we look for the 32-character hash parts of the candidates anywhere in the NAR
//! serialisation of the object, so file contents, symlink targets and file names all count.
//! [`RefScanner`] is a [`Write`] sink: tee it with a hasher (see [`super::nar::Tee`]) and one
//! dump both hashes and scans. A hash part may straddle two writes; the scanner keeps the last
//! 31 bytes of each write to find it.
//!
//! Speed comes from skipping, as in Wu and Manber's multi-pattern search. When the last byte
//! of a 32-byte window is not a base-32 character, no window containing it can match and the
//! scan jumps past it (Nix's trick; most bytes of binary data are such). Otherwise a table
//! indexed by the window's last three characters (15 bits, 32 KiB, so it stays in L1) says
//! where the nearest window that could match starts: 30 bytes on when those three
//! characters occur in no candidate, less when they do. Only a window whose last three
//! characters end a candidate is looked up in the candidate set.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::path::Path;

use super::base32;
use super::hash::{Hash, HashAlgo, Hasher};
use super::nar::{NarError, Tee, dump_path, dump_path_parallel};
use super::store_path::{HASH_PART_LEN, StorePath};

/// A store path hash part: 32 Nix base-32 characters.
pub type HashPart = [u8; HASH_PART_LEN];

const WINDOW: usize = HASH_PART_LEN;
const TAIL: usize = WINDOW - 1;
/// Length of the grams of the shift table (3 beat 4 on every input measured, up to 2000
/// candidates), and the longest shift.
const GRAM: usize = 3;
const MAX_SHIFT: usize = WINDOW - GRAM + 1;

/// Digit value of each byte, or 0xff where the byte is not a base-32 character.
const DIGITS: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < base32::ALPHABET.len() {
        table[base32::ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Index of a gram in the shift table, if all its bytes are base-32 characters.
#[inline]
fn gram_index(gram: &[u8]) -> Option<usize> {
    let mut index = 0;
    let mut invalid = 0;
    for &b in &gram[..GRAM] {
        let d = DIGITS[b as usize];
        invalid |= d;
        index = index << 5 | (d & 0x1f) as usize;
    }
    (invalid & 0x80 == 0).then_some(index)
}

/// Finds candidate hash parts in a byte stream written to it.
pub struct RefScanner {
    /// Candidates not found yet.
    pending: HashSet<HashPart>,
    found: BTreeSet<HashPart>,
    /// For each gram: `MAX_SHIFT` minus how far the scan may move on when a window ends with
    /// it (stored this way round so that the table starts as zeros).
    reach: Box<[u8]>,
    /// The last bytes written, up to 31, for matches that straddle two writes.
    tail: [u8; TAIL],
    tail_len: usize,
}

impl RefScanner {
    /// A scanner for `candidates`. As in Nix, only base-32 strings can be found; any other
    /// candidate is ignored.
    pub fn new(candidates: impl IntoIterator<Item = HashPart>) -> RefScanner {
        let pending: HashSet<HashPart> = candidates
            .into_iter()
            .filter(|c| c.iter().all(|&b| DIGITS[b as usize] != 0xff))
            .collect();
        let mut reach = vec![0u8; 1 << (5 * GRAM)].into_boxed_slice();
        for candidate in &pending {
            for p in 0..MAX_SHIFT {
                // A window ending with this gram may be the candidate, starting
                // WINDOW - GRAM - p bytes further on.
                let i = gram_index(&candidate[p..p + GRAM]).expect("base-32 candidate");
                reach[i] = reach[i].max(p as u8 + 1);
            }
        }
        RefScanner {
            pending,
            found: BTreeSet::new(),
            reach,
            tail: [0; TAIL],
            tail_len: 0,
        }
    }

    /// Scans the next bytes of the stream.
    pub fn scan(&mut self, data: &[u8]) {
        if self.pending.is_empty() {
            return;
        }
        if self.tail_len > 0 {
            // Windows that start in the tail and end in `data`.
            let take = data.len().min(TAIL);
            let mut joint = [0u8; 2 * TAIL];
            joint[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            joint[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.search(&joint[..self.tail_len + take]);
        }
        self.search(data);
        if data.len() >= TAIL {
            self.tail.copy_from_slice(&data[data.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            let keep = (TAIL - data.len()).min(self.tail_len);
            self.tail
                .copy_within(self.tail_len - keep..self.tail_len, 0);
            self.tail[keep..keep + data.len()].copy_from_slice(data);
            self.tail_len = keep + data.len();
        }
    }

    /// Looks for candidates in every window of `s`.
    fn search(&mut self, s: &[u8]) {
        let mut i = 0;
        while i + WINDOW <= s.len() {
            // Most bytes of binary data are not base-32: no window containing the last byte
            // of this one can match.
            if DIGITS[s[i + WINDOW - 1] as usize] == 0xff {
                i += WINDOW;
                continue;
            }
            let Some(gram) = gram_index(&s[i + WINDOW - GRAM..i + WINDOW]) else {
                // Skip past the last byte of the gram that is not base-32.
                let j = (WINDOW - GRAM..WINDOW - 1)
                    .rev()
                    .find(|&j| DIGITS[s[i + j] as usize] == 0xff)
                    .expect("the gram has a byte that is not base-32");
                i += j + 1;
                continue;
            };
            let shift = MAX_SHIFT - self.reach[gram] as usize;
            if shift > 0 {
                i += shift;
                continue;
            }
            let window: &HashPart = s[i..i + WINDOW].try_into().expect("a window");
            if self.pending.remove(window) {
                self.found.insert(*window);
                if self.pending.is_empty() {
                    return;
                }
            }
            i += 1;
        }
    }

    /// The candidates found so far.
    pub fn found(&self) -> &BTreeSet<HashPart> {
        &self.found
    }

    pub fn into_found(self) -> BTreeSet<HashPart> {
        self.found
    }
}

impl Write for RefScanner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.scan(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The candidates whose hash part occurs in the NAR of the object at `path`.
pub fn scan_path(
    path: &Path,
    candidates: impl IntoIterator<Item = HashPart>,
) -> Result<BTreeSet<HashPart>, NarError> {
    let mut scanner = RefScanner::new(candidates);
    dump_path(path, &mut scanner)?;
    Ok(scanner.into_found())
}

/// What one dump of a new store object yields: its NAR hash and size, and its references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
}

/// Dumps the object at `path` once, hashing it (sha256, as Nix registers) and scanning it for
/// the hash parts of `candidates` (Nix's `scanForReferences`).
pub fn hash_and_scan<'a>(
    path: &Path,
    candidates: impl IntoIterator<Item = &'a StorePath>,
) -> Result<ScanResult, NarError> {
    let candidates: Vec<&StorePath> = candidates.into_iter().collect();
    let mut scanner = RefScanner::new(candidates.iter().map(|c| *c.hash_part_bytes()));
    let mut hasher = Hasher::new(HashAlgo::Sha256);
    let nar_size = dump_path_parallel(path, &mut Tee(&mut hasher, &mut scanner))?;
    let found = scanner.into_found();
    let references = candidates
        .into_iter()
        .filter(|c| found.contains(c.hash_part_bytes()))
        .cloned()
        .collect();
    Ok(ScanResult {
        nar_hash: hasher.finish(),
        nar_size,
        references,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::nar::NarNode;
    use proptest::prelude::*;

    const A: &HashPart = b"0123456789abcdfghijklmnpqrsvwxyz";
    const B: &HashPart = b"zyxwvsrqpnmlkjihgfdcba9876543210";

    /// The model: a candidate is found when it occurs anywhere in the data (and, as in Nix,
    /// consists of base-32 characters; any other string is never looked for).
    fn naive(data: &[u8], candidates: &[HashPart]) -> BTreeSet<HashPart> {
        candidates
            .iter()
            .filter(|c| c.iter().all(|&b| base32::is_base32_char(b)))
            .filter(|c| data.windows(WINDOW).any(|w| w == &c[..]))
            .copied()
            .collect()
    }

    fn scan_chunks(chunks: &[&[u8]], candidates: &[HashPart]) -> BTreeSet<HashPart> {
        let mut scanner = RefScanner::new(candidates.iter().copied());
        for chunk in chunks {
            scanner.scan(chunk);
        }
        scanner.into_found()
    }

    #[test]
    fn finds_a_match_split_at_every_position() {
        let mut data = b"prefix /nix/store/".to_vec();
        data.extend_from_slice(A);
        data.extend_from_slice(b"-name suffix");
        let start = data.len() - 12 - WINDOW;
        for split in 0..=data.len() {
            let found = scan_chunks(&[&data[..split], &data[split..]], &[*A, *B]);
            assert_eq!(
                found,
                BTreeSet::from([*A]),
                "split at {split} (match at {start})"
            );
        }
        // Split into three pieces, the middle one shorter than a window.
        for first in start..start + WINDOW {
            for len in 0..WINDOW {
                let second = (first + len).min(data.len());
                let found = scan_chunks(
                    &[&data[..first], &data[first..second], &data[second..]],
                    &[*A],
                );
                assert_eq!(
                    found,
                    BTreeSet::from([*A]),
                    "pieces at {first} and {second}"
                );
            }
        }
    }

    #[test]
    fn one_byte_writes() {
        let mut data = b"xx".to_vec();
        data.extend_from_slice(B);
        data.extend_from_slice(A);
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(scan_chunks(&chunks, &[*A, *B]), BTreeSet::from([*A, *B]));
    }

    #[test]
    fn near_misses_are_not_matches() {
        let mut wrong_last = *A;
        wrong_last[31] = b'0';
        let mut broken = A[..16].to_vec();
        broken.push(b'e'); // not base-32
        broken.extend_from_slice(&A[16..]);
        let mut upper = *A;
        upper.make_ascii_uppercase();
        for data in [
            &A[..31],
            &A[1..],
            &wrong_last[..],
            &broken[..],
            &upper[..],
            b"",
        ] {
            assert!(scan_chunks(&[data], &[*A]).is_empty(), "{data:?}");
        }
    }

    #[test]
    fn overlapping_and_adjacent_candidates() {
        // B follows A directly, and a run of base-32 characters contains both.
        let mut data = b"a".to_vec();
        data.extend_from_slice(A);
        data.extend_from_slice(B);
        data.extend_from_slice(b"0");
        assert_eq!(scan_chunks(&[&data], &[*A, *B]), BTreeSet::from([*A, *B]));
    }

    #[test]
    fn names_and_symlink_targets_count() {
        let tree = NarNode::directory([
            (A.to_vec(), NarNode::file("")),
            (
                b"link".to_vec(),
                NarNode::symlink([&b"/nix/store/"[..], B].concat()),
            ),
        ]);
        let mut scanner = RefScanner::new([*A, *B]);
        tree.write_to(&mut scanner).unwrap();
        assert_eq!(scanner.into_found(), BTreeSet::from([*A, *B]));
    }

    #[test]
    fn scans_a_tree_on_disk_with_hash_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        let a = StorePath::from_base_name(&format!("{}-a", std::str::from_utf8(A).unwrap()));
        let b = StorePath::from_base_name(&format!("{}-b", std::str::from_utf8(B).unwrap()));
        let (a, b) = (a.unwrap(), b.unwrap());
        let tree = NarNode::directory([
            (
                &b"bin"[..],
                NarNode::executable([&b"#!/nix/store/"[..], A, b"-a/sh"].concat()),
            ),
            (b"empty", NarNode::directory::<Vec<u8>>([])),
        ]);
        tree.restore_to(&root).unwrap();
        let result = hash_and_scan(&root, [&a, &b]).unwrap();
        assert_eq!(result.references, BTreeSet::from([a]));
        assert_eq!(
            (result.nar_hash, result.nar_size),
            tree.nar_hash(HashAlgo::Sha256)
        );
        assert_eq!(scan_path(&root, [*B]).unwrap(), BTreeSet::new());
    }

    #[test]
    fn thousands_of_candidates_in_base32_noise() {
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut digit = || base32::ALPHABET[(next() % 32) as usize];
        let candidates: Vec<HashPart> = (0..3000)
            .map(|_| std::array::from_fn(|_| digit()))
            .collect();
        let mut data: Vec<u8> = (0..200_000).map(|_| digit()).collect();
        for (n, c) in candidates.iter().step_by(60).enumerate() {
            let at = n * 3989 % (data.len() - WINDOW);
            data[at..at + WINDOW].copy_from_slice(c);
        }
        let windows: HashSet<&[u8]> = data.windows(WINDOW).collect();
        let expected: BTreeSet<HashPart> = candidates
            .iter()
            .filter(|c| windows.contains(&c[..]))
            .copied()
            .collect();
        assert!(
            expected.len() >= 45,
            "{} planted candidates survived",
            expected.len()
        );
        let chunks: Vec<&[u8]> = data.chunks(4093).collect();
        assert_eq!(scan_chunks(&chunks, &candidates), expected);
    }

    fn base32_heavy() -> impl Strategy<Value = Vec<u8>> {
        // Mostly base-32 characters, so that runs and near-misses are common.
        let byte = prop_oneof![
            8 => proptest::sample::select(base32::ALPHABET.to_vec()),
            1 => any::<u8>(),
        ];
        proptest::collection::vec(byte, 0..300)
    }

    proptest! {
        #[test]
        fn agrees_with_the_naive_model(
            data in base32_heavy(),
            picks in proptest::collection::vec((0usize..300, any::<bool>()), 1..6),
            splits in proptest::collection::vec(0usize..300, 0..5),
        ) {
            // Candidates: windows of the data itself (found) and mutations of them (mostly not).
            let mut candidates = vec![*A];
            for (at, mutate) in picks {
                if data.len() >= WINDOW {
                    let at = at % (data.len() - WINDOW + 1);
                    let mut c: HashPart = data[at..at + WINDOW].try_into().unwrap();
                    if mutate {
                        c[at % WINDOW] = base32::ALPHABET[(at * 7) % 32];
                    }
                    candidates.push(c);
                }
            }
            let mut cuts: Vec<usize> = splits.into_iter().map(|s| s.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for cut in cuts {
                chunks.push(&data[last..cut]);
                last = cut;
            }
            chunks.push(&data[last..]);
            prop_assert_eq!(scan_chunks(&chunks, &candidates), naive(&data, &candidates));
        }
    }
}
