#!/usr/bin/env bash
# Installs what the tests need on a Debian machine (run as root, or with sudo
# available): GnuPG, OpenSSH server (SFTP), Dovecot (IMAP), and a Python venv
# with moto (S3 + Secrets Manager), cfn-lint and cargo-lambda; cargo-deny.
# Idempotent: re-running skips what is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="${CHAT_ARCHIVE_VENV:-$here/.venv}"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# chromium: the status page is checked in a real headless browser; faketime:
# stages run with the clock stepped (tests/tests/clock_steps.rs).
packages=(gnupg openssh-server openssh-client dovecot-imapd python3-venv chromium faketime)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  # Debian's dovecot starts a system instance on install; the tests run their own.
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/pip" ]; then
  echo "Creating Python venv $venv"
  python3 -m venv "$venv"
fi
# Pinned: a new release of a test tool must not change what the tests prove.
want=("moto[server]==5.2.5" "cfn-lint==1.58.0" "cargo-lambda==1.9.2" "jsonschema==4.26.0")
installed="$("$venv/bin/pip" freeze 2>/dev/null || true)"
if ! grep -qx "moto==5.2.5" <<<"$installed" || ! grep -qx "cfn-lint==1.58.0" <<<"$installed" \
  || ! grep -qx "cargo-lambda==1.9.2" <<<"$installed" || ! grep -qx "jsonschema==4.26.0" <<<"$installed"; then
  echo "Installing Python tools: ${want[*]}"
  "$venv/bin/pip" install -q "${want[@]}"
fi

# cargo-deny (licenses, bans, sources of every dependency), pinned, built
# into the project's .tools/ once.
deny_version="0.20.2"
tools="${CHAT_ARCHIVE_TOOLS:-$here/.tools}"
if ! "$tools/bin/cargo-deny" --version 2>/dev/null | grep -qx "cargo-deny $deny_version"; then
  echo "Building cargo-deny $deny_version into $tools (once; a few minutes)"
  cargo install --quiet --locked --no-default-features --root "$tools" "cargo-deny@$deny_version"
fi
echo "Test dependencies ready (venv: $venv, tools: $tools)."
