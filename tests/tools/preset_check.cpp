// llama.cpp's own readers for what `ggplan emit` writes. Not built by cargo:
// compile it against a llama.cpp build (see tests/integration/emit_llamacpp.rs)
// and point GGPLAN_PRESET_CHECK at the binary.
//
//   preset_check ini FILE         load a --models-preset INI exactly as the
//                                 router does (common_preset_context for
//                                 LLAMA_EXAMPLE_SERVER, load_from_ini) and
//                                 print each preset's to_args(), one per line:
//                                 "[name] --long-flag value ..."
//   preset_check args ARGV...     parse a llama-server argv with the server's
//                                 option table (common_params_to_map) and
//                                 print it back the same way, as "[args] ..."
#include "arg.h"
#include "common.h"
#include "preset.h"

#include <cstdio>
#include <cstring>
#include <exception>

static void print(const common_preset & p) {
    printf("[%s]", p.name.c_str());
    for (const auto & a : p.to_args("")) {
        printf(" %s", a.c_str());
    }
    printf("\n");
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ini FILE | args ARGV...\n", argv[0]);
        return 2;
    }
    try {
        common_preset_context ctx(LLAMA_EXAMPLE_SERVER);
        if (strcmp(argv[1], "ini") == 0) {
            common_preset global;
            for (const auto & [name, p] : ctx.load_from_ini(argv[2], global)) {
                print(p);
            }
        } else {
            // argv[1] plays the program name for the parser.
            common_preset p = ctx.load_from_args(argc - 1, argv + 1);
            p.name = "args";
            print(p);
        }
    } catch (const std::exception & e) {
        printf("ERROR: %s\n", e.what());
        return 1;
    }
    return 0;
}
