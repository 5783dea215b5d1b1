//! Nix's base-32: the encoding of store path hash parts and of `sha256:1abc…` hashes.
//!
//! It is not RFC 4648: the alphabet drops `e o u t` (so that no rude words appear in store
//! paths), there is no padding, and the characters are written from the most significant
//! 5-bit group of the little-endian bit string down to the least significant one. A string of
//! `n` bytes has `ceil(8n / 5)` characters; on decoding, bits beyond the last byte must be zero.

use thiserror::Error;

/// The 32 characters, in digit order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Digit value of each byte, or 0xff where the byte is not in the alphabet.
const DIGITS: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Base32Error {
    #[error("invalid base-32 character {char:?} at position {position}")]
    InvalidChar { char: char, position: usize },
    #[error("base-32 string of {len} characters does not encode a whole number of bytes")]
    BadLength { len: usize },
    #[error("base-32 string has non-zero padding bits")]
    NonZeroPadding,
}

/// Number of characters that encode `bytes` bytes.
pub const fn encoded_len(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes * 8 - 1) / 5 + 1
    }
}

/// Number of bytes that `chars` characters decode to, if `chars` is a possible encoded length.
pub fn decoded_len(chars: usize) -> Option<usize> {
    let bytes = chars * 5 / 8;
    (encoded_len(bytes) == chars).then_some(bytes)
}

/// Encodes `data` in Nix base-32.
pub fn encode(data: &[u8]) -> String {
    let mut out = Vec::with_capacity(encoded_len(data.len()));
    encode_into(data, &mut out);
    // The alphabet is ASCII.
    String::from_utf8(out).expect("base-32 output is ASCII")
}

/// Appends the encoding of `data` to `out`.
pub fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    let len = encoded_len(data.len());
    for n in (0..len).rev() {
        let bit = n * 5;
        let byte = bit / 8;
        let shift = bit % 8;
        let low = (data[byte] as u16) >> shift;
        let high = match data.get(byte + 1) {
            Some(&b) => (b as u16) << (8 - shift),
            None => 0,
        };
        out.push(ALPHABET[((low | high) & 0x1f) as usize]);
    }
}

/// Decodes a Nix base-32 string into bytes.
pub fn decode(s: &[u8]) -> Result<Vec<u8>, Base32Error> {
    let len = decoded_len(s.len()).ok_or(Base32Error::BadLength { len: s.len() })?;
    let mut out = vec![0u8; len];
    decode_into(s, &mut out)?;
    Ok(out)
}

/// Decodes `s` into `out`, whose length must be the decoded length of `s`.
pub fn decode_into(s: &[u8], out: &mut [u8]) -> Result<(), Base32Error> {
    if encoded_len(out.len()) != s.len() {
        return Err(Base32Error::BadLength { len: s.len() });
    }
    out.fill(0);
    for (n, &c) in s.iter().rev().enumerate() {
        let digit = DIGITS[c as usize];
        if digit == 0xff {
            return Err(Base32Error::InvalidChar {
                char: c as char,
                position: s.len() - 1 - n,
            });
        }
        let bit = n * 5;
        let byte = bit / 8;
        let shift = bit % 8;
        out[byte] |= digit << shift;
        let carry = (digit as u16) >> (8 - shift);
        if byte + 1 < out.len() {
            out[byte + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Base32Error::NonZeroPadding);
        }
    }
    Ok(())
}

/// Whether `c` is a character of the alphabet.
pub fn is_base32_char(c: u8) -> bool {
    DIGITS[c as usize] != 0xff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(16), 26);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
        assert_eq!(decoded_len(52), Some(32));
        assert_eq!(decoded_len(33), None);
    }

    #[test]
    fn known_answers_from_nix() {
        // nix-hash --type sha256 --to-base32 of the sha256 of "plain file\n" (goldens/trees.json)
        let hex = "0e31b4805c16422e0fc62f097ac11c858e6ba3f9c49e5dffec2e1bfe51db6a09";
        let bytes = data_encoding::HEXLOWER.decode(hex.as_bytes()).unwrap();
        assert_eq!(
            encode(&bytes),
            "02bavd8zw6rfxkzmv7n4z6inp3l53k0pl29gqq7jwhhnbj0b8c8f"
        );
        let md5 = data_encoding::HEXLOWER
            .decode(b"c5c33a1f1d13f0a0bd186a15acc3c032")
            .unwrap();
        assert_eq!(encode(&md5), "1jq31sq5ba32ys1w0k3lgkmhy5");
        assert_eq!(decode(b"1jq31sq5ba32ys1w0k3lgkmhy5").unwrap(), md5);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            decode(b"e0000000000000000000000000"),
            Err(Base32Error::InvalidChar {
                char: 'e',
                position: 0
            })
        ));
        assert_eq!(decode(b"000"), Err(Base32Error::BadLength { len: 3 }));
        // 26 chars carry 130 bits for 128: the top two bits must be zero.
        assert_eq!(
            decode(b"z0000000000000000000000000"),
            Err(Base32Error::NonZeroPadding)
        );
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let s = encode(&data);
            prop_assert_eq!(s.len(), encoded_len(data.len()));
            prop_assert_eq!(decode(s.as_bytes()).unwrap(), data);
        }
    }
}
