//! Crash safety: a child process writes continuously and reports every
//! acknowledged write; it is killed with SIGKILL at random moments, 20 times.
//! After each kill, every acknowledged write must be present and readable at
//! its revision, and the revision must be at least the last acknowledged one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kelson_store::{EmbeddedStore, Options, Store};
use rand::Rng;

struct Ack {
    revision: u64,
    key: String,
    tag: String,
}

/// Kills the child if the test fails half-way.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut rng = rand::rng();
    let mut acks: Vec<Ack> = Vec::new();
    let mut last_revision = 0;

    for run in 0..20 {
        let mut child = Child(
            Command::new(env!("CARGO_BIN_EXE_kelson-store-crash-writer"))
                .arg(&path)
                .arg(run.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        // Read acks on a thread; the kill happens independently of reading.
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        // Let it get going (it opens the store, then writes), then kill it at
        // a random moment.
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(rng.random_range(150..700)));
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert!(
            !status.success(),
            "the writer must have been killed, not exited"
        );
        let lines = reader.join().unwrap();
        let before = acks.len();
        for line in &lines {
            // A line cut short by the kill carries no acknowledgement.
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 4 && parts[0] == "ack" {
                if let Ok(revision) = parts[1].parse() {
                    acks.push(Ack {
                        revision,
                        key: parts[2].to_string(),
                        tag: parts[3].to_string(),
                    });
                }
            }
        }
        let new_acks = acks.len() - before;
        eprintln!(
            "run {run}: killed after {:?}, {new_acks} new acknowledged writes",
            started.elapsed()
        );

        let store = EmbeddedStore::open(
            &path,
            Options {
                compaction: None,
                ..Options::default()
            },
        )
        .await
        .unwrap();
        let status = store.status().await.unwrap();
        for ack in &acks {
            let kv = store
                .get(ack.key.as_bytes(), Some(ack.revision))
                .await
                .unwrap()
                .kv
                .unwrap_or_else(|| {
                    panic!(
                        "acknowledged write {} at {} is missing",
                        ack.key, ack.revision
                    )
                });
            assert_eq!(kv.mod_revision, ack.revision);
            assert!(
                kv.value.starts_with(ack.tag.as_bytes()),
                "wrong value for {}",
                ack.key
            );
            last_revision = last_revision.max(ack.revision);
        }
        assert!(
            status.revision >= last_revision,
            "revision went backwards: {} < {last_revision}",
            status.revision
        );
        last_revision = status.revision;
        store.close().await;
    }
    assert!(
        acks.len() > 100,
        "the writer acknowledged too little to prove anything: {}",
        acks.len()
    );
}
