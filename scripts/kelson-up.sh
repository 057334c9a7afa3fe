#!/usr/bin/env bash
# Builds Kelson, installs it to /usr/local/bin and starts a single-node
# server in the background on the default data dir (/var/lib/kelson).
# Stop it with: kill "$(cat /var/lib/kelson/server/kelson.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=${KELSON_DATA_DIR:-/var/lib/kelson}
./scripts/deps.sh server

echo "==> building kelson (release)"
cargo build --release --locked -p kelson
target_dir=${CARGO_TARGET_DIR:-target}
install -m 0755 "$target_dir/release/kelson" /usr/local/bin/kelson

pidfile="$data_dir/server/kelson.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "kelson server is already running (pid $(cat "$pidfile"))"
  exit 0
fi
mkdir -p "$data_dir/server"
echo "==> starting kelson server (log: $data_dir/server/kelson.log)"
nohup /usr/local/bin/kelson server --data-dir "$data_dir" >>"$data_dir/server/kelson.log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 1 300); do
  # Ready when the API server answers /readyz (anonymous access is allowed there).
  if [ "$(curl -sk --max-time 1 https://127.0.0.1:6443/readyz 2>/dev/null)" = "ok" ]; then
    echo "kelson server is running (pid $(cat "$pidfile"))"
    echo "kubeconfig: $data_dir/kubeconfig.yaml  (export KUBECONFIG=$data_dir/kubeconfig.yaml)"
    exit 0
  fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "kelson server exited; see $data_dir/server/kelson.log" >&2
    tail -n 20 "$data_dir/server/kelson.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "kelson server did not become ready in 30 s; see $data_dir/server/kelson.log" >&2
exit 1
