//! Test helper for `tests/store/crash.rs`: writes to a store as fast as it can and
//! prints one line per acknowledged write, so that the test can kill it at any
//! moment and then check that everything acknowledged survived.
//!
//! Usage: kelson-store-crash-writer STORE_FILE RUN_ID
//! Output lines: `ack REVISION KEY VALUE_TAG`.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use kelson_store::{EmbeddedStore, Options, Store};

const TASKS: usize = 8;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(run)) = (args.next(), args.next()) else {
        eprintln!("usage: kelson-store-crash-writer STORE_FILE RUN_ID");
        std::process::exit(2);
    };
    let options = Options {
        compaction: None,
        ..Options::default()
    };
    let store = Arc::new(
        EmbeddedStore::open(&path, options)
            .await
            .expect("open store"),
    );
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let out = out.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let counter = Bytes::from(format!("/crash/counter/{t}"));
            for i in 0u64.. {
                // A fresh key per write, with a value big enough to span pages.
                let key = Bytes::from(format!("/crash/run-{run}/{t}/{i}"));
                let tag = format!("{run}-{t}-{i}");
                let value = Bytes::from(format!("{tag}:{}", "x".repeat(1000)));
                let kv = store.create(key.clone(), value).await.expect("create");
                ack(&out, kv.mod_revision, &key, &tag);
                // And a read-modify-write of a long-lived key.
                loop {
                    let cur = store.get(&counter, None).await.expect("get").kv;
                    let res = match cur {
                        None => {
                            store
                                .create(counter.clone(), Bytes::from(tag.clone()))
                                .await
                        }
                        Some(kv) => {
                            store
                                .update(counter.clone(), Bytes::from(tag.clone()), kv.mod_revision)
                                .await
                        }
                    };
                    match res {
                        Ok(kv) => {
                            ack(&out, kv.mod_revision, &counter, &tag);
                            break;
                        }
                        Err(e)
                            if e.is_conflict()
                                || matches!(e, kelson_store::Error::AlreadyExists { .. }) => {}
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
}

fn ack(out: &std::sync::Mutex<std::io::Stdout>, rev: u64, key: &[u8], tag: &str) {
    let mut out = out.lock().expect("stdout lock");
    writeln!(out, "ack {rev} {} {tag}", String::from_utf8_lossy(key)).expect("write ack");
    out.flush().expect("flush ack");
}
