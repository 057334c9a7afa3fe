//! Container logs as upstream's kubelet serves them from CRI log files
//! (kuberuntime/logs): one `TIMESTAMP STREAM TAG CONTENT` record a line,
//! partial records (tag `P`) without their newline so consecutive pieces
//! join, and the PodLogOptions `tailLines`, `sinceSeconds`/`sinceTime`,
//! `timestamps`, `limitBytes` and `follow`.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::tz::Offset;
use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("failed to open log file {path:?}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to tail {tail} lines of log file {path:?}: {source}")]
    Tail {
        tail: i64,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read log file {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which output a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub timestamp: Timestamp,
    /// The offset the runtime wrote the time with (kept for `timestamps`).
    pub offset: Offset,
    pub stream: LogStream,
    /// The content; a full record keeps its newline, a partial one has
    /// none.
    pub log: Vec<u8>,
}

/// Parses one line of a CRI log file (with its trailing newline, if any),
/// as upstream's parseCRILog.
pub fn parse_cri_line(line: &[u8]) -> Result<LogRecord, String> {
    let (ts, rest) = split_space(line).ok_or("timestamp is not found")?;
    let ts = std::str::from_utf8(ts).map_err(|_| "timestamp is not UTF-8".to_string())?;
    let (timestamp, offset) = parse_time(ts)?;
    let (stream, rest) = split_space(rest).ok_or("stream type is not found")?;
    let stream = match stream {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        other => {
            return Err(format!(
                "unexpected stream type {:?}",
                String::from_utf8_lossy(other)
            ))
        }
    };
    let (tags, content) = split_space(rest).ok_or("log tag is not found")?;
    // Tags are ':'-separated; only the first (P or F) matters today.
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    let mut log = content.to_vec();
    if partial && log.last() == Some(&b'\n') {
        log.pop();
    }
    Ok(LogRecord {
        timestamp,
        offset,
        stream,
        log,
    })
}

fn split_space(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|c| *c == b' ')?;
    Some((&b[..i], &b[i + 1..]))
}

/// RFC 3339 with optional fraction; the offset is kept for output.
fn parse_time(s: &str) -> Result<(Timestamp, Offset), String> {
    let ts: Timestamp = s
        .parse()
        .map_err(|e| format!("unexpected timestamp format {s:?}: {e}"))?;
    let offset = if s.ends_with('Z') || s.ends_with('z') {
        Offset::UTC
    } else {
        let tail = s.get(s.len().saturating_sub(6)..).unwrap_or("");
        let sign = match tail.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(format!("unexpected timestamp format {s:?}")),
        };
        let h: i32 = tail.get(1..3).and_then(|v| v.parse().ok()).unwrap_or(0);
        let m: i32 = tail.get(4..6).and_then(|v| v.parse().ok()).unwrap_or(0);
        Offset::from_seconds(sign * (h * 3600 + m * 60)).unwrap_or(Offset::UTC)
    };
    Ok((ts, offset))
}

/// Go's RFC3339NanoFixed ("2006-01-02T15:04:05.000000000Z07:00") in the
/// record's own offset.
pub fn format_time(ts: Timestamp, offset: Offset) -> String {
    let dt = offset.to_datetime(ts);
    let zone = if offset == Offset::UTC {
        "Z".to_string()
    } else {
        let secs = offset.seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let a = secs.abs();
        format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}{zone}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond()
    )
}

/// The kubelet's view of PodLogOptions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    pub since_time: Option<Timestamp>,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
}

/// Why a query was refused: 400 when it does not decode, 422 when it does
/// not validate (upstream's kubelet answers with these bodies).
#[derive(Debug, Clone, PartialEq)]
pub enum OptionsError {
    Decode,
    Invalid,
}

