//! Drops `metadata.managedFields` from what the API server sends a component,
//! before kube-rs decodes it.
//!
//! Components never read managedFields, and upstream's controller manager
//! and scheduler drop them from their informer caches for the memory. Here
//! they are cut from the JSON bytes instead, so they are never decoded
//! either: a pod's managedFields are about a third of its JSON and, decoded
//! into nested maps, most of the cost of decoding it. An update sent without
//! managedFields keeps the stored ones (upstream's rule), so cutting them
//! from objects a component later writes back loses nothing.
//!
//! Only `application/json` bodies without a content encoding are touched
//! (lists, objects and watch streams, one JSON document per line). A line
//! the scanner cannot follow up to its last managedFields is passed on
//! unchanged; damage after that point is not looked for and stays for
//! kube-rs to report.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

const MANAGED_FIELDS: &[u8] = b"managedFields";
const METADATA: &[u8] = b"metadata";
/// Deeper nesting than this is passed on as it is.
const MAX_DEPTH: usize = 256;

/// `doc` without the managedFields member of any object found under a
/// `metadata` key, or `None` when there is nothing to cut or `doc` is not
/// well-formed JSON up to the last cut.
pub fn strip_managed_fields(doc: &[u8]) -> Option<Vec<u8>> {
    let cuts = find_cuts(doc)?;
    let mut out = Vec::with_capacity(doc.len());
    apply_cuts(doc, &cuts, &mut out);
    Some(out)
}

/// The byte ranges of `doc` to cut, if any (and `doc` reads well).
fn find_cuts(doc: &[u8]) -> Option<Vec<(usize, usize)>> {
    // Forward search is vectorised, reverse search is not; a document holds
    // one occurrence per object.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"managedFields\""));
    let last = FINDER.find_iter(doc).last()?;
    let mut scan = Scanner {
        src: doc,
        pos: 0,
        last,
        done: false,
        cutting: false,
        cuts: Vec::new(),
    };
    scan.value(false, 0)?;
    // Past the last occurrence nothing more can be cut; the rest is left
    // for the decoder to judge.
    if !scan.done {
        scan.ws();
        if scan.pos != doc.len() {
            return None;
        }
    }
    (!scan.cuts.is_empty()).then_some(scan.cuts)
}

fn apply_cuts(doc: &[u8], cuts: &[(usize, usize)], out: &mut Vec<u8>) {
    let mut from = 0;
    for &(start, end) in cuts {
        out.extend_from_slice(&doc[from..start]);
        from = end;
    }
    out.extend_from_slice(&doc[from..]);
}

