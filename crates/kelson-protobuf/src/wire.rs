//! The protobuf wire format: varints, field tags and length-delimited values.
//! Reading never panics: truncated or malformed input is an error.

use thiserror::Error;

/// Why a buffer is not valid protobuf.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unexpected end of protobuf data")]
    Truncated,
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    #[error("unsupported wire type {0}")]
    WireType(u8),
    #[error("field number 0 is not valid")]
    FieldZero,
}

/// The wire type of a field, from the low three bits of its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    LengthDelimited,
    Fixed32,
}

impl WireType {
    fn from_bits(bits: u8) -> Result<WireType, WireError> {
        match bits {
            0 => Ok(WireType::Varint),
            1 => Ok(WireType::Fixed64),
            2 => Ok(WireType::LengthDelimited),
            5 => Ok(WireType::Fixed32),
            // 3 and 4 are the deprecated groups, which Kubernetes never uses.
            other => Err(WireError::WireType(other)),
        }
    }

    fn bits(self) -> u64 {
        match self {
            WireType::Varint => 0,
            WireType::Fixed64 => 1,
            WireType::LengthDelimited => 2,
            WireType::Fixed32 => 5,
        }
    }
}

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Reads fields one by one from a message's bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next field as (field number, value), or `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| WireError::Truncated)?;
        if number == 0 {
            return Err(WireError::FieldZero);
        }
        let value = match WireType::from_bits((tag & 7) as u8)? {
            WireType::Varint => Value::Varint(self.varint()?),
            WireType::Fixed64 => Value::Fixed64(u64::from_le_bytes(self.take_array()?)),
            WireType::Fixed32 => Value::Fixed32(u32::from_le_bytes(self.take_array()?)),
            WireType::LengthDelimited => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
        };
        Ok(Some((number, value)))
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut out = 0u64;
        for (i, byte) in self.buf.iter().enumerate().take(10) {
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(out);
            }
        }
        if self.buf.len() >= 10 {
            Err(WireError::VarintTooLong)
        } else {
            Err(WireError::Truncated)
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < len {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

/// Appends fields to a buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    fn tag(&mut self, number: u32, wire: WireType) {
        self.raw_varint((u64::from(number) << 3) | wire.bits());
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A varint field (int32, int64, uint*, bool, enum). Negative int32/int64
    /// values are written as 10-byte two's complement, as protobuf requires.
    pub fn varint(&mut self, number: u32, v: u64) {
        self.tag(number, WireType::Varint);
        self.raw_varint(v);
    }

    pub fn bool(&mut self, number: u32, v: bool) {
        self.varint(number, u64::from(v));
    }

    pub fn int64(&mut self, number: u32, v: i64) {
        self.varint(number, v as u64);
    }

    pub fn double(&mut self, number: u32, v: f64) {
        self.tag(number, WireType::Fixed64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, number: u32, v: &[u8]) {
        self.tag(number, WireType::LengthDelimited);
        self.raw_varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub fn string(&mut self, number: u32, v: &str) {
        self.bytes(number, v.as_bytes());
    }

    /// An embedded message, already encoded by another writer.
    pub fn message(&mut self, number: u32, inner: &Writer) {
        self.bytes(number, &inner.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_wire_type() {
        let mut inner = Writer::new();
        inner.string(1, "x");
        let mut w = Writer::new();
        w.varint(1, 300);
        w.int64(2, -1);
        w.double(3, 1.5);
        w.string(4, "hello");
        w.message(5, &inner);
        w.bool(16, true);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.next_field().unwrap(), Some((1, Value::Varint(300))));
        assert_eq!(r.next_field().unwrap(), Some((2, Value::Varint(u64::MAX))));
        assert_eq!(
            r.next_field().unwrap(),
            Some((3, Value::Fixed64(1.5f64.to_bits())))
        );
        assert_eq!(r.next_field().unwrap(), Some((4, Value::Bytes(b"hello"))));
        assert_eq!(
            r.next_field().unwrap(),
            Some((5, Value::Bytes(&[10, 1, b'x'])))
        );
        assert_eq!(r.next_field().unwrap(), Some((16, Value::Varint(1))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        // 300 as a varint is [0xac, 0x02]; cut after the first byte.
        assert_eq!(
            Reader::new(&[0x08, 0xac]).next_field(),
            Err(WireError::Truncated)
        );
        // A length prefix longer than the data.
        assert_eq!(
            Reader::new(&[0x22, 0x05, b'a']).next_field(),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x0b]).next_field(),
            Err(WireError::WireType(3))
        );
        assert_eq!(Reader::new(&[0x00]).next_field(), Err(WireError::FieldZero));
        assert_eq!(
            Reader::new(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .next_field(),
            Err(WireError::VarintTooLong)
        );
    }
}
