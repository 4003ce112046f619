#!/usr/bin/env python3
"""Read every generated sparse GGUF back with gguf-py's GGUFReader and check it.

    python oracle/check_specs.py --out /work/cache/oracle-gguf [--generate]

Checks, per spec (exit status 1 on any failure):
  * the tensor table read back equals the generator's (names, order, ggml shapes, types) and
    the metadata keys it wrote are present with the right values;
  * the layout is what llama.cpp's gguf loader expects: offsets start at 0, each tensor at the
    previous one's offset + PAD(nbytes, general.alignment), the file size is exactly
    data_offset + sum of padded sizes (so mmap spans match a real file), nbytes = row_size
    formula of llama-internals.md §2.2;
  * independent shape invariants derived from the hparams, not from the builder (token_embd,
    output, expert count, MLA split, NextN block, hybrid layer kinds, ...);
  * the data region is a hole (disk usage far below the apparent size).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUFReader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_gguf as G  # noqa: E402


class Fail(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def field_value(r: GGUFReader, key: str):
    f = r.fields.get(key)
    if f is None:
        return None
    if len(f.data) == 1:
        v = f.parts[f.data[0]]
        if v.dtype.kind == "u" and v.dtype.itemsize == 1 and len(v) != 1:
            return bytes(v).decode()
        return v.tolist()[0] if len(v) == 1 else bytes(v).decode()
    return [f.parts[i].tolist()[0] for i in f.data]


def invariants(b: G.Built, tensors: dict[str, list[int]]) -> None:
    hp = G.HP(b.spec["hparams"])
    E, V, L = hp.n_embd, hp.n_vocab, hp.n_layer
    expect(tensors.get("token_embd.weight") == [E, V], "token_embd must be [n_embd, n_vocab]")
    tied = hp.get("tied_output", False) and b.arch != "gpt-oss"
    if b.arch == "lfm2":
        tied = hp.get("tied_output", True)
    expect(("output.weight" in tensors) == (not tied), "output.weight presence must follow tied_output")
    if not tied:
        expect(tensors["output.weight"] == [E, V], "output must be [n_embd, n_vocab]")
    blocks = {int(n.split(".")[1]) for n in tensors if n.startswith("blk.")}
    expect(blocks == set(range(L)), f"blocks {sorted(blocks)} != 0..{L - 1}")
    X = hp.get("n_expert", 0)
    for n, ne in tensors.items():
        if n.endswith("_exps.weight"):
            expect(len(ne) == 3 and ne[2] == X, f"{n}: expert dim {ne} != n_expert {X}")
            expect(ne[0] == E or ne[1] == E, f"{n}: neither ne0 nor ne1 is n_embd")
    n_main = L - hp.get("n_nextn", 0)
    for i in range(n_main, L):
        expect(tensors.get(f"blk.{i}.nextn.eh_proj.weight") == [2 * E, E], f"blk.{i}: NextN eh_proj missing")
    for i in range(n_main):
        expect(f"blk.{i}.nextn.eh_proj.weight" not in tensors, f"blk.{i}: NextN tensor in a trunk block")
    if b.arch == "deepseek2":
        H = hp.n_head
        for i in range(L):
            expect(tensors[f"blk.{i}.attn_k_b.weight"] == [hp.qk_nope_head_dim, hp.kv_lora_rank, H], "attn_k_b shape")
            expect(tensors[f"blk.{i}.attn_v_b.weight"] == [hp.kv_lora_rank, hp.v_head_dim, H], "attn_v_b shape")
            expect(tensors[f"blk.{i}.attn_kv_a_mqa.weight"] == [E, hp.kv_lora_rank + hp.qk_rope_head_dim], "kv_a_mqa shape")
            expect(f"blk.{i}.attn_kv_b.weight" not in tensors, "legacy attn_kv_b present")
    if b.arch == "qwen3next":
        interval = hp.get("full_attention_interval", 4)
        for i in range(L):
            rec = i < n_main and (i + 1) % interval != 0
            expect((f"blk.{i}.ssm_out.weight" in tensors) == rec, f"blk.{i}: GDN tensors vs recurrent layer")
            expect((f"blk.{i}.attn_q.weight" in tensors) == (not rec), f"blk.{i}: attention tensors")
    if b.arch == "nemotron_h_moe":
        for i, c in enumerate(hp.hybrid_pattern):
            expect((f"blk.{i}.ssm_in.weight" in tensors) == (c == "M"), f"blk.{i}: mamba tensors vs pattern {c}")
            expect((f"blk.{i}.attn_q.weight" in tensors) == (c == "*"), f"blk.{i}: attention tensors vs pattern {c}")
            expect((f"blk.{i}.ffn_up_exps.weight" in tensors) == (c == "E"), f"blk.{i}: MoE tensors vs pattern {c}")
    if b.arch == "gpt-oss":
        for i in range(L):
            expect(tensors[f"blk.{i}.attn_sinks.weight"] == [hp.n_head], "attn_sinks shape")


def check(spec_path: Path, out: Path) -> str:
    b = G.build(G.load_spec(spec_path))
    path = out / f"{b.name}.gguf"
    expect(path.exists(), f"{path} missing (run gen_gguf.py --all)")
    r = GGUFReader(path)
    align = field_value(r, "general.alignment") or 32
    expect(field_value(r, "general.architecture") == b.arch, "general.architecture")
    expect(field_value(r, "tokenizer.ggml.model") == "none", "tokenizer.ggml.model must be none")
    for key, (typ, val) in b.kv.items():
        got = field_value(r, key)
        if typ == "f32":
            expect(got is not None and abs(got - float(val)) <= 1e-6 * max(1.0, abs(float(val))), f"{key}: {got} != {val}")
        elif typ.startswith("arr"):
            expect(got == [type(got[0])(x) for x in val] if got else not val, f"{key}: {got} != {val}")
        else:
            expect(got == val, f"{key}: {got} != {val}")
    expect(len(r.tensors) == len(b.tensors), f"tensor count {len(r.tensors)} != {len(b.tensors)}")
    data_offset = r.tensors[0].data_offset if r.tensors else 0
    expect(data_offset % align == 0, "data section not aligned")
    off = 0
    read: dict[str, list[int]] = {}
    for want, got in zip(b.tensors, r.tensors):
        shape = [int(x) for x in got.shape]
        expect(got.name == want.name, f"order: {got.name} != {want.name}")
        expect(shape == want.ne, f"{got.name}: shape {shape} != {want.ne}")
        expect(got.tensor_type == want.type, f"{got.name}: type {got.tensor_type.name} != {want.type.name}")
        blck, size = GGML_QUANT_SIZES[want.type]
        nb = shape[0] // blck * size
        for d in shape[1:]:
            nb *= d
        expect(got.n_bytes == nb, f"{got.name}: nbytes {got.n_bytes} != {nb}")
        expect(got.data_offset - data_offset == off, f"{got.name}: offset {got.data_offset - data_offset} != {off}")
        off += G.pad(nb, align)
        read[got.name] = shape
    st = os.stat(path)
    expect(st.st_size == data_offset + off, f"file size {st.st_size} != {data_offset + off}")
    expect(st.st_blocks * 512 < 4 * 1024 * 1024, f"not sparse: {st.st_blocks * 512} bytes on disk")
    invariants(b, read)
    return f"{b.name}: {len(r.tensors)} tensors, {st.st_size:,} bytes, {st.st_blocks * 512:,} on disk"


def compare_real(spec_path: Path, real: Path) -> str:
    """The spec must reproduce a real file's tensor table exactly (same offsets relative to
    the data section, so the same mmap spans), whatever the metadata."""
    b = G.build(G.load_spec(spec_path))
    r = GGUFReader(real)
    expect(len(r.tensors) == len(b.tensors), f"tensor count {len(b.tensors)} != real {len(r.tensors)}")
    base = r.tensors[0].data_offset
    off = 0
    for want, got in zip(b.tensors, r.tensors):
        shape = [int(x) for x in got.shape]
        expect(got.name == want.name, f"order: real {got.name} vs spec {want.name}")
        expect(shape == want.ne, f"{got.name}: real shape {shape} vs spec {want.ne}")
        expect(got.tensor_type == want.type, f"{got.name}: real {got.tensor_type.name} vs spec {want.type.name}")
        expect(got.data_offset - base == off, f"{got.name}: real offset {got.data_offset - base} vs {off}")
        off += G.pad(G.nbytes(want.type, want.ne), 32)
    return f"{b.name} == {real.name}: {len(r.tensors)} tensors, {off:,} data bytes identical"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/work/cache/oracle-gguf"))
    ap.add_argument("--generate", action="store_true", help="(re)generate before checking")
    ap.add_argument("--real", action="append", default=[], metavar="SPEC=GGUF",
                    help="also compare spec SPEC's tensor table with a real GGUF (names, order, "
                         "shapes, types, relative offsets), e.g. gemma3-270m-q4_k_m="
                         "/work/cache/oracle-gguf-real/gemma-3-270m-real.gguf")
    args = ap.parse_args()
    paths = args.specs or G.all_specs()
    if args.generate:
        G.main([str(p) for p in paths] + ["--out", str(args.out)])
    bad = 0
    for p in paths:
        try:
            print("ok  ", check(p, args.out))
        except Fail as e:
            bad += 1
            print(f"FAIL {p.stem}: {e}")
    for pair in args.real:
        name, _, real = pair.partition("=")
        try:
            print("ok  ", compare_real(G.SPEC_DIR / f"{name}.toml", Path(real)))
        except Fail as e:
            bad += 1
            print(f"FAIL {name} vs {real}: {e}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
