#!/usr/bin/env bash
# SFTP fetch benchmark: the fetch stage and the SFTP source next to OpenSSH's
# own `sftp` client, fetching the same file from the same local sshd in the
# same run (see docs/sftp.md). Not part of `cargo test`.
#
# Usage: scripts/bench-sftp.sh [--size-mb 500] [--runs 3] [--reads-in-flight 32]
# Needs root (it starts /usr/sbin/sshd and creates its test users) and
# openssh-server + openssh-client (scripts/install-test-deps.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-sftp: run as root (sshd must switch to the login user)" >&2
  exit 1
fi
exec cargo run --release --no-default-features -p integration-tests --bin bench_sftp -- "$@"
