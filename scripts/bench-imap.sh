#!/usr/bin/env bash
# IMAP import benchmark (not a test): 5,000 chat mails of ~4 KB into a local
# Dovecot, serial vs pipelined vs MULTIAPPEND, next to mbsync (and imapsync
# when installed). Needs root (Dovecot runs its mail processes as vmail).
# Usage: scripts/bench-imap.sh [--messages N] [--size BYTES]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
for p in dovecot-imapd isync; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" \
      || echo "could not install $p; the benchmark skips what needs it"
  fi
done
# imapsync is not in Debian 12; it is used when present on the PATH.
cargo run --release -q --no-default-features -p integration-tests --bin bench-imap -- "$@"
