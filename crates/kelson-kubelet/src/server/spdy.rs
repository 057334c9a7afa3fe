//! A small SPDY/3.1 framing layer: enough of the protocol to be the client
//! of a container runtime's streaming server (exec, attach and port-forward
//! as upstream's `httpstream/spdy` speaks them through moby/spdystream).
//!
//! Header blocks of SYN_STREAM, SYN_REPLY and HEADERS frames are one zlib
//! stream per direction and connection, primed with the SPDY/3 dictionary
//! and sync-flushed after each block. Flow control (WINDOW_UPDATE) is
//! parsed but never needed: spdystream does not enforce windows.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// Last frame of a stream in this direction.
pub const FLAG_FIN: u8 = 0x01;
/// The largest payload of one frame (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// A decompressed header block larger than this is refused (a zlib bomb
/// guard; real blocks are a few hundred bytes).
const MAX_HEADER_BLOCK: usize = 1 << 20;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// The length-prefixed words that open the SPDY/3 header dictionary
/// (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw text that ends the SPDY/3 header dictionary.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The zlib preset dictionary of SPDY/3 header blocks.
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICTIONARY_WORDS {
        d.put_u32(w.len() as u32);
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid SPDY frame: {0}")]
    Invalid(String),
    #[error("SPDY header compression: {0}")]
    Compress(String),
    #[error("SPDY connection closed in the middle of a frame")]
    Truncated,
}

/// Header name/value pairs in order; names are lower case.
pub type Headers = Vec<(String, String)>;

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Settings as (flags, id, value).
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type this client does not know; skipped.
    Unknown {
        kind: u16,
    },
}

/// The sending side: frames to bytes, with the connection's header
/// compressor.
pub struct Encoder {
    compress: Compress,
}

impl Encoder {
    pub fn new() -> Result<Encoder, SpdyError> {
        let mut compress = Compress::new(Compression::default(), true);
        compress
            .set_dictionary(&dictionary())
            .map_err(|e| SpdyError::Compress(e.to_string()))?;
        Ok(Encoder { compress })
    }

    /// A header block, compressed and sync-flushed so the peer can decode
    /// it on its own.
    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            raw.put_u32(k.len() as u32);
            raw.extend_from_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start_in = self.compress.total_in();
        loop {
            out.reserve(256);
            let consumed = (self.compress.total_in() - start_in) as usize;
            self.compress
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compress(e.to_string()))?;
            let consumed = (self.compress.total_in() - start_in) as usize;
            // Done once all input is in and the flush fit in the buffer.
            if consumed >= raw.len() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, len: usize| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
        };
        let check = |len: usize| {
            if len > MAX_PAYLOAD {
                Err(SpdyError::Invalid(format!("frame payload of {len} bytes")))
            } else {
                Ok(())
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = self.header_block(headers)?;
                check(block.len() + 10)?;
                control(out, TYPE_SYN_STREAM, *flags, block.len() + 10);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(0); // slot
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let block = self.header_block(headers)?;
                check(block.len() + 4)?;
                control(out, kind, *flags, block.len() + 4);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings(entries) => {
                check(4 + entries.len() * 8)?;
                control(out, TYPE_SETTINGS, 0, 4 + entries.len() * 8);
                out.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    out.put_u32((u32::from(*flags) << 24) | (id & 0x00ff_ffff));
                    out.put_u32(*value);
                }
            }
            Frame::Ping(id) => {
                control(out, TYPE_PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                check(data.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.extend_from_slice(data);
            }
            Frame::Unknown { kind } => {
                return Err(SpdyError::Invalid(format!(
                    "cannot send control frame type {kind}"
                )))
            }
        }
        Ok(())
    }
}

