#!/usr/bin/env bash
# Cross-check the pinned b11434 build against the PyPI wheel xllamacpp 2026.10.11549 (an
# in-process llama-server, llama.cpp ~b11549): single-device (CPU) real loads of the sparse
# models, comparing every "... buffer size = X MiB" log line (2 decimals) and the graph split
# count. xllamacpp has no memory-breakdown API and no RPC, hence real loads and log lines.
#   oracle/xllamacpp_check.sh [model ...]      (default: the tiny models in $ORACLE_CACHE/oracle-gguf)
set -euo pipefail
CACHE=${ORACLE_CACHE:-/work/cache}
B=$CACHE/llama.cpp-b11434/build
VENV=$CACHE/xllama-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import xllamacpp' 2>/dev/null || "$VENV/bin/pip" install -q 'xllamacpp==2026.10.11549'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/xl.py" <<'PY'
import sys, xllamacpp as x
p = x.CommonParams()
p.model.path = sys.argv[1]
p.n_ctx = 4096
p.n_parallel = 1
p.n_gpu_layers = 0
p.fit_params = False
p.verbosity = 4
p.cpuparams.n_threads = 1
p.cpuparams_batch.n_threads = 1
p.warmup = False
x.Server(p)
import os
os._exit(0)  # skip the in-process server's teardown (it can hang or crash)
PY
norm='s/^[0-9.]+ [IWED] //; s/ +/ /g; s/nodes = [0-9]+, //; s/, input.*//'
models=("$@")
[ ${#models[@]} -gt 0 ] || models=($(cd "$CACHE/oracle-gguf" && ls *-tiny*.gguf | sed 's/\.gguf$//'))
status=0
for m in "${models[@]}"; do
  f=$CACHE/oracle-gguf/$m.gguf
  # each load runs in its own process (the in-process server is not torn down cleanly)
  { timeout 120 "$VENV/bin/python" "$tmp/xl.py" "$f" 2>&1 || true; } | grep -E 'buffer size =|graph: nodes' \
    | sed -E "$norm" | sort > "$tmp/$m.xl" || true
  "$B/oracle/oracle-probe" --oracle-tool server --oracle-real-load -m "$f" -fit off -c 4096 -np 1 -ngl 0 -t 1 \
    | python3 -c 'import json,sys; [print(l) for l in json.load(sys.stdin)["log"]]' \
    | grep -E 'buffer size =|graph: nodes' | sed -E "$norm" | sort > "$tmp/$m.b11434"
  if diff -q "$tmp/$m.xl" "$tmp/$m.b11434" >/dev/null; then
    echo "$m: identical ($(wc -l < "$tmp/$m.xl") lines)"
  else
    echo "$m: DIFFERENT"; diff "$tmp/$m.xl" "$tmp/$m.b11434" || true; status=1
  fi
done
exit $status