impl LogOptions {
    /// Reads the query of `/containerLogs`, with the legacy `tail`
    /// parameter (`all` = no limit) and ValidatePodLogOptions' rules.
    pub fn from_query(params: &[(String, String)]) -> Result<LogOptions, OptionsError> {
        let first = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let flag = |k: &str| -> Result<bool, OptionsError> {
            match first(k) {
                None | Some("") => Ok(false),
                Some(v) => parse_go_bool(v).ok_or(OptionsError::Decode),
            }
        };
        let int = |v: Option<&str>| -> Result<Option<i64>, OptionsError> {
            match v {
                None | Some("") => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| OptionsError::Decode),
            }
        };
        let tail = match first("tail") {
            Some("all") => None,
            Some(t) if !t.is_empty() => int(Some(t))?,
            _ => int(first("tailLines"))?,
        };
        let since_time = match first("sinceTime") {
            None | Some("") => None,
            Some(t) => Some(t.parse::<Timestamp>().map_err(|_| OptionsError::Decode)?),
        };
        let o = LogOptions {
            follow: flag("follow")?,
            previous: flag("previous")?,
            timestamps: flag("timestamps")?,
            since_seconds: int(first("sinceSeconds"))?,
            since_time,
            tail_lines: tail,
            limit_bytes: int(first("limitBytes"))?,
        };
        let invalid = o.tail_lines.is_some_and(|t| t < 0)
            || o.limit_bytes.is_some_and(|l| l < 1)
            || (o.since_seconds.is_some() && o.since_time.is_some())
            || o.since_seconds.is_some_and(|s| s < 1);
        if invalid {
            return Err(OptionsError::Invalid);
        }
        Ok(o)
    }

    /// The earliest record time to show: the later of now - sinceSeconds
    /// and sinceTime.
    fn since(&self, now: Timestamp) -> Option<Timestamp> {
        let by_seconds = self
            .since_seconds
            .and_then(|s| now.checked_sub(jiff::SignedDuration::from_secs(s)).ok());
        match (by_seconds, self.since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// strconv.ParseBool.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Applies `since`, `timestamps` and `limitBytes` to records, as upstream's
/// logWriter.
pub struct LogFilter {
    since: Option<Timestamp>,
    timestamps: bool,
    remain: i64,
}

impl LogFilter {
    pub fn new(opts: &LogOptions, now: Timestamp) -> LogFilter {
        LogFilter {
            since: opts.since(now),
            timestamps: opts.timestamps,
            remain: opts.limit_bytes.unwrap_or(i64::MAX),
        }
    }

    /// Appends what `rec` contributes to `out`; false once the byte limit
    /// is reached (nothing more is to be written).
    pub fn write(&mut self, rec: &LogRecord, out: &mut Vec<u8>) -> bool {
        if self.since.is_some_and(|s| rec.timestamp < s) {
            return true;
        }
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(format_time(rec.timestamp, rec.offset).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&rec.log);
        let wrote = (out.len() - start) as i64;
        if wrote > self.remain {
            out.truncate(start + self.remain.max(0) as usize);
        }
        self.remain -= (out.len() - start) as i64;
        self.remain > 0
    }
}

/// The offset where the last `n` lines of the file start, as upstream's
/// tail.FindTailLineStartIndex: it counts newlines from the end, so a final
/// line without one comes on top of the `n`. Also the file's size the count
/// was made at: a read that stops there returns exactly those lines, even
/// while the container keeps writing.
pub async fn tail_start(f: &mut tokio::fs::File, n: Option<i64>) -> std::io::Result<(u64, u64)> {
    let size = f.seek(SeekFrom::End(0)).await?;
    let Some(n) = n.filter(|n| *n >= 0) else {
        return Ok((0, size));
    };
    const BLOCK: u64 = 4096;
    let mut right = size;
    let mut count: i64 = 0;
    let mut block = Vec::new();
    let mut left = size;
    while right > 0 && count <= n {
        left = right.saturating_sub(BLOCK);
        block.resize((right - left) as usize, 0);
        f.seek(SeekFrom::Start(left)).await?;
        f.read_exact(&mut block).await?;
        count += block.iter().filter(|b| **b == b'\n').count() as i64;
        right = left;
    }
    // Drop newlines from the front of the last block read until `n` remain.
    let mut pos = 0usize;
    while count > n {
        match block[pos..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                pos += i + 1;
                count -= 1;
            }
            None => break,
        }
    }
    Ok((left + pos as u64, size))
}

/// How a log follow learns that the container stopped.
#[async_trait::async_trait]
pub trait ContainerRunning: Send + Sync {
    async fn running(&self, container_id: &str) -> bool;
}

/// How often a follow checks the file for growth and the runtime for the
/// container's state.
const POLL: Duration = Duration::from_millis(100);
const STATE_CHECK: Duration = Duration::from_secs(1);

/// Reads the log at `path` with `opts`, sending output chunks to `out`
/// until done (or the receiver is gone). With `follow`, keeps reading while
/// the container runs and moves to a new file when the runtime rotates it.
pub async fn read_logs(
    path: &Path,
    container_id: &str,
    opts: &LogOptions,
    state: &dyn ContainerRunning,
    out: mpsc::Sender<Bytes>,
) -> Result<(), LogError> {
    let path = tokio::fs::canonicalize(path)
        .await
        .unwrap_or_else(|_| path.to_path_buf());
    let open = |p: PathBuf| async move {
        tokio::fs::File::open(&p)
            .await
            .map_err(|source| LogError::Open { path: p, source })
    };
    let mut file = open(path.clone()).await?;
    let tail = opts.tail_lines;
    let (start, size_at_open) =
        tail_start(&mut file, tail)
            .await
            .map_err(|source| LogError::Tail {
                tail: tail.unwrap_or(-1),
                path: path.clone(),
                source,
            })?;
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|source| LogError::Read {
            path: path.clone(),
            source,
        })?;
    let mut inode = inode_of_file(&file).await;
    let mut reader = BufReader::new(file);
    let mut filter = LogFilter::new(opts, Timestamp::now());
    let mut line = Vec::new();
    let mut last_check = Instant::now() - STATE_CHECK;
    let mut running = true;
    let mut offset = start;
    loop {
        let line_start = offset;
        let n = reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| LogError::Read {
                path: path.clone(),
                source,
            })?;
        offset += n as u64;
        // Without follow, the file is read as it was when opened: lines
        // written since are not part of the answer (so --tail=N gives N).
        if !opts.follow && n > 0 && line_start >= size_at_open {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if n == 0 || !complete {
            if !opts.follow {
                // The rest of the file, an unterminated last line included.
                if !line.is_empty() {
                    emit(&line, &mut filter, &out).await;
                }
                return Ok(());
            }
            // Following: an incomplete line waits for the rest of it.
            if !running {
                return Ok(());
            }
            if last_check.elapsed() >= STATE_CHECK {
                last_check = Instant::now();
                running = state.running(container_id).await;
                if !running {
                    // One more pass to the end of the file, then stop.
                    continue;
                }
            }
            if out.is_closed() {
                return Ok(());
            }
            // Rotation: a new file at the path and the old one read out.
            if n == 0 && line.is_empty() {
                let current = inode_of_path(&path).await;
                if current.is_some() && current != inode {
                    if let Ok(f) = tokio::fs::File::open(&path).await {
                        inode = inode_of_file(&f).await;
                        reader = BufReader::new(f);
                        continue;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        let more = emit(&line, &mut filter, &out).await;
        line.clear();
        if !more {
            return Ok(());
        }
    }
}

/// Writes one line's output; false when output must stop (limit reached or
/// client gone).
async fn emit(line: &[u8], filter: &mut LogFilter, out: &mpsc::Sender<Bytes>) -> bool {
    let rec = match parse_cri_line(line) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "skipping unparsable log line");
            return true;
        }
    };
    let mut buf = Vec::new();
    let more = filter.write(&rec, &mut buf);
    if !buf.is_empty() && out.send(Bytes::from(buf)).await.is_err() {
        return false;
    }
    more
}

async fn inode_of_file(f: &tokio::fs::File) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    f.metadata().await.ok().map(|m| m.ino())
}

