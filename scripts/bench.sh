#!/usr/bin/env bash
# Every performance figure of the project, each next to its peer in the same
# run on this machine (not a test; the latest table is in docs/benchmarks.md):
#   decrypt (vs gpg), parse and convert, end to end on embedded defaults,
#   SFTP fetch (vs OpenSSH sftp), IMAP import (serial vs pipelined, mbsync),
#   Lambda bootstrap sizes and init times (needs cargo-lambda), and what a
#   day costs on AWS (S3 requests and storage, Lambda seconds; docs/cost.md).
#
# Usage: scripts/bench.sh [--quick] [--only parse|short|big|cost]
#   --quick: small sizes (a minute or two), to check the benchmarks run.
#   --only parse: parse and convert alone (against a bare quick-xml loop,
#     xmllint --stream if installed, and callgrind's instructions per byte if
#     valgrind is); needs neither root nor servers.
#   --only short: a day of one-message conversations end to end (embedded
#     store and Maildir): mails per second.
#   --only big: one conversation with one file transfer of --big-mb (2 GiB;
#     60 MB with --quick) through convert and import: each stage's peak RSS.
#   --only cost: the four functions against moto for a day of one-message
#     conversations and a day of a few large ones: S3 requests by kind
#     (counted from moto's logs), storage per prefix, seconds per stage;
#     needs neither root nor Dovecot.
# Needs root (sshd and Dovecot switch users) and scripts/install-test-deps.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export PATH="${CHAT_ARCHIVE_VENV:-$here/.venv}/bin:$PATH"

quick=false; only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=true ;;
    --only) only="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if $quick; then
  core=(--size-mb 20 --big-mb 60 --messages 20000 --short-chats 20000); sftp=(--size-mb 50 --runs 1)
  imap=(--messages 500 --rtt-ms 0,5); starts=5; cost=(--messages 200 --runs 1)
else
  core=(--size-mb 200 --big-mb 2048 --messages 1000000 --short-chats 200000); sftp=(--size-mb 500 --runs 3)
  imap=(--messages 5000 --rtt-ms 0,5); starts=30; cost=(--messages 400 --large-conversations 4 --runs 3)
fi

run() { cargo run --release -q --no-default-features -p integration-tests --bin "$@"; }
# The cost bench runs the functions against moto: it needs the AWS adapters.
run_aws() { cargo run --release -q -p integration-tests --bin "$@"; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$only" = parse ]; then
  command -v xmllint >/dev/null || echo "xmllint not found: skipped (Debian: libxml2-utils)"
  command -v valgrind >/dev/null || echo "valgrind not found: instructions per byte skipped"
  run bench -- "${core[@]}" --only parse
  exit 0
elif [ "$only" = short ] || [ "$only" = big ]; then
  run bench -- "${core[@]}" --only "$only"
  exit 0
elif [ "$only" = cost ]; then
  run_aws bench_cost -- "${cost[@]}"
  exit 0
elif [ -n "$only" ]; then
  echo "--only takes parse, short, big or cost" >&2; exit 2
fi
echo "== decrypt, parse/convert, end to end"
run bench -- "${core[@]}"
echo "== SFTP fetch vs OpenSSH sftp"
scripts/bench-sftp.sh "${sftp[@]}"
echo "== IMAP import"
scripts/bench-imap.sh "${imap[@]}"
echo "== Lambda bootstraps"
if command -v cargo-lambda >/dev/null; then
  # The four functions only: a workspace build also leaves the test and
  # bench binaries under target/lambda, which are not Lambda bootstraps.
  cargo lambda build --release --compiler cargo -q -p fetch -p decrypt -p convert -p import
  functions=$(mktemp -d)
  for f in fetch decrypt convert import; do
    mkdir -p "$functions/$f"
    cp "${CARGO_TARGET_DIR:-target}/lambda/$f/bootstrap" "$functions/$f/"
  done
  run bench_lambda -- --starts "$starts" "$functions"
  rm -rf "$functions"
else
  echo "cargo-lambda not found: skipped (scripts/install-test-deps.sh installs it)"
fi
echo "== a day on AWS: requests, storage, seconds (against moto)"
run_aws bench_cost -- "${cost[@]}"
