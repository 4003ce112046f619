#!/usr/bin/env python3
"""Check the generator's ftype quant mix against llama.cpp's real quantizer.

For each spec with `[quant] ftype`, write an F16 "as converted" source file (quantizable
tensors F16, the rest F32, data all zeros from the sparse hole), run libllama's
`llama_model_quantize` on it with the spec's ftype, and compare the result's tensor table
(order, shapes, types) with what gen_gguf.py writes for the spec. Sources up to --max-bytes
are really quantized (the output file is read back); larger ones use the quantizer's
`dry_run` (same type decisions, no data read) and the types are parsed from its log
(`[ i/ n] name - [shape], type = f16, size = ... (q4_K)`).

    python oracle/quant_check.py [--lib /work/cache/llama.cpp-b11434/build/bin/libllama.so]
                                 [--max-bytes 2e9] [SPEC.toml ...]
"""

from __future__ import annotations

import argparse
import copy
import ctypes as C
import re
import sys
import tempfile
from pathlib import Path

from gguf import GGUFReader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_gguf as G  # noqa: E402


class QuantizeParams(C.Structure):
    # include/llama.h `llama_model_quantize_params` (b11434)
    _fields_ = [
        ("nthread", C.c_int32),
        ("ftype", C.c_int),
        ("output_tensor_type", C.c_int),
        ("token_embedding_type", C.c_int),
        ("allow_requantize", C.c_bool),
        ("quantize_output_tensor", C.c_bool),
        ("only_copy", C.c_bool),
        ("pure", C.c_bool),
        ("keep_split", C.c_bool),
        ("dry_run", C.c_bool),
        ("imatrix", C.c_void_p),
        ("kv_overrides", C.c_void_p),
        ("tt_overrides", C.c_void_p),
        ("prune_layers", C.c_void_p),
        ("max_buf_size", C.c_size_t),
    ]


LOG_CB = C.CFUNCTYPE(None, C.c_int, C.c_char_p, C.c_void_p)
_log: list[str] = []


@LOG_CB
def _log_cb(level, text, user):  # noqa: ARG001
    _log.append(text.decode(errors="replace"))


LINE = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[([^\]]*)\], type =\s*(\w+), .*?size = [^\n]*?(?:\((\w+)\))?\n")


def parse_dry_run(text: str) -> list[tuple[str, list[int], str]]:
    out = []
    for m in LINE.finditer(text):
        name, shape, cur, new = m.groups()
        ne = [int(x) for x in shape.split(",")]
        while len(ne) > 1 and ne[-1] == 1:
            ne.pop()
        out.append((name, ne, (new or cur).upper()))
    return out


def source_spec(spec: dict) -> dict:
    src = copy.deepcopy(spec)
    src["quant"] = {"default": "F16"}
    return src


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", type=Path)
    ap.add_argument("--lib", type=Path, default=Path("/work/cache/llama.cpp-b11434/build/bin/libllama.so"))
    ap.add_argument("--max-bytes", type=float, default=2e9,
                    help="use the quantizer's dry_run for specs whose F16 source is larger")
    ap.add_argument("--tmp", type=Path, default=Path("/work/cache/oracle-quant-check"))
    args = ap.parse_args()

    lib = C.CDLL(str(args.lib))
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize.argtypes = [C.c_char_p, C.c_char_p, C.POINTER(QuantizeParams)]
    lib.llama_model_quantize.restype = C.c_uint32
    lib.llama_backend_init()
    lib.llama_log_set(_log_cb, None)

    args.tmp.mkdir(parents=True, exist_ok=True)
    bad = 0
    for p in args.specs or G.all_specs():
        spec = G.load_spec(p)
        ftype = spec["quant"].get("ftype")
        if ftype is None:
            continue
        want = G.build(spec)
        src = G.build(source_spec(spec))
        size = sum(G.nbytes(t.type, t.ne) for t in src.tensors)
        dry = size > args.max_bytes
        with tempfile.TemporaryDirectory(dir=args.tmp) as d:
            fin, fout = Path(d) / "src.gguf", Path(d) / "out.gguf"
            G.write(src, fin)
            params = lib.llama_model_quantize_default_params()
            params.ftype = G.FTYPES[ftype]
            params.nthread = 2
            params.dry_run = dry
            _log.clear()
            rc = lib.llama_model_quantize(str(fin).encode(), str(fout).encode(), C.byref(params))
            if rc != 0:
                bad += 1
                print(f"FAIL {spec['name']}: llama_model_quantize returned {rc}")
                continue
            if dry:
                got = parse_dry_run("".join(_log))
            else:
                r = GGUFReader(fout)
                got = [(t.name, [int(x) for x in t.shape], t.tensor_type.name) for t in r.tensors]
        exp = [(t.name, t.ne, t.type.name) for t in want.tensors]
        diffs = [(g, e) for g, e in zip(got, exp) if g != e]
        if len(got) != len(exp) or diffs:
            bad += 1
            print(f"FAIL {spec['name']} ({ftype}): {len(got)} vs {len(exp)} tensors, {len(diffs)} differ")
            for g, e in diffs[:20]:
                print(f"     llama-quantize {g}  generator {e}")
        else:
            how = "dry_run log" if dry else "output file"
            print(f"ok   {spec['name']} ({ftype}): {len(got)} tensors identical to llama_model_quantize ({how})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
