#!/usr/bin/env bash
# Answers per second with 50 concurrent clients: verinfer's devnet (verified
# answers: generation, two checks, settlement) against an unverified
# llama-server on the same machine, model and cores, measured in turn.
# Not part of CI.
#
#   bench/llamaserver.sh            # default model, 3 rounds
#   ROUNDS=5 bench/llamaserver.sh FILE.gguf
#
# llama-server: $LLAMA_SERVER if set; otherwise built (several minutes the
# first time) from the llama.cpp that llama-cpp-python $LLAMA_CPP_PYTHON_VERSION
# vendors (the version bench/llamacpp.sh uses), portable flags with AVX2 and
# AVX-512 (VNNI), AMX off, under target/llama-server-build.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
THREADS=${THREADS:-$(nproc)}
PORT=${PORT:-8439}
LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.16}
BUILD=target/llama-server-build

if [ $# -ge 1 ]; then
  MODEL=$1
else
  cargo run -q --release -p verinfer-cli -- models fetch smollm2-135m >/dev/null
  MODEL=$(cargo run -q --release -p verinfer-cli -- models path smollm2-135m)
fi

if [ -z "${LLAMA_SERVER:-}" ]; then
  LLAMA_SERVER=$BUILD/bin/llama-server
  if [ ! -x "$LLAMA_SERVER" ]; then
    echo "building llama-server (llama.cpp vendored by llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)..." >&2
    mkdir -p "$BUILD/src"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$BUILD/src" \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    tar -xzf "$BUILD/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$BUILD/src"
    cmake -S "$BUILD/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp" -B "$BUILD" \
      -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
      -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF >/dev/null
    cmake --build "$BUILD" --target llama-server -j "$(nproc)" >/dev/null
  fi
fi

# One slot per client, each with room for a short chat (prompt and 16 tokens).
"$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$CLIENTS" -c $((CLIENTS * 256)) \
  --host 127.0.0.1 --port "$PORT" --log-disable >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.5
done

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: llama-server ($("$LLAMA_SERVER" --version 2>&1 | head -1), $THREADS threads, $CLIENTS slots)"
  python3 bench/concurrent_chats.py "http://127.0.0.1:$PORT" "$CLIENTS"
  echo "== round $round: verinfer devnet (verified)"
  cargo bench -q -p verinfer-node --bench network 2>/dev/null | grep "concurrent"
done
