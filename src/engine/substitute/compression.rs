//! The compressions of binary-cache NARs (a narinfo's `Compression` field): streaming
//! decoders for every method Nix 2.8 writes (`none`, `xz`, `bzip2`, `zstd`, `gzip`, `br`) and
//! encoders for the ones `drover copy --to` writes (all but `br`).
//!
//! Decoders accept concatenated streams as Nix's do (a multi-stream `.xz`, a multi-member
//! gzip, several zstd frames). Encoder levels are the ones Nix's libarchive uses by default:
//! xz preset 6, bzip2 level 9, zstd level 3, gzip level 6.

use std::fmt;
use std::io::{self, BufReader, Read, Write};

/// A NAR compression method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Xz,
    Bzip2,
    Zstd,
    Gzip,
    Brotli,
}

impl Compression {
    /// Every method, in the order `--help` lists them.
    pub const ALL: [Compression; 6] = [
        Compression::Xz,
        Compression::Bzip2,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Brotli,
        Compression::None,
    ];

    /// Reads a narinfo's or a URI's method name; an empty name means none, as in Nix.
    pub fn parse(name: &str) -> Option<Compression> {
        Some(match name {
            "none" | "" => Compression::None,
            "xz" => Compression::Xz,
            "bzip2" => Compression::Bzip2,
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "br" => Compression::Brotli,
            _ => return None,
        })
    }

    /// The name Nix writes into a narinfo.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Brotli => "br",
        }
    }

    /// Whether [`encoder`] can write it.
    pub fn can_write(self) -> bool {
        self != Compression::Brotli
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Size of the decoders' input buffers.
const DECODER_BUF: usize = 64 * 1024;

/// A reader of the decompressed bytes of `input`.
pub fn decoder<'a>(method: Compression, input: impl Read + 'a) -> Box<dyn Read + 'a> {
    match method {
        Compression::None => Box::new(input),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        Compression::Zstd => Box::new(ZstdReader::new(input)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            DECODER_BUF,
            input,
        ))),
        Compression::Brotli => Box::new(brotli_decompressor::Decompressor::new(input, DECODER_BUF)),
    }
}

/// zstd's decoder, created on the first read so that an error setting it up (out of memory)
/// surfaces as a read error rather than a panic.
enum ZstdReader<'a, R: Read> {
    Pending(Option<R>),
    Running(zstd::stream::read::Decoder<'a, BufReader<R>>),
}

impl<R: Read> ZstdReader<'_, R> {
    fn new(input: R) -> Self {
        ZstdReader::Pending(Some(input))
    }
}

impl<R: Read> Read for ZstdReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let ZstdReader::Pending(input) = self {
            let input = input.take().expect("a pending decoder has its input");
            *self = ZstdReader::Running(zstd::stream::read::Decoder::new(input)?);
        }
        match self {
            ZstdReader::Running(d) => d.read(buf),
            ZstdReader::Pending(_) => unreachable!("set up just above"),
        }
    }
}

/// A compressing writer; [`Encoder::finish`] writes the trailer and returns the inner writer.
pub enum Encoder<W: Write> {
    None(W),
    Xz(liblzma::write::XzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

/// A writer that compresses into `out`; `None` for a method drover cannot write (`br`).
pub fn encoder<W: Write>(method: Compression, out: W) -> io::Result<Option<Encoder<W>>> {
    Ok(Some(match method {
        Compression::None => Encoder::None(out),
        Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(out, 6)),
        Compression::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(
            out,
            bzip2::Compression::best(),
        )),
        Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, 3)?),
        Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::new(6),
        )),
        Compression::Brotli => return Ok(None),
    }))
}

impl<W: Write> Encoder<W> {
    /// Ends the compressed stream; the inner writer, flushed.
    pub fn finish(self) -> io::Result<W> {
        let mut out = match self {
            Encoder::None(w) => w,
            Encoder::Xz(e) => e.finish()?,
            Encoder::Bzip2(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Gzip(e) => e.finish()?,
        };
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Bzip2(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Bzip2(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(method: Compression, data: &[u8]) -> Vec<u8> {
        let mut enc = encoder(method, Vec::new()).unwrap().unwrap();
        enc.write_all(data).unwrap();
        let compressed = enc.finish().unwrap();
        let mut out = Vec::new();
        decoder(method, compressed.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_writable_method_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for method in Compression::ALL.into_iter().filter(|m| m.can_write()) {
            assert_eq!(round_trip(method, &data), data, "{method}");
            assert_eq!(round_trip(method, b""), b"", "{method} (empty)");
        }
    }

    #[test]
    fn names_round_trip_and_empty_means_none() {
        for method in Compression::ALL {
            assert_eq!(Compression::parse(method.name()), Some(method));
        }
        assert_eq!(Compression::parse(""), Some(Compression::None));
        assert_eq!(Compression::parse("lz4"), None);
    }

    #[test]
    fn concatenated_streams_decode_whole() {
        for method in [
            Compression::Xz,
            Compression::Bzip2,
            Compression::Zstd,
            Compression::Gzip,
        ] {
            let mut both = Vec::new();
            for part in [&b"first part "[..], b"second part"] {
                let mut enc = encoder(method, Vec::new()).unwrap().unwrap();
                enc.write_all(part).unwrap();
                both.extend(enc.finish().unwrap());
            }
            let mut out = Vec::new();
            decoder(method, both.as_slice())
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, b"first part second part", "{method}");
        }
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        for method in [
            Compression::Xz,
            Compression::Bzip2,
            Compression::Zstd,
            Compression::Gzip,
            Compression::Brotli,
        ] {
            let mut out = Vec::new();
            let result =
                decoder(method, &b"definitely not compressed data"[..]).read_to_end(&mut out);
            assert!(result.is_err(), "{method} accepted garbage");
        }
    }
}
