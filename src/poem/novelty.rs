//! The lines of the training corpus, as a Bloom filter: a generated line that
//! the filter holds is a (probable) verbatim copy and is not accepted.
//!
//! File format (`train_lines.bloom`, written by `training/prepare.py`):
//! the 8 bytes `YSBLOOM1`, the bit count (u64 LE), the hash count (u32 LE), then
//! the bits, bit `i` at byte `i / 8`, mask `1 << (i % 8)`. Bit positions are
//! `h1 + k·h2 mod m` over two FNV-1a 64-bit hashes of the line's UTF-8.

use std::path::Path;

use crate::error::ModelError;

const MAGIC: &[u8; 8] = b"YSBLOOM1";
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// A second offset basis for the second hash.
const FNV_OFFSET_2: u64 = 0x84222325_cbf29ce4;

pub(crate) struct LineFilter {
    bits: Vec<u8>,
    num_bits: u64,
    num_hashes: u32,
}

impl LineFilter {
    pub(crate) fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::MissingFile {
            path: path.to_owned(),
            source,
        })?;
        let bad = || ModelError::Unsupported {
            path: path.to_owned(),
            problem: "it is not a yingshi line filter".into(),
        };
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(bad());
        }
        let num_bits = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| bad())?);
        let num_hashes = u32::from_le_bytes(bytes[16..20].try_into().map_err(|_| bad())?);
        let bits = bytes[20..].to_vec();
        if num_bits == 0 || (bits.len() as u64) * 8 < num_bits {
            return Err(bad());
        }
        Ok(Self {
            bits,
            num_bits,
            num_hashes,
        })
    }

    pub(crate) fn contains(&self, line: &str) -> bool {
        let (h1, h2) = hashes(line);
        (0..self.num_hashes as u64).all(|k| {
            let bit = h1.wrapping_add(k.wrapping_mul(h2)) % self.num_bits;
            self.bits[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }
}

fn fnv1a(bytes: &[u8], offset: u64) -> u64 {
    bytes
        .iter()
        .fold(offset, |h, &b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

fn hashes(line: &str) -> (u64, u64) {
    let bytes = line.as_bytes();
    (fnv1a(bytes, FNV_OFFSET), fnv1a(bytes, FNV_OFFSET_2) | 1)
}
