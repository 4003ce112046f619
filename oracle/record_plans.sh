#!/usr/bin/env bash
# Record what llama.cpp b11434 allocates for the exact argv `ggplan plan` emits
# (tests/fixtures/oracle-plan/cases.txt on the fake RPC GPUs of
# tests/fixtures/oracle-plan/rpc-fake.toml) into tests/fixtures/oracle-plan/<model>/<slug>.json.
# Needs oracle/build.sh's build and the GGUFs of oracle/record.sh in $ORACLE_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
ORACLE_CACHE=${ORACLE_CACHE:-/work/cache}
dir=tests/fixtures/oracle-plan
cargo build --quiet --bin ggplan
cases=$(mktemp)
trap 'rm -f "$cases"' EXIT
grep -v '^#' "$dir/cases.txt" | while IFS='|' read -r slug model profile opts; do
    slug=$(echo $slug); model=$(echo $model); profile=$(echo $profile)
    # shellcheck disable=SC2086 # opts is a word list
    target/debug/ggplan plan "$profile" --hw "$dir/rpc-fake.toml" $opts --json |
        python3 -c 'import json,sys; v=json.load(sys.stdin); print(json.dumps({"model": sys.argv[1], "slug": sys.argv[2], "args": v["argv"], "n_dev": 3}))' "$model" "$slug"
done | python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in sys.stdin]))' >"$cases"
"$ORACLE_CACHE/oracle-venv/bin/python" oracle/record.py --cases-json "$cases" --out "$dir" \
    --port-base 50140 --no-fit --gguf-dir "$ORACLE_CACHE/oracle-gguf"
