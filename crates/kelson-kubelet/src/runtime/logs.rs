//! Termination messages: the file behind terminationMessagePath, or the
//! tail of the container log for FallbackToLogsOnError (upstream
//! `getTerminationMessage` / `readLastStringFromContainerLogs`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use kelson_cri::api::Mount;

/// Upstream `MaxContainerTerminationMessageLength`.
const MAX_MESSAGE: u64 = 4096;
/// Upstream `MaxContainerTerminationMessageLogLines` / `...LogLength`.
const MAX_LOG_LINES: usize = 80;
const MAX_LOG_BYTES: usize = 2048;

/// The last `max` bytes of a file.
fn read_at_most(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The termination message and whether the logs should be read instead.
pub fn termination_message(mounts: &[Mount], path: &str, fallback: bool) -> (String, bool) {
    if path.is_empty() {
        return (String::new(), fallback);
    }
    let Some(m) = mounts.iter().find(|m| m.container_path == path) else {
        return (String::new(), fallback);
    };
    match read_at_most(Path::new(&m.host_path), MAX_MESSAGE) {
        Ok(data) => {
            let empty = data.is_empty();
            (
                String::from_utf8_lossy(&data).into_owned(),
                fallback && empty,
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), fallback),
        Err(e) => (
            format!("Error on reading termination log {}: {e}", m.host_path),
            false,
        ),
    }
}

/// The content of one CRI log line (`<time> <stream> <P|F> <content>`),
/// with a newline unless it is a partial line.
fn log_content(line: &str) -> Option<String> {
    let mut parts = line.splitn(4, ' ');
    let _time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("");
    if tag.starts_with('P') {
        Some(content.to_string())
    } else {
        Some(format!("{content}\n"))
    }
}

/// The last 80 lines of a CRI log, cut to their first 2048 bytes.
pub fn last_log_lines(path: &Path) -> String {
    // 80 lines rarely need more than this; older lines are dropped anyway.
    let Ok(data) = read_at_most(path, 1 << 20) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&data);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(MAX_LOG_LINES);
    let mut out = String::new();
    for l in &lines[start..] {
        if let Some(c) = log_content(l) {
            out.push_str(&c);
        }
    }
    if out.len() > MAX_LOG_BYTES {
        let mut cut = MAX_LOG_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_is_80_lines_and_2048_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("0.log");
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!(
                "2024-01-01T00:00:00.000000000Z stderr F line {i}\n"
            ));
        }
        std::fs::write(&p, &text).unwrap();
        let out = last_log_lines(&p);
        assert!(out.starts_with("line 20\n"), "{out}");
        assert!(out.ends_with("line 99\n"));
        let big = format!("2024-01-01T00:00:00Z stdout F {}\n", "x".repeat(5000));
        std::fs::write(&p, big).unwrap();
        assert_eq!(last_log_lines(&p).len(), 2048);
    }

    #[test]
    fn termination_file_wins_over_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("msg");
        std::fs::write(&f, "bye").unwrap();
        let mounts = vec![Mount {
            container_path: "/dev/termination-log".into(),
            host_path: f.to_string_lossy().into_owned(),
            ..Default::default()
        }];
        assert_eq!(
            termination_message(&mounts, "/dev/termination-log", true),
            ("bye".to_string(), false)
        );
        std::fs::write(&f, "").unwrap();
        assert_eq!(
            termination_message(&mounts, "/dev/termination-log", true),
            (String::new(), true)
        );
    }
}
