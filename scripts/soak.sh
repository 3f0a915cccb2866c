#!/usr/bin/env bash
# A seeded soak of the local pipeline (tests/src/soak.rs, docs/reliability.md):
# DAYS days of ICE exports shaped as real ones arrive (rooms listed daily, days
# split over two files, files sent again and regenerated, bad conversations,
# unicode, file transfers, counterparties, unmapped users), run day by day
# through crashes, SIGKILLs, store and mail server outages and doubled events
# drawn from SEED, then every invariant checked with Python's `email` package.
#
# usage: scripts/soak.sh [SEED [DAYS [GRANULARITY]]]
#        defaults: SEED 1, DAYS 30, GRANULARITY conversation-day (or: message)
#
# The same arguments replay the same exports and the same faults; a failing
# soak prints the command that replays it. SOAK_KEEP=1 keeps its data
# directory. The figures of what ran are printed as one JSON line
# ("soak figures: ...").
set -euo pipefail
seed=${1:-1}
days=${2:-30}
granularity=${3:-conversation-day}
usage="usage: $0 [SEED [DAYS [conversation-day|message]]]"
case "$seed$days" in
  *[!0-9]*) echo "$usage (SEED and DAYS are whole numbers)" >&2; exit 2 ;;
esac
[ "$days" -ge 1 ] || { echo "$usage (DAYS is at least 1)" >&2; exit 2; }
case "$granularity" in
  conversation-day|message) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
SOAK_SEED=$seed SOAK_DAYS=$days SOAK_GRANULARITY=$granularity \
  exec cargo test -p integration-tests --locked --test soak -- --nocapture