/// A JSON reader that only finds positions: the byte ranges to cut.
struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
    /// Where the last `"managedFields"` in the document starts.
    last: usize,
    /// Set once the reader is past `last`: it stops there.
    done: bool,
    /// Inside a value being cut (whose key may be the last occurrence).
    cutting: bool,
    cuts: Vec<(usize, usize)>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// True (and stop) once nothing is left to find.
    fn finished(&mut self) -> bool {
        if self.pos > self.last && !self.cutting {
            self.done = true;
        }
        self.done
    }

    fn value(&mut self, is_meta: bool, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'{' => self.object(is_meta, depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(drop),
            _ => self.scalar(),
        }
    }

    /// A number, true, false or null: up to the next delimiter.
    fn scalar(&mut self) -> Option<()> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    /// Returns the string's raw contents (escapes left as they are).
    fn string(&mut self) -> Option<&[u8]> {
        let start = self.pos + 1;
        let mut at = start;
        loop {
            let i = at + memchr::memchr2(b'"', b'\\', self.src.get(at..)?)?;
            if self.src[i] == b'\\' {
                at = i + 2;
                continue;
            }
            self.pos = i + 1;
            return Some(&self.src[start..i]);
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.pos += 1;
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.value(false, depth + 1)?;
            if self.finished() {
                return Some(());
            }
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `is_meta`: this object is the value of a `metadata` key.
    fn object(&mut self, is_meta: bool, depth: usize) -> Option<()> {
        self.pos += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        // Where the comma before the current member is, if any.
        let mut comma: Option<usize> = None;
        loop {
            let member = self.pos;
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            let (child_meta, cut) = (key == METADATA, is_meta && key == MANAGED_FIELDS);
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.cutting |= cut;
            self.value(child_meta, depth + 1)?;
            self.cutting &= !cut;
            if self.done {
                return Some(());
            }
            let end = self.pos;
            self.ws();
            let next = self.peek()?;
            if cut {
                match (comma, next) {
                    // Not the first member: cut from the comma before it.
                    (Some(c), _) => self.cuts.push((c, end)),
                    // The first of several: cut through the comma after it.
                    (None, b',') => {
                        self.pos += 1;
                        self.ws();
                        self.cuts.push((member, self.pos));
                        if self.finished() {
                            return Some(());
                        }
                        continue;
                    }
                    (None, _) => self.cuts.push((member, end)),
                }
            }
            if self.finished() {
                return Some(());
            }
            match next {
                b',' => {
                    comma = Some(self.pos);
                    self.pos += 1;
                    self.ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// A response body with managedFields cut from each JSON line (see the
/// module docs); other bodies pass through untouched.
pub struct TrimBody<B> {
    inner: Pin<Box<B>>,
    /// Only JSON bodies are trimmed.
    trim: bool,
    /// The start of a line whose end has not arrived yet.
    partial: BytesMut,
    done: bool,
}

impl<B> TrimBody<B> {
    pub fn new(inner: B, trim: bool) -> Self {
        TrimBody {
            inner: Box::pin(inner),
            trim,
            partial: BytesMut::new(),
            done: false,
        }
    }
}

/// Wraps a response's body, trimming it when it is JSON.
pub fn trim_response<B>(res: http::Response<B>) -> http::Response<TrimBody<B>> {
    let json = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let plain = !res.headers().contains_key(http::header::CONTENT_ENCODING);
    res.map(|b| TrimBody::new(b, json && plain))
}

/// `lines` (each ending in a newline, or the final remainder) with every
/// line trimmed.
fn trim_lines(lines: Bytes) -> Bytes {
    let mut out = Vec::new();
    // `lines[..copied]` is in `out` already (cut where needed).
    let mut copied = 0;
    let mut at = 0;
    let ends = memchr::memchr_iter(b'\n', &lines).map(|i| i + 1);
    for end in ends.chain(std::iter::once(lines.len())) {
        if end <= at {
            continue;
        }
        let line = &lines[at..end];
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if let Some(cuts) = find_cuts(body) {
            if out.is_empty() {
                out.reserve(lines.len());
            }
            out.extend_from_slice(&lines[copied..at]);
            apply_cuts(body, &cuts, &mut out);
            out.extend_from_slice(&line[body.len()..]);
            copied = at + line.len();
        }
        at += line.len();
    }
    if copied == 0 {
        return lines;
    }
    out.extend_from_slice(&lines[copied..]);
    Bytes::from(out)
}

impl<B> Body for TrimBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if !this.trim {
            return this.inner.as_mut().poll_frame(cx);
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers: pass them on.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    let Some(last) = memchr::memrchr(b'\n', &data) else {
                        this.partial.extend_from_slice(&data);
                        continue;
                    };
                    let out = if this.partial.is_empty() {
                        trim_lines(data.slice(..=last))
                    } else {
                        this.partial.extend_from_slice(&data[..=last]);
                        trim_lines(this.partial.split().freeze())
                    };
                    this.partial.extend_from_slice(&data[last + 1..]);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.partial.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = this.partial.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(trim_lines(rest)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.trim {
            self.done
        } else {
            self.inner.is_end_stream()
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.trim {
            // Cutting changes the length.
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::{json, Value};

    fn strip(v: &Value) -> Value {
        let bytes = serde_json::to_vec(v).unwrap();
        match strip_managed_fields(&bytes) {
            Some(out) => serde_json::from_slice(&out).unwrap(),
            None => v.clone(),
        }
    }

    fn mf() -> Value {
        json!([{"manager": "m", "operation": "Update", "fieldsV1": {"f:spec": {"f:x": {}}}}])
    }

    #[test]
    fn cuts_managed_fields_wherever_it_sits_in_metadata() {
        for (before, after) in [
            (
                json!({"metadata": {"managedFields": mf(), "name": "a", "uid": "u"}}),
                json!({"metadata": {"name": "a", "uid": "u"}}),
            ),
            (
                json!({"metadata": {"name": "a", "managedFields": mf(), "uid": "u"}}),
                json!({"metadata": {"name": "a", "uid": "u"}}),
            ),
            (
                json!({"metadata": {"name": "a", "managedFields": mf()}}),
                json!({"metadata": {"name": "a"}}),
            ),
            (
                json!({"metadata": {"managedFields": mf()}}),
                json!({"metadata": {}}),
            ),
        ] {
            assert_eq!(strip(&before), after, "{before}");
        }
    }

    #[test]
    fn cuts_every_item_of_a_list_and_a_watch_event() {
        let list = json!({"kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": [
            {"metadata": {"name": "a", "managedFields": mf()}, "spec": {"x": [1, 2.5, true, null]}},
            {"metadata": {"name": "b", "managedFields": mf()}, "status": {}},
        ]});
        assert_eq!(
            strip(&list),
            json!({"kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": [
                {"metadata": {"name": "a"}, "spec": {"x": [1, 2.5, true, null]}},
                {"metadata": {"name": "b"}, "status": {}},
            ]})
        );
        let event = json!({"type": "MODIFIED", "object": {"metadata": {"name": "a", "managedFields": mf()}}});
        assert_eq!(
            strip(&event),
            json!({"type": "MODIFIED", "object": {"metadata": {"name": "a"}}})
        );
    }

    #[test]
    fn leaves_other_members_and_strings_alone() {
        // Not under metadata, or only text that looks like the key.
        for v in [
            json!({"data": {"managedFields": "x"}, "metadata": {"name": "a"}}),
            json!({"metadata": {"annotations": {"note": "\"managedFields\":[1]"}}}),
            json!({"spec": {"managedFields": [1]}}),
        ] {
            let bytes = serde_json::to_vec(&v).unwrap();
            assert_eq!(strip_managed_fields(&bytes), None, "{v}");
        }
        // Escaped quotes inside strings do not end them early.
        let v = json!({"metadata": {"name": "a\"b\\", "managedFields": mf(), "labels": {"k": "v\\\""}}});
        assert_eq!(
            strip(&v),
            json!({"metadata": {"name": "a\"b\\", "labels": {"k": "v\\\""}}})
        );
    }

    #[test]
    fn whitespace_and_malformed_input() {
        let spaced = b"{ \"metadata\" : { \"managedFields\" : [ {} ] , \"name\" : \"a\" } }";
        let out = strip_managed_fields(spaced).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"metadata": {"name": "a"}}));
        // Damage before the last cut: passed on as it is.
        for bad in [
            &b"{\"metadata\": {\"managedFields\": [1}}"[..],
            b"{\"metadata\": {\"name\" \"a\", \"managedFields\": [1]}}",
            b"{\"metadata\": {\"managedFields\" [1]}}",
        ] {
            assert_eq!(strip_managed_fields(bad), None);
        }
        // Damage after it is not looked for, and stays for the decoder.
        for bad in [
            &b"{\"metadata\": {\"managedFields\": [1]}"[..],
            b"{\"metadata\": {\"managedFields\": [1]}} x",
        ] {
            let out = strip_managed_fields(bad).unwrap();
            assert!(serde_json::from_slice::<Value>(&out).is_err());
        }
        let deep = format!(
            "{{\"metadata\":{{\"managedFields\":{}1{}}}}}",
            "[".repeat(1000),
            "]".repeat(1000)
        );
        assert_eq!(strip_managed_fields(deep.as_bytes()), None);
    }

    /// A body that yields the given chunks.
    fn body(chunks: &[&[u8]]) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        http_body_util::StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_watch_stream_split_anywhere_is_trimmed_line_by_line() {
        let a =
            json!({"type": "ADDED", "object": {"metadata": {"name": "a", "managedFields": mf()}}});
        let b = json!({"type": "DELETED", "object": {"metadata": {"name": "b"}}});
        let stream = format!("{a}\n{b}\n{a}");
        let bytes = stream.as_bytes();
        let want = format!(
            "{}\n{}\n{}",
            json!({"type": "ADDED", "object": {"metadata": {"name": "a"}}}),
            b,
            json!({"type": "ADDED", "object": {"metadata": {"name": "a"}}}),
        );
        for split in [1, 7, 40, bytes.len() / 2, bytes.len() - 3] {
            let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
            let res = http::Response::builder()
                .header("content-type", "application/json")
                .body(body(&chunks))
                .unwrap();
            let got = trim_response(res).into_body().collect().await.unwrap();
            assert_eq!(String::from_utf8(got.to_bytes().to_vec()).unwrap(), want);
        }
    }

    #[tokio::test]
    async fn other_content_types_pass_through() {
        let text = br#"{"metadata":{"managedFields":[]}}"#;
        let res = http::Response::builder()
            .header("content-type", "text/plain")
            .body(body(&[text]))
            .unwrap();
        let got = trim_response(res).into_body().collect().await.unwrap();
        assert_eq!(&got.to_bytes()[..], &text[..]);
    }
}
