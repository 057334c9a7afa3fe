//! # kelson-control-plane-bench
//!
//! Measures Kelson's whole control plane — a real `kelson server` with its
//! scheduler and controller manager — against simulated nodes run in this
//! process, with workloads shaped after upstream's scheduler_perf. See
//! `kelson_apiserver_bench::control_plane` for the scenarios and what each
//! figure means. It prints figures and asserts nothing.
//!
//! ```text
//! cargo build --release -p kelson -p kelson-apiserver-bench
//! target/release/kelson-control-plane-bench [--scenario NAME]... \
//!     [--nodes N] [--pods N] [--init-pods N] [--kelson PATH]
//! ```
//!
//! Progress goes to stderr; a table per scenario, then one JSON line with
//! every figure, to stdout. Each scenario's server is stopped by PID and its
//! data dir removed, including on ctrl-c.

use std::process::ExitCode;

use clap::Parser;
use kelson_apiserver_bench::control_plane::{run, Args};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Dropping `run` on ctrl-c drops the cluster, whose server guard stops
    // the server and whose temporary dir goes with it.
    tokio::select! {
        r = run(args) => match r {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the server");
            ExitCode::FAILURE
        }
    }
}
