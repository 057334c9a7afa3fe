//! The `kelson` binary: every component of a Kelson cluster behind one
//! command, as k3s does.

mod admin;
mod agent_cmd;
mod components;
mod images_cmd;
mod node_args;
mod server;
mod store_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// The API server allocates and frees many small JSON values per request;
// mimalloc does that with far less CPU than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("KELSON_GIT_COMMIT");

/// Default data directory, as `/var/lib/rancher/k3s` is for k3s.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kelson";

#[derive(Parser)]
#[command(name = "kelson", version = VERSION, about = "Kelson: a Kubernetes-compatible cluster in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane of a cluster on this machine
    Server(server::ServerArgs),
    /// Join this machine to a cluster as a node and run its pods
    Agent(agent_cmd::AgentArgs),
    /// Manage the images of this machine's node (import tarballs)
    Images(images_cmd::ImagesArgs),
    /// Run the controller manager as its own process
    ControllerManager(components::ControllerManagerArgs),
    /// Run the scheduler as its own process
    Scheduler(components::SchedulerArgs),
    /// Run simulated nodes (kubelets without containers) against a cluster
    Sim(kelson_sim::SimArgs),
    /// Manage the cluster's store (snapshots, status)
    Store(store_cmd::StoreArgs),
    /// Print the version of this binary
    Version,
}

/// Location of the store file inside a data directory.
pub fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("server").join("db").join("state.redb")
}

/// Location of the server's local admin socket inside a data directory.
pub fn admin_socket_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("server").join("kelson.sock")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Version => {
            println!("kelson version v{VERSION} ({COMMIT})");
            Ok(())
        }
        Command::Server(args) => runtime()?.block_on(server::run(args)),
        Command::Agent(args) => runtime()?.block_on(agent_cmd::run(args)),
        Command::Images(args) => runtime()?.block_on(images_cmd::run(args)),
        Command::Store(args) => runtime()?.block_on(store_cmd::run(args)),
        Command::ControllerManager(args) => {
            runtime()?.block_on(components::controller_manager(args))
        }
        Command::Scheduler(args) => runtime()?.block_on(components::scheduler(args)),
        Command::Sim(args) => runtime()?.block_on(components::sim(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
