// Dumps llama.cpp's logits at every position of a few prompts, for the
// reference test of the verinfer engine (crates/inference/tests/llama_reference.rs).
//
//     llama_logits MODEL.gguf PROMPT...
//
// A PROMPT is `ids:1,2,3` (token ids) or text, tokenised by llama.cpp with
// special tokens parsed and BOS added when the vocabulary asks for it (as
// the engine's tokenizer does). Each prompt runs in a fresh context
// as one batch with logits for every position. Output (stdout, text):
//
//     system <llama_print_system_info()>
//     vocab <n>
//     prompt <n_tokens> <id> <id> ...
//     row <position> <logit> <logit> ... (vocab values, %.9g: exact f32)
//
// The KV cache is kept in F32 and flash attention is off, as in the engine,
// so the gap measured is that of the matrix products and the norms.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void quiet(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

static std::vector<llama_token> parse_prompt(const llama_vocab * vocab, const std::string & arg) {
    std::vector<llama_token> out;
    if (arg.rfind("ids:", 0) == 0) {
        const char * p = arg.c_str() + 4;
        while (*p) {
            char * end = nullptr;
            long v = strtol(p, &end, 10);
            if (end == p) {
                fprintf(stderr, "bad token list: %s\n", arg.c_str());
                exit(2);
            }
            out.push_back((llama_token) v);
            p = *end == ',' ? end + 1 : end;
        }
        return out;
    }
    int n = -llama_tokenize(vocab, arg.c_str(), (int32_t) arg.size(), nullptr, 0, llama_vocab_get_add_bos(vocab), true);
    out.resize(n);
    if (llama_tokenize(vocab, arg.c_str(), (int32_t) arg.size(), out.data(), n, llama_vocab_get_add_bos(vocab), true) != n) {
        fprintf(stderr, "tokenize failed: %s\n", arg.c_str());
        exit(2);
    }
    return out;
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT...\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    printf("system %s\n", llama_print_system_info());
    printf("vocab %d\n", n_vocab);
    for (int a = 2; a < argc; a++) {
        std::vector<llama_token> toks = parse_prompt(vocab, argv[a]);
        const int n = (int) toks.size();
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 512;
        cp.n_batch = 512;
        cp.n_ubatch = 512;
        cp.n_threads = 1;
        cp.n_threads_batch = 1;
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx || n == 0 || n > 512) {
            fprintf(stderr, "cannot run prompt %d (%d tokens)\n", a - 1, n);
            return 1;
        }
        llama_batch batch = llama_batch_init(n, 0, 1);
        for (int i = 0; i < n; i++) {
            batch.token[i] = toks[i];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;
        }
        batch.n_tokens = n;
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llama_decode failed on prompt %d\n", a - 1);
            return 1;
        }
        printf("prompt %d", n);
        for (llama_token t : toks) {
            printf(" %d", t);
        }
        printf("\n");
        for (int i = 0; i < n; i++) {
            const float * l = llama_get_logits_ith(ctx, i);
            printf("row %d", i);
            for (int v = 0; v < n_vocab; v++) {
                printf(" %.9g", l[v]);
            }
            printf("\n");
        }
        llama_batch_free(batch);
        llama_free(ctx);
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
