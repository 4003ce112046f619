// oracle-probe: a dry run of llama.cpp that reports exact bytes.
//
// Does what llama-fit-params' measurement primitive does (common/fit.cpp:
// common_get_device_memory_data_impl): parse the same command-line flags with the common
// argument parser, load the model with `no_alloc = true` and `load_mode = none`, create the
// context, and read `llama_get_memory_breakdown(ctx)` (src/llama-ext.h). Unlike
// `llama-fit-params -fitp on` (truncated MiB) it prints every buffer type in bytes, plus every
// library log line (the recorder parses layer->device, graph splits, KV cells from them).
// It never runs --fit: the flags given are the flags measured.
//
// usage: oracle-probe --oracle-tool server|completion [--oracle-real-load] [llama.cpp flags incl. -m and --rpc]
//   server:     flags parsed as llama-server (LLAMA_EXAMPLE_SERVER), `-np` absent = auto =
//               4 slots + unified KV (tools/server/server.cpp), n_outputs_max =
//               min(n_batch, n_parallel) (server-context.cpp: server_output_limits, no draft)
//   completion: flags parsed as llama-completion, n_outputs_max = 0 (= n_batch)
// Output: one JSON object on stdout.

#include "llama.h"
#include "../src/llama-ext.h"

#include "arg.h"
#include "common.h"

#include "ggml-backend.h"

#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

static std::vector<std::string> g_log;
static std::string g_partial;
static std::mutex g_mu;

static void capture(ggml_log_level level, const char * text, void * /*ud*/) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (level == GGML_LOG_LEVEL_CONT) {
        g_partial += text;
    } else {
        if (!g_partial.empty()) {
            g_log.push_back(g_partial);
        }
        g_partial = text;
    }
    // flush complete lines
    size_t pos;
    while ((pos = g_partial.find('\n')) != std::string::npos) {
        g_log.push_back(g_partial.substr(0, pos));
        g_partial.erase(0, pos + 1);
    }
}

static std::string jstr(const std::string & s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"':  o += "\\\""; break;
            case '\\': o += "\\\\"; break;
            case '\n': o += "\\n";  break;
            case '\t': o += "\\t";  break;
            case '\r': o += "\\r";  break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof(buf), "\\u%04x", c);
                    o += buf;
                } else {
                    o += (char) c;
                }
        }
    }
    return o + "\"";
}

static const char * dev_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU:   return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU:   return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU:  return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default:                             return "other";
    }
}

