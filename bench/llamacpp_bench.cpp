// llama.cpp's side of bench/llamacpp.sh, on its C API alone (so only the
// `llama` library needs building), measured as crates/inference/benches/llm.rs
// measures the engine.
//
//     llamacpp_bench quantize IN.gguf OUT.gguf   # a Q4_0 copy, embedding and output at Q8_0
//     llamacpp_bench run MODEL.gguf THREADS ROUNDS
//
// `run` prints, for the given thread count (batch and decode alike):
//     prefill threads=T: X tokens/s   (a 512-token prompt in one batch, fresh context; median)
//     decode threads=T: X tokens/s    (256 greedy tokens after the 39-token chat prompt; median)
#include "llama.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static void quiet(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & s, bool special) {
    int n = -llama_tokenize(vocab, s.c_str(), (int32_t) s.size(), nullptr, 0, false, special);
    std::vector<llama_token> out(n);
    if (llama_tokenize(vocab, s.c_str(), (int32_t) s.size(), out.data(), n, false, special) != n) {
        fprintf(stderr, "tokenize failed\n");
        exit(1);
    }
    return out;
}

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

static void decode_or_die(llama_context * ctx, llama_token * toks, int n) {
    if (llama_decode(ctx, llama_batch_get_one(toks, n)) != 0) {
        fprintf(stderr, "llama_decode failed\n");
        exit(1);
    }
}

int main(int argc, char ** argv) {
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    if (argc == 4 && std::string(argv[1]) == "quantize") {
        llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.ftype = LLAMA_FTYPE_MOSTLY_Q4_0;
        qp.allow_requantize = true;
        qp.output_tensor_type = GGML_TYPE_Q8_0;
        qp.token_embedding_type = GGML_TYPE_Q8_0;
        return llama_model_quantize(argv[2], argv[3], &qp) == 0 ? 0 : 1;
    }
    if (argc != 5 || std::string(argv[1]) != "run") {
        fprintf(stderr, "usage: %s quantize IN OUT | run MODEL THREADS ROUNDS\n", argv[0]);
        return 2;
    }
    const int threads = atoi(argv[3]);
    const int rounds = std::max(1, atoi(argv[4]));
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[2], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[2]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    std::string text;
    for (int i = 0; i < 40; i++) {
        text += "The quick brown fox jumps over the lazy dog while the sun sets behind the distant hills, "
                "and a gentle breeze carries the scent of pine across the quiet valley. ";
    }
    std::vector<llama_token> longp = tokenize(vocab, text, false);
    longp.resize(512);
    std::vector<llama_token> chat = tokenize(
        vocab,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n",
        true);
    std::vector<double> pre, dec;
    // One warm-up round, as the harness does.
    for (int r = 0; r <= rounds; r++) {
        llama_memory_clear(llama_get_memory(ctx), true);
        double t = now();
        decode_or_die(ctx, longp.data(), (int) longp.size());
        if (r > 0) {
            pre.push_back(longp.size() / (now() - t));
        }
        llama_memory_clear(llama_get_memory(ctx), true);
        decode_or_die(ctx, chat.data(), (int) chat.size());
        t = now();
        for (int i = 0; i < 256; i++) {
            const float * l = llama_get_logits_ith(ctx, -1);
            llama_token best = (llama_token) (std::max_element(l, l + n_vocab) - l);
            decode_or_die(ctx, &best, 1);
        }
        if (r > 0) {
            dec.push_back(256 / (now() - t));
        }
    }
    printf("prefill threads=%d: %.1f tokens/s\n", threads, median(pre));
    printf("decode threads=%d: %.1f tokens/s\n", threads, median(dec));
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
