//! End to end on real nodes: `kelson server` with its agent (containerd,
//! runc, the CNI plugins), a second `kelson agent`, and the real kubectl.
//!
//! Everything runs inside network namespaces made by the tests (see
//! `node_support`): nothing routes out. Tests skip themselves (with a line
//! on stderr) when not root or when containerd, runc, the CNI plugins,
//! kubectl or busybox are missing. They run one at a time.

mod node_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use node_support::{
    condition, container_status, epoch_seconds, phase, pod_obj, sh_container, skip, Background,
    NodeEnv, BUSYBOX,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------------
// Helpers shared by the checks

/// Waits until pod `name` satisfies `pred`; returns it.
fn wait_pod(
    env: &NodeEnv,
    name: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    env.wait(&format!("pod {name}: {what}"), limit, || {
        match env.pod(name) {
            Some(p) if pred(&p) => Ok(p),
            Some(p) => Err(p["status"].to_string()),
            None => Err("not found".into()),
        }
    })
}

/// Waits until every container of pod `name` runs (phase Running).
fn wait_running(env: &NodeEnv, name: &str) -> Value {
    wait_pod(env, name, "Running", Duration::from_secs(60), |p| {
        phase(p) == "Running"
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["state"]["running"].is_object()))
    })
}

fn wait_phase(env: &NodeEnv, name: &str, want: &str) -> Value {
    wait_pod(env, name, want, Duration::from_secs(60), |p| {
        phase(p) == want
    })
}

/// (reason, message) of the Events about object `name`.
fn events(env: &NodeEnv, name: &str) -> Vec<(String, String)> {
    let sel = format!("involvedObject.name={name}");
    env.get_json(&["events", "--field-selector", &sel])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Waits for an Event about `name` with `reason` whose message contains
/// `needle`.
fn wait_event(env: &NodeEnv, name: &str, reason: &str, needle: &str) {
    env.wait(
        &format!("a {reason} event on {name} mentioning {needle:?}"),
        Duration::from_secs(30),
        || {
            let evs = events(env, name);
            if evs.iter().any(|(r, m)| r == reason && m.contains(needle)) {
                Ok(())
            } else {
                Err(format!("{evs:?}"))
            }
        },
    )
}

fn logs(env: &NodeEnv, args: &[&str]) -> String {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    env.ok(&a)
}

/// Waits until `kubectl logs ARGS` contains `needle`; returns the logs.
fn wait_logs(env: &NodeEnv, args: &[&str], needle: &str) -> String {
    env.wait(
        &format!("logs {args:?} to contain {needle:?}"),
        Duration::from_secs(30),
        || {
            let mut a = vec!["logs"];
            a.extend_from_slice(args);
            let out = env.kubectl(&a);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && text.contains(needle) {
                Ok(text)
            } else {
                Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
            }
        },
    )
}

fn restart_count(pod: &Value, c: &str) -> i64 {
    container_status(pod, c)
        .and_then(|s| s["restartCount"].as_i64())
        .unwrap_or(-1)
}

/// A pod serving `<pod name>\n` with busybox httpd on port 8080.
fn httpd_container() -> Value {
    json!({
        "name": "web", "image": BUSYBOX,
        "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
        "ports": [{"containerPort": 8080}]
    })
}

fn dir_str(env: &NodeEnv, name: &str) -> String {
    env.dir.path().join(name).to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------
// The harness itself (needs no node: runs before the node pieces exist)

/// The server runs inside the test namespace: kubectl reaches it there,
/// the host cannot, the namespace has no default route, and everything is
/// gone after cleanup.
#[test]
fn harness_isolates_the_cluster_in_a_network_namespace_and_cleans_up() {
    if skip("harness", &["docker-registry"]) {
        return;
    }
    let (ns_name, server_ip, data_dir) = {
        let mut env = NodeEnv::start_control_plane_only();
        env.wait_api();
        let ns = env.ns().name.clone();
        assert_no_route_out(&env);
        // From the host the node IP is not our server (this machine may
        // have an egress proxy that answers anything, but not with our
        // /readyz).
        let from_host = std::process::Command::new("curl")
            .args(["-s", "-k", "--max-time", "2"])
            .arg(format!("https://{}:6443/readyz", env.server.ip))
            .output()
            .unwrap();
        assert_ne!(
            String::from_utf8_lossy(&from_host.stdout),
            "ok",
            "the API answered from the host netns"
        );
        assert_eq!(env.ok(&["get", "--raw", "/readyz"]), "ok");
        let reg = env.start_registry();
        let catalog = env.curl(&format!("http://{reg}/v2/_catalog")).unwrap();
        assert!(catalog.contains("repositories"), "{catalog}");
        (ns, env.server.ip.clone(), env.server.data_dir.clone())
    };
    // Dropped: the namespace and every process in it are gone.
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&ns_name),
        "netns {ns_name} left behind"
    );
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    let _ = server_ip;
}