/// The receiving side: bytes to frames, with the connection's header
/// decompressor.
pub struct Decoder {
    decompress: Decompress,
    dictionary: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            decompress: Decompress::new(true),
            dictionary: dictionary(),
        }
    }

    fn header_block(&mut self, input: &[u8]) -> Result<Headers, SpdyError> {
        let err = |e: String| SpdyError::Compress(e);
        let mut raw: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        let start_in = self.decompress.total_in();
        loop {
            if raw.len() == raw.capacity() {
                raw.reserve(1024);
            }
            let consumed = (self.decompress.total_in() - start_in) as usize;
            let out_before = raw.len();
            let result =
                self.decompress
                    .decompress_vec(&input[consumed..], &mut raw, FlushDecompress::Sync);
            let now_consumed = (self.decompress.total_in() - start_in) as usize;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decompress
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| err(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(err(e.to_string())),
            }
            if raw.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Invalid("header block too large".into()));
            }
            let progressed = now_consumed > consumed || raw.len() > out_before;
            // All input taken and room left over: the block is complete.
            if (now_consumed >= input.len() && raw.len() < raw.capacity()) || !progressed {
                break;
            }
        }
        parse_header_block(&raw)
    }

    /// Takes one complete frame off the front of `buf`, or None when more
    /// bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(8 + len).freeze();
        let first = frame.get_u32();
        let flags_len = frame.get_u32();
        let flags = (flags_len >> 24) as u8;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: frame,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Invalid(format!("unsupported version {version}")));
        }
        let kind = (first & 0xffff) as u16;
        let need = |frame: &Bytes, n: usize| {
            if frame.remaining() < n {
                Err(SpdyError::Invalid(format!(
                    "control frame type {kind} too short"
                )))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            TYPE_SYN_STREAM => {
                need(&frame, 10)?;
                let stream_id = frame.get_u32() & 0x7fff_ffff;
                let associated_to = frame.get_u32() & 0x7fff_ffff;
                let priority = frame.get_u8() >> 5;
                let _slot = frame.get_u8();
                let headers = self.header_block(&frame)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&frame, 4)?;
                let stream_id = frame.get_u32() & 0x7fff_ffff;
                let headers = self.header_block(&frame)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&frame, 8)?;
                Frame::RstStream {
                    stream_id: frame.get_u32() & 0x7fff_ffff,
                    status: frame.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(&frame, 4)?;
                let n = frame.get_u32() as usize;
                need(&frame, n.saturating_mul(8))?;
                let mut entries = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let fid = frame.get_u32();
                    entries.push(((fid >> 24) as u8, fid & 0x00ff_ffff, frame.get_u32()));
                }
                Frame::Settings(entries)
            }
            TYPE_PING => {
                need(&frame, 4)?;
                Frame::Ping(frame.get_u32())
            }
            TYPE_GOAWAY => {
                need(&frame, 8)?;
                Frame::GoAway {
                    last_good_stream_id: frame.get_u32() & 0x7fff_ffff,
                    status: frame.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(&frame, 8)?;
                Frame::WindowUpdate {
                    stream_id: frame.get_u32() & 0x7fff_ffff,
                    delta: frame.get_u32() & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        }))
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut b = raw;
    let bad = || SpdyError::Invalid("truncated header block".into());
    let read_str = |b: &mut &[u8]| -> Result<String, SpdyError> {
        if b.remaining() < 4 {
            return Err(bad());
        }
        let n = b.get_u32() as usize;
        if b.remaining() < n {
            return Err(bad());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.remaining() < 4 {
        return Err(bad());
    }
    let count = b.get_u32();
    let mut out = Vec::new();
    for _ in 0..count {
        let name = read_str(&mut b)?;
        let value = read_str(&mut b)?;
        // Several values of one name are NUL-separated.
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

/// The first value of a header in a frame's header block.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads frames off a byte stream. `next` is cancel-safe: bytes read so far
/// stay in the buffer.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            decoder: Decoder::new(),
        }
    }

    /// The next frame; None at a clean end of the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(f));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(SpdyError::Truncated)
                };
            }
        }
    }
}

