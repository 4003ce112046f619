// LD_PRELOAD shim: makes a process (ggml-rpc-server) believe the machine has
// $FAKEMEM_MIB MiB of physical memory, all of it free. The ggml CPU device reports its
// memory from sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE) (ggml-cpu.cpp:
// ggml_backend_cpu_device_get_memory), and an RPC server reports its CPU device's memory to
// the client, so each server becomes a fake GPU of a chosen size (RPC0, RPC1, ...).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

long sysconf(int name) {
    static long (*real)(int) = 0;
    if (!real) real = (long (*)(int)) dlsym(RTLD_NEXT, "sysconf");
    if (name == _SC_PHYS_PAGES || name == _SC_AVPHYS_PAGES) {
        const char *mib = getenv("FAKEMEM_MIB");
        if (mib && *mib) {
            long page = real(_SC_PAGE_SIZE);
            return (long) (strtoll(mib, 0, 10) * 1024LL * 1024LL / page);
        }
    }
    return real(name);
}
