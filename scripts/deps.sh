#!/usr/bin/env bash
# Installs the Debian packages Kelson needs, for the role given:
#   server  - what `kelson server` needs to run
#   test    - what the test suite and benches need
# Idempotent: installs only what is missing.
set -euo pipefail

role=${1:-server}
packages=()
case "$role" in
  # curl: kelson-up.sh waits for the API server's /readyz with it.
  # containerd, runc, CNI plugins, iproute2, nftables: the node agent runs
  # pods with them (containerd is started by the agent, not by systemd).
  server) packages+=(curl containerd runc containernetworking-plugins iproute2 nftables) ;;
  # protobuf-compiler, libprotobuf-dev: the etcd client's gRPC code generation (bench crate).
  # etcd-server: the reference the store bench measures against.
  # curl: tests make raw HTTPS requests (no credentials) to the API server.
  # python3, python3-venv: a private venv for the Python `kubernetes` client
  # the client end-to-end tests drive (Debian refuses system-wide pip installs).
  # containerd, runc, CNI plugins: the kubelet side's runtime tests run the
  # real ones; busybox-static, skopeo, docker-registry build and serve test
  # images on loopback.
  test) packages+=(protobuf-compiler libprotobuf-dev etcd-server procps curl python3 python3-venv
                   containerd runc containernetworking-plugins iproute2 nftables busybox-static skopeo docker-registry
                   util-linux) ;;
  *) echo "usage: $0 server|test" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Python `kubernetes` client for crates/kelson/tests/e2e_clients.rs, in a
# venv outside the repo (the tests look there, or at $KELSON_TEST_PYTHON).
if [ "$role" = test ]; then
  pyenv=/var/lib/kelson-test/pyenv
  pyclient=kubernetes==33.1.0
  if [ ! -x "$pyenv/bin/python" ]; then
    echo "Creating $pyenv"
    mkdir -p "$(dirname "$pyenv")"
    /usr/bin/python3 -m venv "$pyenv"
  fi
  if ! "$pyenv/bin/python" -m pip freeze 2>/dev/null | grep -qix "$pyclient"; then
    echo "Installing $pyclient into $pyenv"
    "$pyenv/bin/python" -m pip install -q --disable-pip-version-check "$pyclient"
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (the Rust toolchain, e.g. from rustup)" >&2
  exit 1
fi
