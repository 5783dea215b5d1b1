//! Hash rewriting: replacing store path hash parts by others of the same length in a byte
//! stream, as Nix does to a build output written to a scratch path (`rewriteStrings`,
//! `RewritingSink`). Because every needle and its replacement have the same length, a NAR
//! stays a valid NAR of the same size.
//!
//! [`Rewriter`] is a [`Write`] adapter: it passes bytes on to the next writer, holding back
//! the last 31 bytes of each write so that a hash part split over two writes is still
//! found.

use std::collections::BTreeMap;
use std::io::{self, Write};

use memchr::memmem;

use super::store_path::HASH_PART_LEN;

const TAIL: usize = HASH_PART_LEN - 1;

/// Replaces hash parts (32 bytes) by other hash parts in everything written through it.
pub struct Rewriter<W: Write> {
    inner: W,
    /// Each needle's finder and replacement, applied one after the other as Nix does.
    rules: Vec<(memmem::Finder<'static>, [u8; HASH_PART_LEN])>,
    /// Bytes not passed on yet: at most the last `TAIL` bytes written.
    pending: Vec<u8>,
    /// Replacements made so far.
    count: u64,
}

impl<W: Write> Rewriter<W> {
    /// A rewriter applying `rules` (hash part → hash part) to what is written to `inner`.
    pub fn new(inner: W, rules: &BTreeMap<[u8; HASH_PART_LEN], [u8; HASH_PART_LEN]>) -> Self {
        Rewriter {
            inner,
            rules: rules
                .iter()
                .filter(|(from, to)| from != to)
                .map(|(from, to)| (memmem::Finder::new(from).into_owned(), *to))
                .collect(),
            pending: Vec::with_capacity(2 * TAIL),
            count: 0,
        }
    }

    /// How many hash parts were replaced.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Passes on the bytes held back and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&self.pending)?;
        self.pending.clear();
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn rewrite(&mut self, buf: &mut [u8]) {
        for (finder, to) in &self.rules {
            let mut start = 0;
            while let Some(i) = finder.find(&buf[start..]) {
                let at = start + i;
                buf[at..at + HASH_PART_LEN].copy_from_slice(to);
                self.count += 1;
                start = at + HASH_PART_LEN;
            }
        }
    }
}

impl<W: Write> Write for Rewriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.rules.is_empty() {
            self.inner.write_all(data)?;
            return Ok(data.len());
        }
        // The bytes held back plus `data`: a match may straddle the two.
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        self.rewrite(&mut buf);
        let pass = buf.len().saturating_sub(TAIL);
        self.inner.write_all(&buf[..pass])?;
        buf.drain(..pass);
        self.pending = buf;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    const B: &[u8; 32] = b"zyxwvsrqpnmlkjihgfdcba9876543210";
    const C: &[u8; 32] = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// The model: Nix's `rewriteStrings` on the whole input at once.
    fn naive(data: &[u8], rules: &BTreeMap<[u8; 32], [u8; 32]>) -> Vec<u8> {
        let mut out = data.to_vec();
        for (from, to) in rules {
            let mut i = 0;
            while i + 32 <= out.len() {
                if &out[i..i + 32] == from {
                    out[i..i + 32].copy_from_slice(to);
                    i += 32;
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    fn rewrite_chunks(chunks: &[&[u8]], rules: &BTreeMap<[u8; 32], [u8; 32]>) -> (Vec<u8>, u64) {
        let mut w = Rewriter::new(Vec::new(), rules);
        for c in chunks {
            w.write_all(c).unwrap();
        }
        let count = w.count();
        (w.finish().unwrap(), count)
    }

    #[test]
    fn replaces_a_hash_split_at_every_position() {
        let rules = BTreeMap::from([(*A, *B)]);
        let mut data = b"/nix/store/".to_vec();
        data.extend_from_slice(A);
        data.extend_from_slice(b"-out and more");
        let mut expected = b"/nix/store/".to_vec();
        expected.extend_from_slice(B);
        expected.extend_from_slice(b"-out and more");
        for split in 0..=data.len() {
            let (out, count) = rewrite_chunks(&[&data[..split], &data[split..]], &rules);
            assert_eq!(out, expected, "split at {split}");
            assert_eq!(count, 1);
        }
    }

    #[test]
    fn without_rules_bytes_pass_unchanged() {
        let (out, count) = rewrite_chunks(&[b"abc", A, b"def"], &BTreeMap::new());
        assert_eq!(out, [&b"abc"[..], A, b"def"].concat());
        assert_eq!(count, 0);
    }

    proptest! {
        #[test]
        fn streaming_equals_rewriting_the_whole(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just(A.to_vec()),
                    Just(B.to_vec()),
                    Just(C[..20].to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..40),
                ],
                0..12,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let data = pieces.concat();
            let rules = BTreeMap::from([(*A, *C), (*B, *A)]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts {
                chunks.push(&data[last..c]);
                last = c;
            }
            chunks.push(&data[last..]);
            let (out, _) = rewrite_chunks(&chunks, &rules);
            prop_assert_eq!(out, naive(&data, &rules));
        }
    }
}