int main(int argc, char ** argv) {
    std::string tool = "server";
    bool real_load = false;
    std::vector<char *> args;
    args.push_back(argv[0]);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--oracle-tool") == 0 && i + 1 < argc) {
            tool = argv[++i];
        } else if (strcmp(argv[i], "--oracle-real-load") == 0) {
            // load for real (allocate, read weights) to compare against the dry run
            real_load = true;
        } else {
            args.push_back(argv[i]);
        }
    }
    if (tool != "server" && tool != "completion") {
        fprintf(stderr, "oracle-probe: --oracle-tool must be server or completion\n");
        return 2;
    }

    // capture everything the library and ggml log, at every level (debug included: that is
    // where load_tensors prints "layer %3d assigned to device %s")
    llama_log_set(capture, nullptr);
    ggml_log_set(capture, nullptr);

    common_params params;
    const llama_example ex = tool == "server" ? LLAMA_EXAMPLE_SERVER : LLAMA_EXAMPLE_COMPLETION;
    if (!common_params_parse((int) args.size(), args.data(), params, ex)) {
        fprintf(stderr, "oracle-probe: bad arguments\n");
        return 2;
    }
    // common_params_parse may install the common logger; take the logs back
    llama_log_set(capture, nullptr);
    ggml_log_set(capture, nullptr);

    llama_backend_init();

    if (tool == "server") {
        // tools/server/server.cpp: -np absent (-1 = auto) -> 4 slots + unified KV
        if (params.n_parallel < 0) {
            params.n_parallel = 4;
            params.kv_unified = true;
        }
        // tools/server/server-context.cpp: server_output_limits without a draft model
        // (common_speculative_get_output_limits(n_batch, n_parallel, 0))
        if (params.embedding) {
            params.n_outputs_max = params.n_batch;
        } else {
            params.n_outputs_max = std::max(1, std::min(params.n_batch, params.n_parallel));
        }
        params.n_outputs_max_per_seq = 1;
    }

    auto mparams = common_model_params_to_llama(params);
    auto cparams = common_context_params_to_llama(params);
    if (!real_load) {
        mparams.no_alloc  = true;
        mparams.load_mode = LLAMA_LOAD_MODE_NONE;
    }

    std::string error;
    llama_model * model = llama_model_load_from_file(params.model.path.c_str(), mparams);
    llama_context * ctx = nullptr;
    if (model == nullptr) {
        error = "failed to load model";
    } else {
        ctx = llama_init_from_model(model, cparams);
        if (ctx == nullptr) {
            error = "failed to create context";
        }
    }

    std::string o = "{";
    o += "\"probe\":1,\"tool\":" + jstr(tool);
    o += ",\"real_load\":" + std::string(real_load ? "true" : "false");
    o += ",\"n_parallel\":" + std::to_string(params.n_parallel);
    o += ",\"kv_unified\":" + std::string(params.kv_unified ? "true" : "false");
    o += ",\"n_outputs_max\":" + std::to_string(cparams.n_outputs_max);
    if (!error.empty()) {
        o += ",\"error\":" + jstr(error);
    }
    if (model != nullptr) {
        o += ",\"n_layer\":" + std::to_string(llama_model_n_layer(model));
        o += ",\"n_layer_nextn\":" + std::to_string(llama_model_n_layer_nextn(model));
        o += ",\"n_vocab\":" + std::to_string(llama_vocab_n_tokens(llama_model_get_vocab(model)));
        o += ",\"n_embd\":" + std::to_string(llama_model_n_embd(model));
        o += ",\"devices\":[";
        for (int i = 0; i < llama_model_n_devices(model); i++) {
            ggml_backend_dev_t dev = llama_model_get_device(model, i);
            size_t free = 0, total = 0;
            ggml_backend_dev_memory(dev, &free, &total);
            if (i) o += ",";
            o += "{\"name\":" + jstr(ggml_backend_dev_name(dev));
            o += ",\"description\":" + jstr(ggml_backend_dev_description(dev));
            o += ",\"type\":" + jstr(dev_type_name(ggml_backend_dev_type(dev)));
            o += ",\"buft\":" + jstr(ggml_backend_buft_name(ggml_backend_dev_buffer_type(dev)));
            o += ",\"total_bytes\":" + std::to_string(total);
            o += ",\"free_bytes\":" + std::to_string(free) + "}";
        }
        o += "]";
    }
    if (ctx != nullptr) {
        o += ",\"n_ctx\":" + std::to_string(llama_n_ctx(ctx));
        o += ",\"n_ctx_seq\":" + std::to_string(llama_n_ctx_seq(ctx));
        o += ",\"n_seq_max\":" + std::to_string(llama_n_seq_max(ctx));
        o += ",\"n_batch\":" + std::to_string(llama_n_batch(ctx));
        o += ",\"n_ubatch\":" + std::to_string(llama_n_ubatch(ctx));
        o += ",\"buffers\":[";
        bool first = true;
        for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            if (!first) o += ",";
            first = false;
            o += "{\"buft\":" + jstr(ggml_backend_buft_name(buft));
            o += ",\"device\":" + (dev ? jstr(ggml_backend_dev_name(dev)) : std::string("null"));
            o += ",\"is_host\":" + std::string(ggml_backend_buft_is_host(buft) ? "true" : "false");
            o += ",\"model\":" + std::to_string(mb.model);
            o += ",\"context\":" + std::to_string(mb.context);
            o += ",\"compute\":" + std::to_string(mb.compute) + "}";
        }
        o += "]";
    }
    {
        std::lock_guard<std::mutex> lock(g_mu);
        if (!g_partial.empty()) {
            g_log.push_back(g_partial);
            g_partial.clear();
        }
        o += ",\"log\":[";
        for (size_t i = 0; i < g_log.size(); i++) {
            if (i) o += ",";
            o += jstr(g_log[i]);
        }
        o += "]";
    }
    o += "}\n";
    fwrite(o.data(), 1, o.size(), stdout);
    fflush(stdout);

    // skip teardown: freeing a no_alloc context is not needed for the numbers and the process
    // exits anyway (xllamacpp's no_alloc teardown is known to crash, see oracle-howto.md)
    return error.empty() ? 0 : 1;
}
