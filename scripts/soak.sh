#!/usr/bin/env bash
# A seeded soak of the local pipeline (tests/src/soak.rs): DAYS days of ICE
# exports shaped as real ones arrive (rooms listed daily, days split over two
# files, files sent again and regenerated, bad conversations, unicode, file
# transfers, counterparties, unmapped users), run day by day through crashes,
# SIGKILLs, store and mail server outages and doubled events drawn from SEED,
# then every invariant checked with Python's `email` package.
#
# usage: scripts/soak.sh [SEED [DAYS]]     (defaults: SEED 1, DAYS 30)
#
# The same SEED and DAYS replay the same exports and the same faults; a
# failing soak prints the command that replays it. The figures of what ran
# are printed as one JSON line ("soak figures: ...").
set -euo pipefail
seed=${1:-1}
days=${2:-30}
case "$seed$days" in
  *[!0-9]*) echo "usage: $0 [SEED [DAYS]] (whole numbers)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
SOAK_SEED=$seed SOAK_DAYS=$days exec cargo test -p integration-tests --locked --test soak -- --nocapture
