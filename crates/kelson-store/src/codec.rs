//! On-disk encoding of history records, revision keys and snapshot frames.
//!
//! Decoding is total: any byte string yields a value or a [`DecodeError`],
//! never a panic. Every record carries a CRC-32 so that a flipped bit is
//! reported as corruption instead of being served.

use bytes::Bytes;

use crate::types::{EventKind, Revision};

const RECORD_FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    #[error("checksum mismatch")]
    Checksum,
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    #[error("revision key must be 8 bytes, got {0}")]
    RevisionKeyLength(usize),
    #[error("invalid record: {0}")]
    Invalid(&'static str),
}

/// One entry of the history log: the change made at one revision. The
/// revision itself is the log key, so it is not repeated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: EventKind,
    pub key: Bytes,
    /// Empty for deletes.
    pub value: Bytes,
    /// Revision that created this generation of the key (0 for deletes).
    pub create_revision: Revision,
    /// Writes to this generation so far (0 for deletes).
    pub version: u64,
    /// Mod revision of the version this change replaced, 0 for creates.
    pub prev_revision: Revision,
}

pub fn encode_revision(rev: Revision) -> [u8; 8] {
    rev.to_be_bytes()
}

pub fn decode_revision(bytes: &[u8]) -> Result<Revision, DecodeError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| DecodeError::RevisionKeyLength(bytes.len()))?;
    Ok(Revision::from_be_bytes(arr))
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over untrusted bytes; every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated(what))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, what)?;
        let mut arr = [0u8; 8];
        arr.copy_from_slice(b);
        Ok(u64::from_le_bytes(arr))
    }

    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    /// A varint length followed by that many bytes.
    pub fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.varint(what)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated(what))?;
        self.bytes(n, what)
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.key.len() + self.value.len() + 40);
        out.push(RECORD_FORMAT);
        out.push(match self.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        put_varint(&mut out, self.key.len() as u64);
        out.extend_from_slice(&self.key);
        put_varint(&mut out, self.create_revision);
        put_varint(&mut out, self.version);
        put_varint(&mut out, self.prev_revision);
        put_varint(&mut out, self.value.len() as u64);
        out.extend_from_slice(&self.value);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < 4 {
            return Err(DecodeError::Truncated("record"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != crc {
            return Err(DecodeError::Checksum);
        }
        let mut r = Reader::new(body);
        let format = r.u8("record format")?;
        if format != RECORD_FORMAT {
            return Err(DecodeError::UnknownFormat(format));
        }
        let kind = match r.u8("record kind")? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            k => return Err(DecodeError::UnknownKind(k)),
        };
        let key = r.len_prefixed("record key")?;
        if key.is_empty() {
            return Err(DecodeError::Invalid("empty key"));
        }
        let create_revision = r.varint("create revision")?;
        let version = r.varint("version")?;
        let prev_revision = r.varint("previous revision")?;
        let value = r.len_prefixed("record value")?;
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        if kind == EventKind::Delete && (!value.is_empty() || prev_revision == 0) {
            return Err(DecodeError::Invalid(
                "delete record with a value or without a previous revision",
            ));
        }
        if kind == EventKind::Put && (create_revision == 0 || version == 0) {
            return Err(DecodeError::Invalid(
                "put record without create revision or version",
            ));
        }
        Ok(Record {
            kind,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            create_revision,
            version,
            prev_revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            kind: EventKind::Put,
            key: Bytes::from_static(b"/registry/pods/default/web-0"),
            value: Bytes::from_static(b"{\"kind\":\"Pod\"}"),
            create_revision: 7,
            version: 3,
            prev_revision: 41,
        }
    }

    #[test]
    fn record_round_trips() {
        let rec = sample();
        assert_eq!(Record::decode(&rec.encode()).unwrap(), rec);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(
                Record::decode(&enc[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn flipped_bits_are_caught_by_the_checksum() {
        let enc = sample().encode();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x10;
            assert!(Record::decode(&bad).is_err(), "flip at byte {i} decoded");
        }
    }

    #[test]
    fn varint_limits() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        assert_eq!(Reader::new(&out).varint("v").unwrap(), u64::MAX);
        let too_long = [0xffu8; 11];
        assert_eq!(
            Reader::new(&too_long).varint("v"),
            Err(DecodeError::VarintOverflow)
        );
        let mut over = vec![0xffu8; 9];
        over.push(0x02);
        assert_eq!(
            Reader::new(&over).varint("v"),
            Err(DecodeError::VarintOverflow)
        );
    }

    #[test]
    fn revision_keys_sort_numerically() {
        assert!(encode_revision(255) < encode_revision(256));
        assert_eq!(decode_revision(&encode_revision(123456)).unwrap(), 123456);
        assert!(decode_revision(&[1, 2, 3]).is_err());
    }
}