/// `ip route` inside the namespace: no default route.
fn assert_no_route_out(env: &NodeEnv) {
    let out = env
        .ns()
        .cmd("ip")
        .args(["route", "show", "default"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the test namespace has a default route: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------
// Single node

#[test]
fn node_is_ready_within_10s_of_start() {
    if skip("node_is_ready_within_10s_of_start", &[]) {
        return;
    }
    // Alone, so other clusters starting do not slow this one down.
    let mut env = NodeEnv::start_alone();
    env.wait_api();
    assert_node_ready_within(&mut env, Duration::from_secs(10));
    assert_node_status_complete(&env);
}

/// Ready observed at most `limit` after the server was spawned.
fn assert_node_ready_within(env: &mut NodeEnv, limit: Duration) {
    let (name, took) = env.wait_node_ready(Duration::from_secs(60));
    assert!(
        took <= limit,
        "node {name} Ready {took:?} after the server started (limit {limit:?})\n{}",
        env.logs()
    );
}

/// Capacity, allocatable, addresses, nodeInfo, conditions and the Lease.
fn assert_node_status_complete(env: &NodeEnv) {
    let name = env.node1();
    let node = env.get_json(&["node", &name]).unwrap();
    for key in ["cpu", "memory", "ephemeral-storage", "pods"] {
        assert!(
            node["status"]["capacity"][key].is_string(),
            "capacity.{key}: {}",
            node["status"]
        );
        assert!(
            node["status"]["allocatable"][key].is_string(),
            "allocatable.{key}: {}",
            node["status"]
        );
    }
    let conds: BTreeSet<&str> = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(conds.contains(t), "condition {t} missing: {conds:?}");
    }
    let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap_or("");
    assert!(
        runtime.starts_with("containerd://"),
        "containerRuntimeVersion {runtime:?}"
    );
    assert!(
        node["spec"]["podCIDR"].is_string(),
        "no podCIDR: {}",
        node["spec"]
    );
    env.wait("the node Lease", Duration::from_secs(20), || {
        env.get_json(&["lease", "-n", "kube-node-lease", &name])
            .filter(|l| l["spec"]["renewTime"].is_string())
            .map(|_| ())
            .ok_or_else(|| "no lease".to_string())
    });
}

#[test]
fn kubectl_run_prints_to_kubectl_logs_with_its_flags() {
    if skip("kubectl_run_prints_to_kubectl_logs_with_its_flags", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    assert_kubectl_run_logs(&env);

    env.apply(&pod_obj(
        "logger",
        json!({}),
        json!({"containers": [
            sh_container("main", "i=1; while true; do echo line-$i; i=$((i+1)); sleep 0.3; done"),
            sh_container("side", "echo side-hello; exec sleep 3600"),
        ]}),
    ));
    wait_running(&env, "logger");
    wait_logs(&env, &["logger", "-c", "main"], "line-3");
    assert_logs_tail(&env);
    assert_logs_timestamps(&env);
    assert_logs_container_flag(&env);
    assert_logs_follow(&env);
    // --since with a window covering the whole run keeps the first line.
    assert!(logs(&env, &["logger", "-c", "main", "--since=1h"]).starts_with("line-1\n"));
}

/// `kubectl run` of busybox: its output in `kubectl logs`.
fn assert_kubectl_run_logs(env: &NodeEnv) {
    env.ok(&[
        "run",
        "hello",
        "--image",
        BUSYBOX,
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo hello from kelson; echo second line",
    ]);
    let pod = wait_phase(env, "hello", "Succeeded");
    let st = container_status(&pod, "hello").unwrap();
    assert_eq!(st["state"]["terminated"]["reason"], "Completed", "{st}");
    assert_eq!(st["state"]["terminated"]["exitCode"], 0, "{st}");
    assert_eq!(logs(env, &["hello"]), "hello from kelson\nsecond line\n");
}

fn assert_logs_tail(env: &NodeEnv) {
    let out = logs(env, &["logger", "-c", "main", "--tail=2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "--tail=2 gave {out:?}");
    assert!(lines.iter().all(|l| l.starts_with("line-")), "{out:?}");
    assert_ne!(lines[0], "line-1", "--tail=2 returned the start: {out:?}");
}

fn assert_logs_timestamps(env: &NodeEnv) {
    let out = logs(env, &["logger", "-c", "main", "--timestamps", "--tail=3"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(out.lines().count(), 3, "{out:?}");
    for line in out.lines() {
        let (ts, rest) = line.split_once(' ').unwrap_or(("", line));
        let secs = epoch_seconds(ts).unwrap_or_else(|| panic!("no RFC 3339 timestamp in {line:?}"));
        assert!((now - secs).abs() < 300, "timestamp {ts} far from now");
        assert!(ts.contains('.'), "upstream prints nanoseconds: {ts}");
        assert!(rest.starts_with("line-"), "{line:?}");
    }
}

fn assert_logs_container_flag(env: &NodeEnv) {
    assert_eq!(logs(env, &["logger", "-c", "side"]), "side-hello\n");
    let err = env.kubectl(&["logs", "logger", "-c", "nope"]);
    assert!(
        !err.status.success(),
        "logs of a container that does not exist succeeded"
    );
}

/// `-f` prints lines written after it started, and the old ones first.
fn assert_logs_follow(env: &NodeEnv) {
    let before = logs(env, &["logger", "-c", "main"]);
    let last: u64 = before
        .lines()
        .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
        .max()
        .unwrap();
    let follow = Background::start(env, &["logs", "-f", "logger", "-c", "main"]);
    let later = format!("line-{}\n", last + 5);
    let out = env.wait(
        "logs -f to stream new lines",
        Duration::from_secs(30),
        || {
            let o = follow.output();
            if o.contains(&later) {
                Ok(o)
            } else {
                Err(o)
            }
        },
    );
    assert!(out.starts_with("line-1\n"), "{out:?}");
}

#[test]
fn kubectl_exec_cp_and_port_forward_reach_a_pod() {
    if skip("kubectl_exec_cp_and_port_forward_reach_a_pod", &["python3"]) {
        return;
    }
    let env = NodeEnv::ready();
    env.apply(&pod_obj(
        "tools",
        json!({}),
        json!({"containers": [{
            "name": "main", "image": BUSYBOX,
            "command": ["sh", "-c", "mkdir -p /www && echo tools-page > /www/index.html && exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080}]
        }]}),
    ));
    wait_running(&env, "tools");
    assert_exec_plain(&env);
    assert_exec_tty(&env);
    assert_cp_both_ways(&env);
    assert_port_forward(&env);
}

/// Output, exit code and stdin of a plain `kubectl exec`.
fn assert_exec_plain(env: &NodeEnv) {
    let out = env.ok(&["exec", "tools", "--", "sh", "-c", "echo $((6*7)); hostname"]);
    assert_eq!(out, "42\ntools\n");
    let failed = env.kubectl(&["exec", "tools", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "exit code of the command: {failed:?}"
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("oops"));
    let piped = env.kubectl_stdin(&["exec", "-i", "tools", "--", "cat"], b"piped-input\n");
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "piped-input\n");
}

/// Drives a pty for `argv`: waits for `prompt`, types `input`, waits for
/// `expect`, types `exit`. Prints everything the pty showed.
const PTY_DRIVER: &str = r#"
import os, pty, select, sys, time
prompt, line, expect = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3].encode()
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execvp(sys.argv[4], sys.argv[4:])
buf = b""
def until(token, limit):
    global buf
    end = time.time() + limit
    while token not in buf:
        left = end - time.time()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return False
            if not data:
                return False
            buf += data
    return True
ok = until(prompt, 30)
if ok:
    os.write(fd, line + b"\n")
    ok = until(expect, 30)
os.write(fd, b"exit\n")
until(b"\x00never", 3)
try:
    os.kill(pid, 9)
except OSError:
    pass
sys.stdout.write(buf.decode("utf-8", "replace"))
sys.exit(0 if ok else 1)
"#;

/// `kubectl exec -it ... sh` through a pty: the prompt, the echo of what
/// was typed, the command's output and a tty inside.
fn assert_exec_tty(env: &NodeEnv) {
    // Not "pty.py": the script would shadow Python's pty module.
    let script = env.dir.path().join("drive_tty.py");
    std::fs::write(&script, PTY_DRIVER).unwrap();
    let kubeconfig = env.kubeconfig().to_string_lossy().into_owned();
    let cache = dir_str(env, "kube-cache");
    let netns = format!("--net={}", env.ns().path().display());
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["# ", "echo tty-$((6*7)); tty", "/dev/pts/"])
        .args(["nsenter", &netns, "--", node_support::KUBECTL])
        .args(["--kubeconfig", &kubeconfig, "--cache-dir", &cache])
        .args(["exec", "-it", "tools", "--", "sh"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exec -it session failed: {text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.logs()
    );
    assert!(
        text.contains("tty-42"),
        "the typed command did not run: {text:?}"
    );
    assert!(text.contains("/ # "), "no shell prompt: {text:?}");
    assert!(
        text.contains("echo tty-$((6*7)); tty"),
        "no echo of the typed line: {text:?}"
    );
    assert!(
        text.contains("/dev/pts/"),
        "no tty inside the container: {text:?}"
    );
}

fn assert_cp_both_ways(env: &NodeEnv) {
    let up = env.dir.path().join("upload.txt");
    std::fs::write(&up, "uploaded-content-123\n").unwrap();
    env.ok(&[
        "cp",
        &up.to_string_lossy(),
        "tools:/tmp/upload.txt",
        "-c",
        "main",
    ]);
    assert_eq!(
        env.ok(&["exec", "tools", "--", "cat", "/tmp/upload.txt"]),
        "uploaded-content-123\n"
    );

    env.ok(&[
        "exec",
        "tools",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/d && echo made-in-pod > /tmp/d/made.txt",
    ]);
    let down = env.dir.path().join("downloaded");
    env.ok(&["cp", "tools:/tmp/d", &down.to_string_lossy(), "-c", "main"]);
    assert_eq!(
        std::fs::read_to_string(down.join("made.txt")).unwrap(),
        "made-in-pod\n"
    );
}

fn assert_port_forward(env: &NodeEnv) {
    let pf = Background::start(env, &["port-forward", "pod/tools", "18080:8080"]);
    let body = env.wait("port-forward to answer", Duration::from_secs(30), || {
        env.curl("http://127.0.0.1:18080/")
            .map_err(|e| format!("{e}; kubectl said: {}", pf.output()))
    });
    assert_eq!(body, "tools-page\n");
    // A second connection over the same forward.
    assert_eq!(
        env.curl("http://127.0.0.1:18080/index.html").unwrap(),
        "tools-page\n"
    );
}

#[test]
fn a_3_replica_deployment_answers_on_each_pod_ip() {
    if skip("a_3_replica_deployment_answers_on_each_pod_ip", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    env.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [httpd_container()]}}
        }
    }));
    env.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert_pods_answer_on_their_ips(&env, "app=web", 3);
}

/// Every pod of `selector` answers `curl http://IP:8080/` with its name
/// from the node's namespace; IPs are distinct and in the node's podCIDR.
fn assert_pods_answer_on_their_ips(env: &NodeEnv, selector: &str, n: usize) {
    let pods = env.get_json(&["pods", "-l", selector]).unwrap();
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), n);
    let node = env.get_json(&["node", &env.node1()]).unwrap();
    let cidr = node["spec"]["podCIDR"].as_str().unwrap_or("").to_string();
    let prefix: String = cidr
        .split('/')
        .next()
        .unwrap_or("")
        .rsplit_once('.')
        .map(|x| x.0)
        .unwrap_or("")
        .to_string();
    let mut ips = BTreeSet::new();
    for p in items {
        let name = p["metadata"]["name"].as_str().unwrap();
        let ip = p["status"]["podIP"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no podIP"));
        assert!(
            ip.starts_with(&format!("{prefix}.")),
            "{name}: {ip} outside {cidr}"
        );
        assert!(ips.insert(ip.to_string()), "duplicate pod IP {ip}");
        let body = env.wait(
            &format!("{name} on {ip}:8080"),
            Duration::from_secs(30),
            || env.curl(&format!("http://{ip}:8080/")),
        );
        assert_eq!(body.trim(), name);
    }
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    if skip("a_failing_liveness_probe_restarts_the_container", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    // The first run never creates /tmp/alive; later runs do. A counter in
    // the emptyDir numbers the runs.
    env.apply(&pod_obj(
        "live",
        json!({}),
        json!({
            "containers": [{
                "name": "c", "image": BUSYBOX,
                "command": ["sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo run-$n; if [ $n -ge 2 ]; then touch /tmp/alive; fi; exec sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}
            }],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }),
    ));
    let pod = wait_pod(
        &env,
        "live",
        "restarted once and running",
        Duration::from_secs(90),
        |p| {
            restart_count(p, "c") == 1
                && container_status(p, "c").is_some_and(|s| s["state"]["running"].is_object())
        },
    );
    let st = container_status(&pod, "c").unwrap();
    assert_eq!(
        st["lastState"]["terminated"]["exitCode"], 137,
        "killed by signal: {st}"
    );
    wait_event(&env, "live", "Unhealthy", "Liveness probe failed");
    wait_event(
        &env,
        "live",
        "Killing",
        "failed liveness probe, will be restarted",
    );
    assert_logs_previous(&env);
}

/// `--previous` shows the run before the restart, the default the current.
fn assert_logs_previous(env: &NodeEnv) {
    assert_eq!(wait_logs(env, &["live"], "run-2"), "run-2\n");
    assert_eq!(logs(env, &["live", "--previous"]), "run-1\n");
    assert_eq!(logs(env, &["live", "-c", "c", "-p"]), "run-1\n");
}

#[test]
fn a_failing_readiness_probe_makes_the_pod_not_ready_and_leaves_the_endpointslice() {
    if skip("readiness", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    // The probe reads a file the test controls through a hostPath.
    let gate = env.dir.path().join("readiness");
    std::fs::create_dir_all(&gate).unwrap();
    std::fs::write(gate.join("ready"), "ok").unwrap();
    env.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "rd"},
        "spec": {"selector": {"app": "rd"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }));
    let mut c = httpd_container();
    c["readinessProbe"] = json!({"exec": {"command": ["cat", "/gate/ready"]}, "periodSeconds": 1});
    c["volumeMounts"] = json!([{"name": "gate", "mountPath": "/gate"}]);
    env.apply(&pod_obj(
        "rd-pod",
        json!({"app": "rd"}),
        json!({"containers": [c], "volumes": [{"name": "gate", "hostPath": {"path": gate.to_string_lossy(), "type": "Directory"}}]}),
    ));
    let pod = wait_pod(&env, "rd-pod", "Ready", Duration::from_secs(60), |p| {
        condition(p, "Ready") == Some("True")
    });
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert_slice_endpoint(&env, "rd", &ip, true);

    std::fs::remove_file(gate.join("ready")).unwrap();
    let pod = wait_pod(&env, "rd-pod", "NotReady", Duration::from_secs(30), |p| {
        condition(p, "Ready") == Some("False") && condition(p, "ContainersReady") == Some("False")
    });
    assert_eq!(phase(&pod), "Running");
    assert_eq!(restart_count(&pod, "web"), 0, "readiness must not restart");
    assert_eq!(container_status(&pod, "web").unwrap()["ready"], false);
    assert_slice_endpoint(&env, "rd", &ip, false);
    wait_event(&env, "rd-pod", "Unhealthy", "Readiness probe failed");

    // And back.
    std::fs::write(gate.join("ready"), "ok").unwrap();
    wait_pod(
        &env,
        "rd-pod",
        "Ready again",
        Duration::from_secs(30),
        |p| condition(p, "Ready") == Some("True"),
    );
    assert_slice_endpoint(&env, "rd", &ip, true);
}

/// Waits until the Service's EndpointSlices list `ip` as a ready endpoint
/// (`ready`) or no longer do (absent, or `conditions.ready` false).
fn assert_slice_endpoint(env: &NodeEnv, svc: &str, ip: &str, ready: bool) {
    let sel = format!("kubernetes.io/service-name={svc}");
    env.wait(
        &format!("EndpointSlice of {svc}: {ip} ready={ready}"),
        Duration::from_secs(30),
        || {
            let slices = env
                .get_json(&["endpointslices", "-l", &sel])
                .ok_or_else(|| "get endpointslices failed".to_string())?;
            let listed_ready = slices["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .any(|e| {
                    e["addresses"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == ip))
                        && e["conditions"]["ready"] != false
                });
            if listed_ready == ready {
                Ok(())
            } else {
                Err(slices["items"].to_string())
            }
        },
    )
}

#[test]
fn a_crashing_container_backs_off_longer_each_time() {
    if skip("crashloop", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    env.apply(&pod_obj(
        "crash",
        json!({}),
        json!({"containers": [sh_container("c", "echo crashing; sleep 1; exit 1")]}),
    ));
    // Each restart count's status, as first seen.
    let mut seen: Vec<Option<Value>> = vec![None, None, None];
    let mut saw_backoff = false;
    env.wait("two restarts", Duration::from_secs(150), || {
        let p = env.pod("crash").ok_or("no pod")?;
        let st = container_status(&p, "c").cloned().ok_or("no status")?;
        if st["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
            saw_backoff = true;
        }
        let k = st["restartCount"].as_i64().unwrap_or(0) as usize;
        let started = st["state"]["running"]["startedAt"].is_string()
            || st["state"]["terminated"]["startedAt"].is_string();
        if k < seen.len()
            && seen[k].is_none()
            && (k == 0 || st["lastState"]["terminated"].is_object())
        {
            seen[k] = Some(st.clone());
        }
        if k >= 2 && started && seen[1].is_some() {
            seen[2] = Some(st);
            Ok(())
        } else {
            Err(format!("restartCount {k}: {}", p["status"]))
        }
    });
    assert!(saw_backoff, "never saw waiting reason CrashLoopBackOff");
    let ts = |v: &Value| epoch_seconds(v.as_str().unwrap_or("")).unwrap();
    let s1 = seen[1].as_ref().unwrap();
    let s2 = seen[2].as_ref().unwrap();
    let run2_start = if s2["state"]["running"].is_object() {
        ts(&s2["state"]["running"]["startedAt"])
    } else {
        ts(&s2["state"]["terminated"]["startedAt"])
    };
    // Gap before restart 1 and before restart 2.
    let gap1 = ts(&s2["lastState"]["terminated"]["startedAt"])
        - ts(&s1["lastState"]["terminated"]["finishedAt"]);
    let gap2 = run2_start - ts(&s2["lastState"]["terminated"]["finishedAt"]);
    assert!(
        gap2 >= gap1 + 5 && gap2 >= 8,
        "back-off did not grow: {gap1} s then {gap2} s\n{s1}\n{s2}"
    );
    wait_event(
        &env,
        "crash",
        "BackOff",
        "Back-off restarting failed container",
    );
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    if skip("oom", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    let mut c = sh_container("hog", "head -c 200m /dev/zero | tail");
    c["resources"] = json!({"limits": {"memory": "32Mi"}, "requests": {"memory": "32Mi"}});
    env.apply(&pod_obj(
        "oom",
        json!({}),
        json!({"restartPolicy": "Never", "containers": [c]}),
    ));
    let pod = wait_pod(&env, "oom", "terminated", Duration::from_secs(60), |p| {
        container_status(p, "hog").is_some_and(|s| s["state"]["terminated"].is_object())
    });
    let t = &container_status(&pod, "hog").unwrap()["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137, "{t}");
    assert_eq!(phase(&wait_phase(&env, "oom", "Failed")), "Failed");
}

#[test]
fn configmap_secret_and_empty_dir_are_visible_inside() {
    if skip("volumes", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    env.ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=greeting=hello-from-cm",
    ]);
    env.ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=password=s3cr3t",
    ]);
    env.apply(&pod_obj(
        "vols",
        json!({}),
        json!({
            "containers": [
                {
                    "name": "main", "image": BUSYBOX,
                    "command": ["sh", "-c", "cat /etc/cm/greeting; echo; cat /etc/sec/password; echo; echo CM_ENV=$CM_ENV; echo SEC_ENV=$SEC_ENV; echo FROM=$greeting; exec sleep 3600"],
                    "env": [
                        {"name": "CM_ENV", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                        {"name": "SEC_ENV", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}}
                    ],
                    "envFrom": [{"configMapRef": {"name": "app-config"}}],
                    "volumeMounts": [
                        {"name": "cm", "mountPath": "/etc/cm"},
                        {"name": "sec", "mountPath": "/etc/sec"}
                    ]
                },
                {
                    "name": "writer", "image": BUSYBOX,
                    "command": ["sh", "-c", "echo shared-hello > /data/f; exec sleep 3600"],
                    "volumeMounts": [{"name": "shared", "mountPath": "/data"}]
                },
                {
                    "name": "reader", "image": BUSYBOX,
                    "command": ["sh", "-c", "until [ -e /shared/f ]; do sleep 0.2; done; cat /shared/f; exec sleep 3600"],
                    "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]
                }
            ],
            "volumes": [
                {"name": "cm", "configMap": {"name": "app-config"}},
                {"name": "sec", "secret": {"secretName": "app-secret"}},
                {"name": "shared", "emptyDir": {}}
            ]
        }),
    ));
    wait_running(&env, "vols");
    assert_configmap_and_secret_inside(&env);
    assert_empty_dir_shared(&env);
}

fn assert_configmap_and_secret_inside(env: &NodeEnv) {
    let out = wait_logs(env, &["vols", "-c", "main"], "FROM=");
    assert_eq!(
        out,
        "hello-from-cm\ns3cr3t\nCM_ENV=hello-from-cm\nSEC_ENV=s3cr3t\nFROM=hello-from-cm\n"
    );
}

fn assert_empty_dir_shared(env: &NodeEnv) {
    assert_eq!(
        wait_logs(env, &["vols", "-c", "reader"], "shared-hello"),
        "shared-hello\n"
    );
}

#[test]
fn deleting_a_pod_runs_pre_stop_and_stops_within_the_grace_period() {
    if skip("prestop", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    let hooks = env.dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook_volume = json!([{"name": "hooks", "hostPath": {"path": hooks.to_string_lossy(), "type": "Directory"}}]);
    // Ignores SIGTERM: only SIGKILL at the end of the grace period stops it.
    let mut stubborn = sh_container("c", "trap '' TERM; while true; do sleep 1; done");
    stubborn["volumeMounts"] = json!([{"name": "hooks", "mountPath": "/hooks"}]);
    stubborn["lifecycle"] = json!({"preStop": {"exec": {"command": ["sh", "-c", "echo prestop-ran > /hooks/prestop"]}}});
    env.apply(&pod_obj(
        "stubborn",
        json!({}),
        json!({"terminationGracePeriodSeconds": 4, "containers": [stubborn], "volumes": hook_volume}),
    ));
    // Exits on SIGTERM: stops long before its 30 s grace period.
    env.apply(&pod_obj(
        "polite",
        json!({}),
        json!({"terminationGracePeriodSeconds": 30, "containers": [sh_container("c", "trap 'exit 0' TERM; while true; do sleep 1; done")]}),
    ));
    wait_running(&env, "stubborn");
    wait_running(&env, "polite");

    let took = timed_delete(&env, "stubborn");
    assert!(
        took >= Duration::from_secs(3) && took <= Duration::from_secs(10),
        "a pod ignoring SIGTERM with a 4 s grace period took {took:?} to go"
    );
    assert_eq!(
        std::fs::read_to_string(hooks.join("prestop")).unwrap(),
        "prestop-ran\n"
    );

    let took = timed_delete(&env, "polite");
    assert!(
        took <= Duration::from_secs(10),
        "a pod exiting on SIGTERM took {took:?} to go"
    );
}

/// `kubectl delete pod NAME` (waits until the object is gone).
fn timed_delete(env: &NodeEnv, name: &str) -> Duration {
    let start = Instant::now();
    env.ok(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
    start.elapsed()
}

#[test]
fn nothing_of_ours_is_left_after_deleting_everything() {
    if skip("leftovers", &[]) {
        return;
    }
    // Alone: pod network namespaces are host-wide.
    let env = NodeEnv::ready_alone();
    env.ok(&["create", "secret", "generic", "s", "--from-literal=k=v"]);
    env.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [httpd_container()]}}
        }
    }));
    let mut c = sh_container("c", "exec sleep 3600");
    c["volumeMounts"] =
        json!([{"name": "mem", "mountPath": "/mem"}, {"name": "s", "mountPath": "/s"}]);
    env.apply(&pod_obj(
        "mounts",
        json!({}),
        json!({"containers": [c], "volumes": [
            {"name": "mem", "emptyDir": {"medium": "Memory"}},
            {"name": "s", "secret": {"secretName": "s"}}
        ]}),
    ));
    env.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    wait_running(&env, "mounts");
    // The checks below can fail: while pods run, each finds something.
    let left = leftovers(&env);
    assert!(
        left.iter().filter(|(_, v)| !v.is_empty()).count() >= 4,
        "the leftover checks see nothing while pods run: {left:?}"
    );

    env.ok(&["delete", "deployment", "--all", "--wait=true"]);
    env.ok(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--wait=true",
        "--timeout=60s",
    ]);
    env.wait("no pods", Duration::from_secs(60), || {
        let n = env.ok(&["get", "pods", "-o", "name"]);
        if n.trim().is_empty() {
            Ok(())
        } else {
            Err(n)
        }
    });
    env.wait(
        "the node to remove everything",
        Duration::from_secs(120),
        || {
            let left: Vec<_> = leftovers(&env)
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}

/// What the node holds for pods, by kind.
fn leftovers(env: &NodeEnv) -> Vec<(&'static str, Vec<String>)> {
    let node = &env.server;
    let strs = |v: Vec<std::path::PathBuf>| v.iter().map(|p| p.display().to_string()).collect();
    let ctr = |args: &[&str]| {
        env.ctr_ids(node, args)
            .unwrap_or_else(|e| vec![format!("ctr failed: {e}")])
    };
    let pods_dir = node.data_dir.join("agent").join("kubelet").join("pods");
    let dir_entries = |d: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    vec![
        ("containers and sandboxes", ctr(&["containers", "ls"])),
        ("tasks", ctr(&["tasks", "ls"])),
        ("pod netns", env.new_cni_netns()),
        ("pod cgroups", strs(env.pod_cgroups(node))),
        (
            "processes in pod cgroups",
            env.cgroup_processes(node)
                .iter()
                .map(|p| p.to_string())
                .collect(),
        ),
        ("mounts under the data dir", env.mounts_under(node)),
        ("pod dirs", dir_entries(&pods_dir)),
        ("pod log dirs", dir_entries(&node.pod_logs_dir)),
    ]
}

#[test]
fn kill_9_of_the_server_and_restart_keeps_pods_running() {
    if skip("kill9", &[]) {
        return;
    }
    let mut env = NodeEnv::ready();
    env.apply(&pod_obj(
        "steady",
        json!({}),
        json!({"containers": [sh_container("c", "echo steady-started; exec sleep 3600")]}),
    ));
    env.ok(&["create", "configmap", "cfg", "--from-literal=k=v"]);
    let mut c = sh_container("c", "exec sleep 3600");
    c["volumeMounts"] = json!([{"name": "cfg", "mountPath": "/cfg"}]);
    env.apply(&pod_obj(
        "with-volume",
        json!({}),
        json!({"containers": [c], "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]}),
    ));
    let before: Vec<(String, String, i64)> = ["steady", "with-volume"]
        .iter()
        .map(|n| {
            let p = wait_running(&env, n);
            let st = container_status(&p, "c").unwrap();
            (
                n.to_string(),
                st["containerID"].as_str().unwrap().to_string(),
                restart_count(&p, "c"),
            )
        })
        .collect();

    env.kill9_server();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    env.spawn_server();
    env.wait_api();
    // The Node still says Ready from before the kill: wait for the new
    // agent's own heartbeat.
    let node = env.node1();
    env.wait(
        "a Lease renewal by the restarted agent",
        Duration::from_secs(60),
        || {
            let lease = env
                .get_json(&["lease", "-n", "kube-node-lease", &node])
                .ok_or("no lease")?;
            let renewed = lease["spec"]["renewTime"]
                .as_str()
                .and_then(epoch_seconds)
                .unwrap_or(0);
            if renewed > killed_at {
                Ok(())
            } else {
                Err(format!("renewTime {}", lease["spec"]["renewTime"]))
            }
        },
    );
    env.wait_node_ready(Duration::from_secs(60));
    assert_pods_unchanged_for(&env, &before, Duration::from_secs(10));
    assert_eq!(
        wait_logs(&env, &["steady"], "steady-started"),
        "steady-started\n",
        "the container ran once"
    );
}

/// For `window`, each pod stays Running with the same container ID and
/// restartCount.
fn assert_pods_unchanged_for(env: &NodeEnv, before: &[(String, String, i64)], window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        for (name, id, restarts) in before {
            let p = env.pod(name).unwrap_or_else(|| panic!("{name} is gone"));
            let st = container_status(&p, "c").unwrap();
            assert_eq!(phase(&p), "Running", "{name}: {}", p["status"]);
            assert!(st["state"]["running"].is_object(), "{name}: {st}");
            assert_eq!(
                st["containerID"].as_str(),
                Some(id.as_str()),
                "{name} got a new container: {st}"
            );
            assert_eq!(restart_count(&p, "c"), *restarts, "{name} restarted: {st}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------
// Two nodes

#[test]
fn a_second_node_joins_and_pods_on_both_nodes_reach_each_other() {
    if skip("multi-node", &[]) {
        return;
    }
    let mut env = NodeEnv::ready();
    let i = env.add_agent();
    let node2 = env.wait_agent_ready(i, Duration::from_secs(60));
    let node1 = env.node1();
    assert_ne!(node1, node2);

    // Each server also answers /cgi-bin/peer with the address the request
    // came from, to show pods talk without NAT.
    let peer_cgi = "mkdir -p /www/cgi-bin && hostname > /www/index.html && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -p 8080 -h /www";
    for (name, node) in [("srv-1", &node1), ("srv-2", &node2)] {
        let mut c = httpd_container();
        c["command"] = json!(["sh", "-c", peer_cgi]);
        env.apply(&pod_obj(
            name,
            json!({}),
            json!({"nodeName": node, "containers": [c]}),
        ));
    }
    let ip1 = wait_running(&env, "srv-1")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let ip2 = wait_running(&env, "srv-2")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        ip1.rsplit_once('.').map(|x| x.0),
        ip2.rsplit_once('.').map(|x| x.0),
        "both pods in one podCIDR: {ip1} {ip2}"
    );

    // Each node's pod fetches the other node's page by pod IP.
    for (client, node, target_ip, target) in [
        ("cli-1", &node1, &ip2, "srv-2"),
        ("cli-2", &node2, &ip1, "srv-1"),
    ] {
        // Prints the target's name, then this pod's own address, then the
        // address the target saw.
        let script = format!(
            "i=0; while [ $i -lt 30 ]; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target_ip} 8080 > /tmp/out && grep -q . /tmp/out && tail -n 1 /tmp/out && ip -4 -o addr show dev eth0 | awk '{{print $4}}' | cut -d/ -f1 && printf 'GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target_ip} 8080 | tail -n 1 && exit 0; echo \"try $i failed\" >&2; i=$((i+1)); sleep 1; done; exit 1"
        );
        env.apply(&pod_obj(
            client,
            json!({}),
            json!({"nodeName": node, "restartPolicy": "Never", "containers": [sh_container("c", &script)]}),
        ));
        let p = wait_pod(&env, client, "finished", Duration::from_secs(60), |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        });
        assert_eq!(
            phase(&p),
            "Succeeded",
            "{client} on {node} could not reach {target} at {target_ip}: {}",
            logs(&env, &[client])
        );
        // The log of a pod on the second node comes from its kubelet.
        let out = logs(&env, &[client]);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines.len(), 3, "{client}: {out:?}");
        assert_eq!(lines[0], target);
        // Pod to pod across nodes keeps the pod's own address (no NAT).
        assert!(lines[1].starts_with("10."), "{client}: {out:?}");
        // busybox httpd gives the peer as an IPv4-mapped IPv6 address.
        let seen = lines[2]
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_start_matches("::ffff:");
        assert_eq!(seen, lines[1], "{target} saw {client} as another address");
    }
    // Each node's namespace reaches both pods (host-gateway routes).
    assert_eq!(
        env.curl(&format!("http://{ip2}:8080/")).unwrap().trim(),
        "srv-2"
    );
}

// ---------------------------------------------------------------------
// Bad input

#[test]
fn a_missing_image_shows_err_image_pull_then_image_pull_back_off() {
    if skip("missing-image", &["docker-registry"]) {
        return;
    }
    let mut env = NodeEnv::ready();
    let registry = env.start_registry();
    let image = format!("{registry}/e2e/missing:1");
    env.apply(&pod_obj(
        "no-image",
        json!({}),
        json!({"containers": [{"name": "c", "image": image}]}),
    ));
    let mut pull_error = None;
    env.wait(
        "ErrImagePull then ImagePullBackOff",
        Duration::from_secs(90),
        || {
            let p = env.pod("no-image").ok_or("no pod")?;
            let w = container_status(&p, "c")
                .map(|s| s["state"]["waiting"].clone())
                .unwrap_or_default();
            match w["reason"].as_str() {
                Some("ErrImagePull") => {
                    pull_error = Some(w["message"].as_str().unwrap_or("").to_string())
                }
                Some("ImagePullBackOff") if pull_error.is_some() => return Ok(()),
                _ => {}
            }
            Err(p["status"].to_string())
        },
    );
    let msg = pull_error.unwrap();
    assert!(
        msg.contains(&image),
        "ErrImagePull message lacks the image: {msg}"
    );
    assert!(
        msg.contains("not found"),
        "ErrImagePull message lacks the registry's answer: {msg}"
    );
    wait_event(&env, "no-image", "Failed", "not found");
    wait_event(&env, "no-image", "BackOff", "Back-off pulling image");
}

#[test]
fn a_missing_configmap_shows_create_container_config_error() {
    if skip("missing-configmap", &[]) {
        return;
    }
    let env = NodeEnv::ready();
    env.apply(&pod_obj(
        "needs-cm",
        json!({}),
        json!({"containers": [{
            "name": "c", "image": BUSYBOX, "command": ["sh", "-c", "echo got=$V; exec sleep 3600"],
            "env": [{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]
        }]}),
    ));
    let p = wait_pod(
        &env,
        "needs-cm",
        "CreateContainerConfigError",
        Duration::from_secs(60),
        |p| {
            container_status(p, "c")
                .is_some_and(|s| s["state"]["waiting"]["reason"] == "CreateContainerConfigError")
        },
    );
    let msg = container_status(&p, "c").unwrap()["state"]["waiting"]["message"].clone();
    assert_eq!(msg, "configmap \"absent\" not found");
    // Creating it lets the pod start.
    env.ok(&["create", "configmap", "absent", "--from-literal=k=present"]);
    wait_running(&env, "needs-cm");
    assert_eq!(wait_logs(&env, &["needs-cm"], "got="), "got=present\n");
}
