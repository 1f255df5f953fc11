#!/usr/bin/env bash
# Side-by-side benchmark: verinfer's engine and llama.cpp on the same GGUF file.
# Not part of CI. Builds llama.cpp from source through llama-cpp-python (PyPI)
# in a virtualenv under target/bench-venv (several minutes the first time).
#
#   bench/llamacpp.sh            # default model (fetched if needed)
#   bench/llamacpp.sh FILE.gguf  # any llama-architecture GGUF
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-target/bench-venv}
LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.16}

if [ $# -ge 1 ]; then
  MODEL=$1
else
  cargo run -q --release -p verinfer-cli -- models fetch smollm2-135m >/dev/null
  MODEL=$(cargo run -q --release -p verinfer-cli -- models path smollm2-135m)
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (llama.cpp from source)..." >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$VENV/bin/pip" install -q "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
fi

echo "== verinfer ($MODEL)"
VERINFER_BENCH_MODEL="$MODEL" cargo bench -q -p verinfer-inference --bench llm
echo "== llama.cpp $("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
"$VENV/bin/python" bench/llamacpp_bench.py "$MODEL"
