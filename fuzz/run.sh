#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer's coverage instrumentation on the
# stable toolchain and runs each for SECONDS (default 10), one after the
# other, from the seeds in seeds/<target> plus what earlier runs found
# (corpus/<target>, not committed). Exits non-zero on the first crash; the
# input is left in artifacts/<target>/ for a regression test.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Plain cargo with the flags cargo-fuzz would pass (so nothing to install),
# but several codegen units and no sanitizer: a cold build of the light
# crates the targets depend on takes about a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true

# The host triple given explicitly keeps the flags off build scripts and
# proc macros (they run on the host, uninstrumented).
triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    --cfg fuzzing
)
[[ $triple == *-linux-* ]] && flags+=(-Cllvm-args=-sanitizer-coverage-stack-depth)
# An incremental cache would only grow target/: the build is cold anyway.
RUSTFLAGS="${flags[*]} ${RUSTFLAGS:-}" CARGO_INCREMENTAL=0 \
    cargo build --release --locked --bins --target "$triple"
bin="target/$triple/release"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^verinfer-fuzz$')
fi
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="logs/$t.log"
    # New inputs go to the first directory (corpus), seeds are read only.
    if ! "$bin/$t" "corpus/$t" "seeds/$t" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $t failed: the input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1)
    echo "fuzz $t: ${runs:-?} runs in ${secs} s, ${cov:-cov: ?}, no crash"
done
