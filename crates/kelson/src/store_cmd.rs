//! `kelson store`: snapshots and status of the cluster store.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use kelson_store::snapshot;
use tokio::io::AsyncReadExt;

use crate::{admin, admin_socket_path, store_path, DEFAULT_DATA_DIR};

#[derive(clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand)]
enum StoreCommand {
    /// Save or restore a snapshot of the whole store
    Snapshot(SnapshotArgs),
    /// Print the store's revision, compacted revision and size
    Status {
        /// Data directory of the server
        #[arg(long, default_value = DEFAULT_DATA_DIR, env = "KELSON_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(clap::Subcommand)]
enum SnapshotCommand {
    /// Save a consistent snapshot to FILE (through the running server, or
    /// directly from the data directory when no server runs)
    Save {
        file: PathBuf,
        /// Data directory of the server
        #[arg(long, default_value = DEFAULT_DATA_DIR, env = "KELSON_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Build a data directory's store from a snapshot (the server must be
    /// stopped and the directory must hold no store yet)
    Restore {
        file: PathBuf,
        /// Data directory to restore into
        #[arg(long, default_value = DEFAULT_DATA_DIR, env = "KELSON_DATA_DIR")]
        data_dir: PathBuf,
    },
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Status { data_dir } => status(&data_dir).await,
        StoreCommand::Snapshot(s) => match s.command {
            SnapshotCommand::Save { file, data_dir } => save(&file, &data_dir).await,
            SnapshotCommand::Restore { file, data_dir } => restore(&file, &data_dir),
        },
    }
}

async fn status(data_dir: &Path) -> anyhow::Result<()> {
    if let Some(mut conn) = admin::request(&admin_socket_path(data_dir), "status").await? {
        let mut body = String::new();
        conn.read_to_string(&mut body).await?;
        print!("{body}");
        return Ok(());
    }
    let path = existing_store(data_dir)?;
    let (revision, compacted, _) =
        snapshot::inspect(&path).with_context(|| format!("reading {}", path.display()))?;
    println!("revision {revision}");
    println!("compacted {compacted}");
    println!("db-bytes {}", std::fs::metadata(&path)?.len());
    Ok(())
}

fn existing_store(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = store_path(data_dir);
    if !path.exists() {
        bail!(
            "no store in data dir {} (expected {})",
            data_dir.display(),
            path.display()
        );
    }
    Ok(path)
}

async fn save(file: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let partial = partial_path(file);
    let result = async {
        if let Some(mut conn) = admin::request(&admin_socket_path(data_dir), "snapshot").await? {
            let mut out = tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("creating {}", partial.display()))?;
            tokio::io::copy(&mut conn, &mut out).await?;
            out.sync_all().await?;
        } else {
            let path = existing_store(data_dir)?;
            let out = std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            snapshot::save_offline(&path, &out)
                .with_context(|| format!("reading {}", path.display()))?;
            out.sync_all()?;
        }
        // Only a snapshot that checks out end to end takes the final name.
        let info =
            snapshot::verify(&partial).context("the snapshot received is incomplete or damaged")?;
        std::fs::rename(&partial, file)?;
        anyhow::Ok(info)
    }
    .await;
    match result {
        Ok(info) => {
            println!(
                "Snapshot saved to {}: revision {}, compacted revision {}, {} records, {} bytes",
                file.display(),
                info.revision,
                info.compacted,
                info.records,
                info.bytes
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    file.with_file_name(name)
}

fn restore(file: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let dest = store_path(data_dir);
    if dest.exists() {
        bail!(
            "data dir {} already holds a store ({}); stop the server and move it away first",
            data_dir.display(),
            dest.display()
        );
    }
    let info = snapshot::restore(file, &dest)
        .with_context(|| format!("restoring {} into {}", file.display(), dest.display()))?;
    println!(
        "Restored {} into {}: revision {}, compacted revision {}, {} records",
        file.display(),
        data_dir.display(),
        info.revision,
        info.compacted,
        info.records
    );
    Ok(())
}
