//! `kelson server`: runs the control plane on this machine. So far that is
//! the embedded store and the local admin socket; the API server, scheduler
//! and controllers join it here.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use kelson_store::{EmbeddedStore, Options, Store};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::{admin, admin_socket_path, store_path, DEFAULT_DATA_DIR, VERSION};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Folder holding all of the server's state
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "KELSON_DATA_DIR")]
    pub data_dir: PathBuf,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing::info!(version = VERSION, data_dir = %args.data_dir.display(), "starting kelson server");
    let server_dir = args.data_dir.join("server");
    std::fs::create_dir_all(&server_dir)
        .with_context(|| format!("creating {}", server_dir.display()))?;
    // Cluster state and credentials live here: root only.
    std::fs::set_permissions(&server_dir, std::fs::Permissions::from_mode(0o700))?;

    let socket = admin_socket_path(&args.data_dir);
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        bail!(
            "another kelson server is already running with data dir {}",
            args.data_dir.display()
        );
    }
    let path = store_path(&args.data_dir);
    let store = EmbeddedStore::open(&path, Options::default())
        .await
        .with_context(|| format!("opening the store at {}", path.display()))?;
    let status = store.status().await?;
    tracing::info!(
        path = %path.display(),
        revision = status.revision,
        compacted = status.compacted,
        "store ready"
    );
    let store = Arc::new(store);

    // A socket file left by a server that was killed is stale: nothing
    // answered on it above.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let admin_task = tokio::spawn(admin::serve(listener, store.clone()));
    tracing::info!(socket = %socket.display(), "admin socket listening");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
        _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
    }
    admin_task.abort();
    let _ = admin_task.await;
    let _ = std::fs::remove_file(&socket);
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().await,
        Err(_) => tracing::warn!("store still in use at shutdown; closing without waiting"),
    }
    tracing::info!("kelson server stopped");
    Ok(())
}
