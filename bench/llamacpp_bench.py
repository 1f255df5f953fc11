"""Measure llama.cpp (via llama-cpp-python) on a GGUF file: prefill and decode
tokens/s for 1 and 2 threads, matching crates/inference/benches/llm.rs."""
import sys
import time

from llama_cpp import Llama

TEXT = ("The quick brown fox jumps over the lazy dog while the sun sets behind the distant hills, "
        "and a gentle breeze carries the scent of pine across the quiet valley. ")


def main():
    path = sys.argv[1]
    for threads in (1, 2):
        llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads,
                    n_ctx=2048, n_batch=512, verbose=False)
        toks = llm.tokenize((TEXT * 40).encode(), add_bos=False, special=False)[:512]
        best = float("inf")
        for _ in range(3):
            llm.reset()
            t = time.perf_counter()
            llm.eval(toks)
            best = min(best, time.perf_counter() - t)
        print(f"llama.cpp prefill threads={threads}: {512 / best:.1f} tokens/s (512-token prompt)")
        # Decode: one token at a time after a short prompt (greedy on the logits).
        llm.reset()
        prompt = llm.tokenize(
            b"<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n",
            add_bos=False, special=True)
        llm.eval(prompt)
        n = 128
        t = time.perf_counter()
        for _ in range(n):
            tok = llm.sample(temp=0.0)
            llm.eval([tok])
        dt = time.perf_counter() - t
        print(f"llama.cpp decode threads={threads}: {n / dt:.1f} tokens/s ({n} tokens)")


if __name__ == "__main__":
    main()
