#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10) with libFuzzer through
# cargo-fuzz on the stable toolchain, from the seeds in seeds/<target> plus
# what earlier runs found (corpus/<target>, not committed). Installs the
# pinned cargo-fuzz if it is missing. Exits non-zero on the first crash; the
# input is left in artifacts/<target>/ for a regression test.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    # A registry hiccup should not fail the run: try a few times.
    for attempt in 1 2 3; do
        if cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"; then
            break
        fi
        [ "$attempt" = 3 ] && { echo "cannot install cargo-fuzz $CARGO_FUZZ_VERSION" >&2; exit 1; }
        sleep $((attempt * 15))
    done
fi

# No sanitizer: the code is safe Rust (unsafe_code is denied but for the
# model mmap), and -Zsanitizer needs nightly. Coverage instrumentation and
# debug assertions are what find the bugs here.
flags=(--sanitizer none --debug-assertions)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build "${flags[@]}"
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log="logs/$t.log"
    if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $t failed: the input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)
    echo "fuzz $t: ${runs:-?} runs in ${secs}s, ${cov:-cov: ?}, no crash"
done
