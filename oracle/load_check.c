/* Minimal dry-run loader for oracle-gen: load each GGUF with no_alloc (no data read),
 * create a context, print a one-line summary; exit 1 if any file is refused. */
#include <stdio.h>
#include <string.h>
#include "llama.h"

static int quiet = 1;
static void log_cb(enum ggml_log_level level, const char * text, void * ud) {
    (void) ud;
    if (!quiet || level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

int main(int argc, char ** argv) {
    int bad = 0;
    llama_log_set(log_cb, NULL);
    llama_backend_init();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0) { quiet = 0; continue; }
        struct llama_model_params mp = llama_model_default_params();
        mp.no_alloc = true;
        mp.load_mode = LLAMA_LOAD_MODE_NONE;
        mp.use_extra_bufts = false;
        struct llama_model * m = llama_model_load_from_file(argv[i], mp);
        if (!m) { printf("REFUSED %s (model load)\n", argv[i]); bad = 1; continue; }
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 4096; cp.n_batch = 512; cp.n_ubatch = 512; cp.n_seq_max = 1;
        struct llama_context * c = llama_init_from_model(m, cp);
        char desc[256]; llama_model_desc(m, desc, sizeof desc);
        printf("%s %s: %s, %llu bytes, %llu params, n_layer %d\n", c ? "LOADED " : "NO-CTX ", argv[i], desc,
               (unsigned long long) llama_model_size(m), (unsigned long long) llama_model_n_params(m),
               llama_model_n_layer(m));
        if (!c) bad = 1; else llama_free(c);
        llama_model_free(m);
    }
    llama_backend_free();
    return bad;
}
