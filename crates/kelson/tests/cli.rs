//! The `kelson` binary's contract commands, driven as a user would.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kelson_store::{EmbeddedStore, Options, RangeRequest, Store};

const KELSON: &str = env!("CARGO_BIN_EXE_kelson");

fn kelson(args: &[&str]) -> Output {
    Command::new(KELSON).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `kelson store snapshot VERB FILE --data-dir DIR`.
fn snapshot(verb: &str, file: &str, data_dir: &str) -> Output {
    kelson(&["store", "snapshot", verb, file, "--data-dir", data_dir])
}

/// Output of `kelson store status --data-dir DIR`.
fn store_status(data_dir: &str) -> String {
    stdout(&kelson(&["store", "status", "--data-dir", data_dir]))
}

async fn all_keys(store: &EmbeddedStore) -> Vec<kelson_store::KeyValue> {
    let all = RangeRequest::prefix(Bytes::from_static(b"/"));
    store.range(all).await.unwrap().kvs
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nobody listens on right now (the kernel picks it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kelson server`, stopped with SIGTERM (SIGKILL as a last
/// resort) when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let port = free_port().to_string();
        let child = Command::new(KELSON)
            .args([
                "server",
                // These tests compare store contents byte for byte: no
                // component may write (its Lease, for one) behind their back.
                "--disable-controller-manager",
                "--disable-scheduler",
                // No node either: it would write too, and run containers.
                "--disable-agent",
                "--bind-address",
                "127.0.0.1",
                "--https-port",
                &port,
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("https://127.0.0.1:{port}/readyz");
        loop {
            let ready = Command::new("curl")
                .args(["-sk", &url])
                .output()
                .expect("curl is installed by scripts/deps.sh");
            if data_dir.join("server/kelson.sock").exists() && ready.stdout == b"ok" {
                break;
            }
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {status:?}"))
}

#[test]
fn version_prints_the_version() {
    let out = kelson(&["version"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with(&format!("kelson version v{}", env!("CARGO_PKG_VERSION"))),
        "{}",
        stdout(&out)
    );
}

#[test]
fn snapshot_save_through_the_server_and_restore_keeps_the_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Put some state in the store the server will serve.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store_file = data.join("server/db/state.redb");
    let (written, _) = rt.block_on(async {
        let store = EmbeddedStore::open(&store_file, Options::default())
            .await
            .unwrap();
        for i in 0..100 {
            let kv = store
                .create(
                    Bytes::from(format!("/registry/configmaps/default/cm-{i}")),
                    Bytes::from(format!("v{i}")),
                )
                .await
                .unwrap();
            if i % 10 == 0 {
                store
                    .update(kv.key, Bytes::from_static(b"changed"), kv.mod_revision)
                    .await
                    .unwrap();
            }
        }
        let kvs = all_keys(&store).await;
        let revision = store.status().await.unwrap().revision;
        store.close().await;
        (revision, kvs)
    });

    let server = Server::start(&data);
    // The server adds its bootstrap objects (namespaces, the kubernetes
    // Service) on first start; the snapshot holds those too.
    let status = store_status(data.to_str().unwrap());
    let revision = field(&status, "revision");
    assert!(revision > written);

    let snap = tmp.path().join("backup.snap");
    let out = snapshot("save", snap.to_str().unwrap(), data.to_str().unwrap());
    assert_ok(&out);
    assert!(
        stdout(&out).contains(&format!("revision {revision}")),
        "{}",
        stdout(&out)
    );

    // A running server's data dir cannot be restored over.
    let out = snapshot("restore", snap.to_str().unwrap(), data.to_str().unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a store"));
    server.stop();
    assert!(
        !data.join("server/kelson.sock").exists(),
        "socket left behind"
    );

    let kvs = rt.block_on(async {
        let store = EmbeddedStore::open(&store_file, Options::default())
            .await
            .unwrap();
        let kvs = all_keys(&store).await;
        store.close().await;
        kvs
    });
    assert!(kvs.len() > 100);

    let restored = tmp.path().join("restored");
    let out = snapshot(
        "restore",
        snap.to_str().unwrap(),
        restored.to_str().unwrap(),
    );
    assert_ok(&out);

    // Offline status reads the restored file; then a server serves it.
    let status = store_status(restored.to_str().unwrap());
    assert_eq!(field(&status, "revision"), revision);
    let server = Server::start(&restored);
    let status = store_status(restored.to_str().unwrap());
    assert_eq!(field(&status, "revision"), revision);
    server.stop();
    let got = rt.block_on(async {
        let store = EmbeddedStore::open(restored.join("server/db/state.redb"), Options::default())
            .await
            .unwrap();
        let kvs = all_keys(&store).await;
        store.close().await;
        kvs
    });
    assert_eq!(got, kvs);
}

#[test]
fn snapshot_save_without_a_server_reads_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = snapshot("save", "x.snap", data.to_str().unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store in data dir"));

    let server = Server::start(&data);
    server.stop();
    let snap = tmp.path().join("offline.snap");
    let out = snapshot("save", snap.to_str().unwrap(), data.to_str().unwrap());
    assert_ok(&out);
    assert!(stdout(&out).contains("revision 0"), "{}", stdout(&out));
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let out = kelson(&["server", "--data-dir", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    server.stop();
}
