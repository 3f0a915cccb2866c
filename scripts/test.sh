#!/usr/bin/env bash
# The project's test command: installs the test dependencies, checks format and
# lints, and runs every test (unit and integration against real servers).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/install-test-deps.sh
export PATH="${CHAT_ARCHIVE_VENV:-$here/.venv}/bin:$PATH"
# The SAM template: cfn-lint expands the SAM transform offline.
cfn-lint infra/template.yaml
# Every dependency's license, source and bans (deny.toml).
"${CHAT_ARCHIVE_TOOLS:-$here/.tools}/bin/cargo-deny" check licenses bans sources
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