async fn inode_of_path(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    tokio::fs::metadata(p).await.ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn parses_cri_lines_as_upstream() {
        let r = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout F log content 1\n").unwrap();
        assert_eq!(r.stream, LogStream::Stdout);
        assert_eq!(r.log, b"log content 1\n");
        assert_eq!(
            r.timestamp,
            "2016-10-06T00:17:09.669794202Z"
                .parse::<Timestamp>()
                .unwrap()
        );
        // A partial record loses its newline so pieces join.
        let r = parse_cri_line(b"2016-10-06T00:17:09.669794203Z stderr P part\n").unwrap();
        assert_eq!(r.stream, LogStream::Stderr);
        assert_eq!(r.log, b"part");
        // Extra tags after ':' are tolerated.
        let r = parse_cri_line(b"2016-10-06T00:17:09Z stdout P:x y\n").unwrap();
        assert_eq!(r.log, b"y");
        assert!(parse_cri_line(b"garbage\n").is_err());
        assert!(parse_cri_line(b"2016-10-06T00:17:09Z stdin F x\n").is_err());
        assert!(parse_cri_line(b"2016-10-06T00:17:09Z stdout\n").is_err());
    }

    #[test]
    fn timestamps_print_fixed_nanos_in_the_writers_offset() {
        let r = parse_cri_line(b"2024-05-01T10:00:00.5+02:00 stdout F x\n").unwrap();
        assert_eq!(
            format_time(r.timestamp, r.offset),
            "2024-05-01T10:00:00.500000000+02:00"
        );
        let r = parse_cri_line(b"2024-05-01T10:00:00Z stdout F x\n").unwrap();
        assert_eq!(
            format_time(r.timestamp, r.offset),
            "2024-05-01T10:00:00.000000000Z"
        );
    }

    #[test]
    fn options_decode_and_validate_as_the_kubelet() {
        let o = LogOptions::from_query(&params(
            "follow=true&tailLines=3&timestamps=1&limitBytes=10&sinceSeconds=5",
        ))
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(10));
        // The legacy tail parameter wins; "all" means everything.
        let o = LogOptions::from_query(&params("tail=2&tailLines=9")).unwrap();
        assert_eq!(o.tail_lines, Some(2));
        assert_eq!(
            LogOptions::from_query(&params("tail=all&tailLines=9"))
                .unwrap()
                .tail_lines,
            None
        );
        assert_eq!(
            LogOptions::from_query(&params("tailLines=x")),
            Err(OptionsError::Decode)
        );
        assert_eq!(
            LogOptions::from_query(&params("follow=yes")),
            Err(OptionsError::Decode)
        );
        for bad in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z",
        ] {
            assert_eq!(
                LogOptions::from_query(&params(bad)),
                Err(OptionsError::Invalid),
                "{bad}"
            );
        }
    }

    fn render(lines: &[&str], opts: &LogOptions, now: Timestamp) -> String {
        let mut f = LogFilter::new(opts, now);
        let mut out = Vec::new();
        for l in lines {
            let r = parse_cri_line(l.as_bytes()).unwrap();
            if !f.write(&r, &mut out) {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    const LINES: &[&str] = &[
        "2024-01-01T00:00:01Z stdout F one\n",
        "2024-01-01T00:00:02Z stderr P tw\n",
        "2024-01-01T00:00:03Z stderr F o\n",
        "2024-01-01T00:00:04Z stdout F three\n",
    ];

    #[test]
    fn filter_joins_partials_and_applies_since_limit_and_timestamps() {
        let now: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(
            render(LINES, &LogOptions::default(), now),
            "one\ntwo\nthree\n"
        );
        let since = LogOptions {
            since_time: Some("2024-01-01T00:00:03Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(render(LINES, &since, now), "o\nthree\n");
        // sinceSeconds counts back from now.
        let secs = LogOptions {
            since_seconds: Some(6),
            ..Default::default()
        };
        assert_eq!(render(LINES, &secs, now), "three\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(LINES, &limit, now), "one\ntw");
        let ts = LogOptions {
            timestamps: true,
            limit_bytes: Some(56),
            ..Default::default()
        };
        assert_eq!(
            render(LINES, &ts, now),
            "2024-01-01T00:00:01.000000000Z one\n2024-01-01T00:00:02.0"
        );
    }

    struct Never;
    #[async_trait::async_trait]
    impl ContainerRunning for Never {
        async fn running(&self, _: &str) -> bool {
            false
        }
    }

    async fn read(path: &Path, opts: LogOptions) -> String {
        let (tx, mut rx) = mpsc::channel(16);
        let opts2 = opts.clone();
        let p = path.to_path_buf();
        let task = tokio::spawn(async move { read_logs(&p, "c", &opts2, &Never, tx).await });
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        task.await.unwrap().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn tail_counts_file_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, LINES.concat()).unwrap();
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(read(&p, tail(1)).await, "three\n");
        // File lines, not joined records: the partial counts as one.
        assert_eq!(read(&p, tail(2)).await, "o\nthree\n");
        assert_eq!(read(&p, tail(3)).await, "two\nthree\n");
        assert_eq!(read(&p, tail(100)).await, "one\ntwo\nthree\n");
        assert_eq!(read(&p, tail(0)).await, "");
        // A big file: the tail crosses read blocks.
        let many: String = (0..2000)
            .map(|i| format!("2024-01-01T00:00:01Z stdout F line {i}\n"))
            .collect();
        std::fs::write(&p, many).unwrap();
        assert_eq!(read(&p, tail(2)).await, "line 1998\nline 1999\n");
        assert_eq!(read(&p, tail(2000)).await.lines().count(), 2000);
    }

    #[tokio::test]
    async fn follow_ends_when_the_container_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, LINES.concat()).unwrap();
        let o = LogOptions {
            follow: true,
            ..Default::default()
        };
        assert_eq!(read(&p, o).await, "one\ntwo\nthree\n");
        let missing = read_logs(
            &dir.path().join("none.log"),
            "c",
            &LogOptions::default(),
            &Never,
            mpsc::channel(1).0,
        )
        .await;
        assert!(matches!(missing, Err(LogError::Open { .. })));
    }
}