/// Writes frames to a byte stream, flushing each.
pub struct FrameWriter<W> {
    io: W,
    encoder: Encoder,
    scratch: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Result<Self, SpdyError> {
        Ok(FrameWriter {
            io,
            encoder: Encoder::new()?,
            scratch: Vec::with_capacity(16 * 1024),
        })
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<(), SpdyError> {
        self.scratch.clear();
        self.encoder.encode(frame, &mut self.scratch)?;
        self.io.write_all(&self.scratch).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends `data` on a stream, split to the frame size limit.
    pub async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) -> Result<(), SpdyError> {
        // spdystream reads 32 KiB at a time; keep frames that size.
        const CHUNK: usize = 32 * 1024;
        let mut chunks = data.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            return self
                .send(&Frame::Data {
                    stream_id,
                    flags: if fin { FLAG_FIN } else { 0 },
                    data: Bytes::new(),
                })
                .await;
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            self.send(&Frame::Data {
                stream_id,
                flags: if fin && last { FLAG_FIN } else { 0 },
                data: Bytes::copy_from_slice(c),
            })
            .await?;
        }
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib's dictionary id (adler32) that SPDY/3 peers expect.
        let mut c = Compress::new(Compression::default(), true);
        let id = c.set_dictionary(&d).unwrap();
        assert_eq!(id, 0xe3c6_a7c2);
    }

    fn roundtrip(frames: &[Frame]) -> Vec<Frame> {
        let mut enc = Encoder::new().unwrap();
        let mut wire = Vec::new();
        for f in frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Fed in small pieces: frames straddle reads.
        for chunk in wire.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn frames_round_trip_with_compressed_headers() {
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            },
            // The second block depends on the first's compression state.
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: 0,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::Ping(2),
            Frame::RstStream {
                stream_id: 5,
                status: 5,
            },
            Frame::Settings(vec![(0, 7, 65536)]),
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1000,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        assert_eq!(roundtrip(&frames), frames);
    }

    #[test]
    fn syn_stream_wire_layout() {
        let mut enc = Encoder::new().unwrap();
        let mut wire = Vec::new();
        enc.encode(
            &Frame::SynStream {
                stream_id: 5,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("StreamType".into(), "stdin".into())],
            },
            &mut wire,
        )
        .unwrap();
        // Control bit, version 3, type 1.
        assert_eq!(&wire[..4], &[0x80, 0x03, 0x00, 0x01]);
        let len = u32::from_be_bytes([0, wire[5], wire[6], wire[7]]) as usize;
        assert_eq!(wire.len(), 8 + len);
        assert_eq!(&wire[8..12], &5u32.to_be_bytes());
        // The header block is a zlib stream using the SPDY dictionary:
        // FDICT set, dictionary id follows the two header bytes.
        assert_eq!(wire[18] & 0x20, 0x20);
        assert_eq!(&wire[20..24], &0xe3c6_a7c2u32.to_be_bytes());
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&wire[..]);
        match dec.decode(&mut buf).unwrap() {
            Some(Frame::SynStream { headers, .. }) => {
                // Names go out lower case, as SPDY requires.
                assert_eq!(header(&headers, "streamtype"), Some("stdin"));
                assert_eq!(headers[0].0, "streamtype");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_frame_layout_and_fin() {
        let mut enc = Encoder::new().unwrap();
        let mut wire = Vec::new();
        enc.encode(
            &Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(wire, [0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut dec = Decoder::new();
        // A SYN_STREAM whose header block is not zlib.
        let mut buf = BytesMut::from(
            &[
                0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
            ][..],
        );
        assert!(dec.decode(&mut buf).is_err());
        // A version 2 frame.
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(dec.decode(&mut buf).is_err());
        // A short PING.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 0][..]);
        assert!(dec.decode(&mut buf).is_err());
    }

    #[tokio::test]
    async fn reader_and_writer_over_a_pipe() {
        let (a, b) = tokio::io::duplex(64);
        let mut w = FrameWriter::new(a).unwrap();
        let mut r = FrameReader::new(b);
        let big = vec![7u8; 70_000];
        let writer = tokio::spawn(async move {
            w.data(1, &big, true).await.unwrap();
            w.send(&Frame::Ping(1)).await.unwrap();
        });
        let mut got = Vec::new();
        let mut fin = false;
        while !fin {
            match r.next().await.unwrap() {
                Some(Frame::Data { data, flags, .. }) => {
                    assert!(data.len() <= 32 * 1024);
                    got.extend_from_slice(&data);
                    fin = flags & FLAG_FIN != 0;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got.len(), 70_000);
        assert_eq!(r.next().await.unwrap(), Some(Frame::Ping(1)));
        writer.await.unwrap();
        assert_eq!(r.next().await.unwrap(), None);
    }
}
