//! The server's local admin socket: a Unix socket in the data directory,
//! reachable only by root, for operations on the store that must go through
//! the running server (a consistent snapshot while it serves).
//!
//! Protocol: the client sends one line (`snapshot` or `status`); the server
//! answers `OK` and the payload, or `ERR message`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use kelson_store::{EmbeddedStore, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Serves admin requests until the task is dropped.
pub async fn serve(listener: UnixListener, store: Arc<EmbeddedStore>) {
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                continue;
            }
        };
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(conn, store).await {
                tracing::warn!(error = %format!("{e:#}"), "admin request failed");
            }
        });
    }
}

async fn handle(conn: UnixStream, store: Arc<EmbeddedStore>) -> anyhow::Result<()> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    // Requests are one short word; cap the read so a stray client cannot
    // make the server buffer without bound.
    (&mut reader).take(256).read_line(&mut line).await?;
    let mut conn = reader.into_inner();
    match line.trim() {
        "status" => {
            let status = store.status().await?;
            let body = format!(
                "OK\nrevision {}\ncompacted {}\ndb-bytes {}\n",
                status.revision,
                status.compacted,
                store.disk_bytes()?
            );
            conn.write_all(body.as_bytes()).await?;
        }
        "snapshot" => {
            conn.write_all(b"OK\n").await?;
            // The snapshot is produced by blocking code; hand it a blocking
            // socket of its own.
            let std_conn = conn.into_std()?;
            std_conn.set_nonblocking(false)?;
            let info = store.snapshot(std_conn).await?;
            tracing::info!(
                revision = info.revision,
                records = info.records,
                bytes = info.bytes,
                "snapshot sent"
            );
        }
        other => {
            conn.write_all(format!("ERR unknown request {other:?}\n").as_bytes())
                .await?;
        }
    }
    Ok(())
}

/// Sends a request; returns the connected stream positioned after `OK`, or
/// `None` if no server is listening.
pub async fn request(socket: &Path, what: &str) -> anyhow::Result<Option<BufReader<UnixStream>>> {
    let conn = match UnixStream::connect(socket).await {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
    };
    let mut conn = BufReader::new(conn);
    conn.get_mut()
        .write_all(format!("{what}\n").as_bytes())
        .await?;
    let mut status = String::new();
    conn.read_line(&mut status).await?;
    match status.trim_end() {
        "OK" => Ok(Some(conn)),
        s if s.starts_with("ERR ") => bail!("server refused: {}", &s[4..]),
        "" => bail!("server closed the admin connection"),
        s => bail!("unexpected admin reply {s:?}"),
    }
}
