#!/usr/bin/env bash
# Runs one cargo-fuzz target of tests/fuzz (see docs/fuzzing.md):
#   scripts/fuzz.sh TARGET [SECONDS [LIBFUZZER_OPTION...]]   (default 600 s)
# Targets: ice_parser, xip_reader, mapping_csv, mail_builder, attachment_archive.
# One fuzzer process (-jobs=1 -workers=1): the machines are shared.
# cargo-fuzz needs nightly-only rustc flags; on a stable toolchain
# RUSTC_BOOTSTRAP=1 allows them (set here unless already set).
# New corpus entries go to tests/fuzz/corpus/TARGET (not committed); the
# committed seeds and the inputs that once found bugs are read too.
set -euo pipefail

target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS [LIBFUZZER_OPTION...]]}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz=$root/tests/fuzz

case $target in
ice_parser | xip_reader | attachment_archive) max_len=16384 ;;
mail_builder) max_len=8192 ;;
mapping_csv) max_len=4096 ;;
*)
    echo "unknown target $target (ice_parser, xip_reader, mapping_csv, mail_builder, attachment_archive)" >&2
    exit 2
    ;;
esac

args=(-max_total_time="$seconds" -jobs=1 -workers=1 -rss_limit_mb=2048
    -max_len="$max_len" -timeout=60 -print_final_stats=1)
args+=("$@")
if [ -f "$fuzz/dicts/$target.dict" ]; then
    args+=(-dict="$fuzz/dicts/$target.dict")
fi
mkdir -p "$fuzz/corpus/$target"
corpus=("$fuzz/corpus/$target")
for extra in "$fuzz/seeds/$target" "$fuzz/regressions/$target"; do
    if [ -d "$extra" ]; then corpus+=("$extra"); fi
done

# From the fuzz crate's directory: with -jobs, libFuzzer writes its log to
# ./fuzz-0.log, which tests/fuzz/.gitignore ignores.
cd "$fuzz"
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}
status=0
cargo fuzz run --fuzz-dir . "$target" "${corpus[@]}" -- "${args[@]}" || status=$?
if [ -f fuzz-0.log ]; then tail -n 40 fuzz-0.log; fi
exit $status
