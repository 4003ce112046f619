#!/usr/bin/env python3
"""Write header-only *sparse* GGUFs from the TOML specs in oracle/specs/.

A generated file holds the metadata and the tensor infos (names, shapes, types) that
llama.cpp b11434 expects for the spec's architecture; the data region is a hole made by
truncate()-ing the file to its full apparent size (data_offset + sum PAD(nbytes, alignment)).
Such files load in llama.cpp dry runs (`llama-fit-params -nr`, no_alloc) and give exactly the
byte sizes of a real file with the same tensor table (see /work/shared/notes/oracle-howto.md,
"Header-only sparse GGUFs").

Usage:
    python oracle/gen_gguf.py --all --out /work/cache/oracle-gguf
    python oracle/gen_gguf.py oracle/specs/llama-tiny.toml --out DIR
    python oracle/gen_gguf.py --all --list            # print the tensor table, write nothing

Tensor lists mirror `load_arch_tensors` in llama.cpp b11434 src/models/<arch>.cpp; metadata keys
mirror `llama_model_base::load_hparams` (src/llama-model.cpp) and each arch's
`load_arch_hparams`. The quant mix either comes from an explicit per-kind table or from
`ftype`, a port of `llama_tensor_get_type` (src/llama-quant.cpp) for the k-quant / Q8_0 /
MXFP4_MOE ftypes.

Needs the PyPI `gguf` package (gguf-py 0.19; venv /work/cache/venv-oracle).
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, GGUFWriter

HERE = Path(__file__).resolve().parent
SPEC_DIR = HERE / "specs"
ALIGNMENT = 32  # general.alignment default (ggml gguf.h GGUF_DEFAULT_ALIGNMENT)

QT = GGMLQuantizationType

# llama_ftype values (include/llama.h) for general.file_type.
FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q5_0": 8,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13,
    "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
    "BF16": 32, "MXFP4_MOE": 38,
}
# llama_ftype_get_default_type (src/llama-quant.cpp)
FTYPE_DEFAULT = {
    "F32": QT.F32, "F16": QT.F16, "BF16": QT.BF16, "Q4_0": QT.Q4_0, "Q5_0": QT.Q5_0, "Q8_0": QT.Q8_0,
    "Q2_K": QT.Q2_K, "Q3_K_S": QT.Q3_K, "Q3_K_M": QT.Q3_K, "Q3_K_L": QT.Q3_K,
    "Q4_K_S": QT.Q4_K, "Q4_K_M": QT.Q4_K, "Q5_K_S": QT.Q5_K, "Q5_K_M": QT.Q5_K, "Q6_K": QT.Q6_K,
    "MXFP4_MOE": QT.MXFP4,
}


def qtype(name: str) -> QT:
    try:
        return QT[name.upper()]
    except KeyError:
        raise SystemExit(f"unknown ggml type {name!r}") from None


def nbytes(t: QT, ne: list[int]) -> int:
    blck, size = GGML_QUANT_SIZES[t]
    if ne[0] % blck != 0:
        raise ValueError(f"ne0={ne[0]} not a multiple of the {t.name} block size {blck}")
    n = ne[0] // blck * size
    for d in ne[1:]:
        n *= d
    return n


def pad(x: int, n: int) -> int:
    return (x + n - 1) // n * n


# --------------------------------------------------------------------------------------------
# Tensor table
# --------------------------------------------------------------------------------------------


@dataclass
class Tensor:
    name: str           # full GGUF name, e.g. blk.3.ffn_down_exps.weight
    ne: list[int]       # ggml order (ne0 first), exactly as in create_tensor(..., {ne0, ne1, ...})
    type: QT | None = None

    @property
    def kind(self) -> str:
        """Name without `blk.N.` and without the `.weight` suffix (biases keep `.bias`)."""
        n = self.name
        if n.startswith("blk."):
            n = n.split(".", 2)[2]
        if n.endswith(".weight"):
            n = n[: -len(".weight")]
        return n

    @property
    def layer(self) -> int | None:
        if self.name.startswith("blk."):
            return int(self.name.split(".")[1])
        return None


class Table:
    def __init__(self) -> None:
        self.tensors: list[Tensor] = []

    def add(self, name: str, ne: list[int], type_: QT | None = None) -> None:
        ne = [int(x) for x in ne]
        assert all(x > 0 for x in ne), (name, ne)
        self.tensors.append(Tensor(name, ne, type_))

    def blk(self, i: int, name: str, ne: list[int], suffix: str = "weight", type_: QT | None = None) -> None:
        self.add(f"blk.{i}.{name}.{suffix}", ne, type_)


# --------------------------------------------------------------------------------------------
# Spec access
# --------------------------------------------------------------------------------------------


class HP:
    """Spec hyperparameters with per-layer helpers."""

    def __init__(self, d: dict) -> None:
        self.d = d

    def __getattr__(self, k: str):
        try:
            return self.d[k]
        except KeyError:
            raise SystemExit(f"spec hparams lack {k!r}") from None

    def get(self, k: str, default=None):
        return self.d.get(k, default)

    def per_layer(self, k: str, il: int, default=None):
        v = self.d.get(k, default)
        if isinstance(v, list):
            return v[il]
        return v


# --------------------------------------------------------------------------------------------
# Per-architecture tensor lists (mirror src/models/<arch>.cpp load_arch_tensors, b11434)
# and metadata (mirror load_hparams + load_arch_hparams).
# --------------------------------------------------------------------------------------------


def common_kv(arch: str, hp: HP) -> dict:
    kv = {
        f"{arch}.context_length": ("u32", hp.context_length),
        f"{arch}.embedding_length": ("u32", hp.n_embd),
        f"{arch}.block_count": ("u32", hp.n_layer),
        f"{arch}.vocab_size": ("u32", hp.n_vocab),
        f"{arch}.attention.layer_norm_rms_epsilon": ("f32", hp.get("rms_eps", 1e-6)),
        f"{arch}.rope.freq_base": ("f32", hp.get("rope_freq_base", 10000.0)),
    }
    for k, key in (("n_head", "attention.head_count"), ("n_head_kv", "attention.head_count_kv"),
                   ("n_ff", "feed_forward_length")):
        v = hp.get(k)
        if v is None:
            continue
        kv[f"{arch}.{key}"] = ("arr_i32" if isinstance(v, list) else "u32", v)
    if hp.get("head_dim") is not None:
        kv[f"{arch}.attention.key_length"] = ("u32", hp.get("key_length", hp.head_dim))
        kv[f"{arch}.attention.value_length"] = ("u32", hp.get("value_length", hp.head_dim))
    if hp.get("n_rot") is not None:
        kv[f"{arch}.rope.dimension_count"] = ("u32", hp.n_rot)
    if hp.get("n_expert"):
        kv[f"{arch}.expert_count"] = ("u32", hp.n_expert)
        kv[f"{arch}.expert_used_count"] = ("u32", hp.n_expert_used)
    if hp.get("n_ff_exp") is not None:
        kv[f"{arch}.expert_feed_forward_length"] = ("u32", hp.n_ff_exp)
    if hp.get("n_expert_shared") is not None:
        kv[f"{arch}.expert_shared_count"] = ("u32", hp.n_expert_shared)
    if hp.get("n_ff_shexp") is not None:
        kv[f"{arch}.expert_shared_feed_forward_length"] = ("u32", hp.n_ff_shexp)
    if hp.get("n_layer_dense_lead") is not None:
        kv[f"{arch}.leading_dense_block_count"] = ("u32", hp.n_layer_dense_lead)
    if hp.get("n_nextn"):
        kv[f"{arch}.nextn_predict_layers"] = ("u32", hp.n_nextn)
    if hp.get("expert_gating_func") is not None:
        # llama_expert_gating_func_type: 1 = softmax, 2 = sigmoid, 3 = softmax_weight
        kv[f"{arch}.expert_gating_func"] = ("u32", hp.expert_gating_func)
    if hp.get("expert_weights_norm") is not None:
        kv[f"{arch}.expert_weights_norm"] = ("bool", hp.expert_weights_norm)
    if hp.get("expert_weights_scale") is not None:
        kv[f"{arch}.expert_weights_scale"] = ("f32", hp.expert_weights_scale)
    if hp.get("sliding_window") is not None:
        kv[f"{arch}.attention.sliding_window"] = ("u32", hp.sliding_window)
    if hp.get("swa_pattern") is not None:
        v = hp.swa_pattern
        kv[f"{arch}.attention.sliding_window_pattern"] = ("arr_bool" if isinstance(v, list) else "u32", v)
    for k, key in (("ssm_d_conv", "ssm.conv_kernel"), ("ssm_d_inner", "ssm.inner_size"),
                   ("ssm_d_state", "ssm.state_size"), ("ssm_dt_rank", "ssm.time_step_rank"),
                   ("ssm_n_group", "ssm.group_count")):
        if hp.get(k) is not None:
            kv[f"{arch}.{key}"] = ("u32", hp.get(k))
    return kv


def out_tensors(t: Table, hp: HP, *, allow_tied: bool = True) -> None:
    t.add("output_norm.weight", [hp.n_embd])
    if not (allow_tied and hp.get("tied_output", False)):
        t.add("output.weight", [hp.n_embd, hp.n_vocab])


def qkv(t: Table, i: int, n_embd: int, n_q: int, n_k: int, n_v: int, bias: bool = False) -> None:
    """create_tensor_qkv (llama-model.cpp): separate Q/K/V (the converter's usual output)."""
    t.blk(i, "attn_q", [n_embd, n_q])
    t.blk(i, "attn_k", [n_embd, n_k])
    t.blk(i, "attn_v", [n_embd, n_v])
    if bias:
        t.blk(i, "attn_q", [n_q], "bias")
        t.blk(i, "attn_k", [n_k], "bias")
        t.blk(i, "attn_v", [n_v], "bias")


def build_llama(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/llama.cpp load_arch_tensors
    E, V = hp.n_embd, hp.n_vocab
    dk = hp.get("head_dim", E // hp.n_head)
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "attn_norm", [E])
        qkv(t, i, E, dk * hp.n_head, dk * hp.n_head_kv, dk * hp.n_head_kv)
        t.blk(i, "attn_output", [dk * hp.n_head, E])
        t.blk(i, "ffn_norm", [E])
        if hp.get("n_expert", 0) == 0:
            t.blk(i, "ffn_gate", [E, hp.n_ff])
            t.blk(i, "ffn_down", [hp.n_ff, E])
            t.blk(i, "ffn_up", [E, hp.n_ff])
        else:
            raise SystemExit("llama MoE (mixtral) not supported by this generator")
    if hp.get("rope_freqs", False):
        # llama3 rope scaling factors: one tensor, created per layer with TENSOR_DUPLICATED
        t.add("rope_freqs.weight", [dk // 2])
    out_tensors(t, hp)
    kv = common_kv(arch, hp)
    kv[f"{arch}.rope.dimension_count"] = ("u32", dk)  # llama asserts n_rot == head dim
    return t, kv


def build_qwen3(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/qwen3.cpp / qwen3moe.cpp load_arch_tensors
    E, V = hp.n_embd, hp.n_vocab
    dk = hp.head_dim
    moe = arch == "qwen3moe"
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "attn_norm", [E])
        qkv(t, i, E, dk * hp.n_head, dk * hp.n_head_kv, dk * hp.n_head_kv)
        t.blk(i, "attn_output", [dk * hp.n_head, E])
        t.blk(i, "attn_k_norm", [dk])
        t.blk(i, "attn_q_norm", [dk])
        t.blk(i, "ffn_norm", [E])
        if moe:
            F, X = hp.n_ff_exp, hp.n_expert
            t.blk(i, "ffn_gate_inp", [E, X])
            t.blk(i, "ffn_gate_exps", [E, F, X])
            t.blk(i, "ffn_down_exps", [F, E, X])
            t.blk(i, "ffn_up_exps", [E, F, X])
        else:
            t.blk(i, "ffn_gate", [E, hp.n_ff])
            t.blk(i, "ffn_down", [hp.n_ff, E])
            t.blk(i, "ffn_up", [E, hp.n_ff])
    out_tensors(t, hp)
    return t, common_kv(arch, hp)



def moe_ffn(t: Table, i: int, E: int, F: int, X: int, *, gate: bool = True) -> None:
    """Routed experts as the converter writes them: separate gate/up/down 3-D tensors
    (create_tensor_gate_up_exps falls back to them when ffn_gate_up_exps is absent)."""
    if gate:
        t.blk(i, "ffn_gate_exps", [E, F, X])
    t.blk(i, "ffn_down_exps", [F, E, X])
    t.blk(i, "ffn_up_exps", [E, F, X])


def shexp_ffn(t: Table, i: int, E: int, F: int, *, gate: bool = True) -> None:
    if gate:
        t.blk(i, "ffn_gate_shexp", [E, F])
    t.blk(i, "ffn_down_shexp", [F, E])
    t.blk(i, "ffn_up_shexp", [E, F])


def dense_ffn(t: Table, i: int, E: int, F: int) -> None:
    t.blk(i, "ffn_gate", [E, F])
    t.blk(i, "ffn_down", [F, E])
    t.blk(i, "ffn_up", [E, F])


def nextn_tensors(t: Table, i: int, E: int, V: int, hp: HP) -> None:
    """NextN/MTP block extras (LLM_TENSOR_NEXTN_*). embed_tokens / shared_head_head are optional
    in llama.cpp and absent from GLM/DeepSeek/Qwen3-Next checkpoints (shared with the trunk);
    `nextn_full_head = true` adds them."""
    t.blk(i, "nextn.eh_proj", [2 * E, E])
    t.blk(i, "nextn.enorm", [E])
    t.blk(i, "nextn.hnorm", [E])
    t.blk(i, "nextn.shared_head_norm", [E])
    if hp.get("nextn_full_head", False):
        t.blk(i, "nextn.embed_tokens", [E, V])
        t.blk(i, "nextn.shared_head_head", [E, V])


def build_deepseek2(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/deepseek2.cpp load_arch_tensors (MLA with the split attn_k_b/attn_v_b of
    # current converters: conversion/deepseek.py DeepseekV2Model.modify_tensors)
    E, V, H = hp.n_embd, hp.n_vocab, hp.n_head
    nope, rope, dv = hp.qk_nope_head_dim, hp.qk_rope_head_dim, hp.v_head_dim
    kv_lora, q_lora = hp.kv_lora_rank, hp.get("q_lora_rank", 0)
    dk_mla = nope + rope
    n_main = hp.n_layer - hp.get("n_nextn", 0)
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "attn_norm", [E])
        if q_lora:
            t.blk(i, "attn_q_a_norm", [q_lora])
        t.blk(i, "attn_kv_a_norm", [kv_lora])
        if q_lora:
            t.blk(i, "attn_q_a", [E, q_lora])
            t.blk(i, "attn_q_b", [q_lora, H * dk_mla])
        else:
            t.blk(i, "attn_q", [E, H * dk_mla])
        t.blk(i, "attn_kv_a_mqa", [E, kv_lora + rope])
        t.blk(i, "attn_k_b", [nope, kv_lora, H])
        t.blk(i, "attn_v_b", [kv_lora, dv, H])
        t.blk(i, "attn_output", [H * dv, E])
        t.blk(i, "ffn_norm", [E])
        if i < hp.n_layer_dense_lead:
            dense_ffn(t, i, E, hp.n_ff)
        else:
            t.blk(i, "ffn_gate_inp", [E, hp.n_expert])
            if hp.get("exp_probs_b", True):
                t.blk(i, "exp_probs_b", [hp.n_expert], "bias")
            moe_ffn(t, i, E, hp.n_ff_exp, hp.n_expert)
            shexp_ffn(t, i, E, hp.n_ff_exp * hp.n_expert_shared)
        if i >= n_main:
            nextn_tensors(t, i, E, V, hp)
    out_tensors(t, hp)
    kv = common_kv(arch, hp)
    # conversion/deepseek.py: MLA is written as MQA with 576-wide keys (kv_lora + rope)
    kv[f"{arch}.attention.head_count_kv"] = ("u32", 1)
    kv[f"{arch}.attention.key_length"] = ("u32", kv_lora + rope)
    kv[f"{arch}.attention.value_length"] = ("u32", kv_lora)
    kv[f"{arch}.attention.key_length_mla"] = ("u32", dk_mla)
    kv[f"{arch}.attention.value_length_mla"] = ("u32", dv)
    kv[f"{arch}.attention.kv_lora_rank"] = ("u32", kv_lora)
    if q_lora:
        kv[f"{arch}.attention.q_lora_rank"] = ("u32", q_lora)
    kv[f"{arch}.rope.dimension_count"] = ("u32", rope)
    kv.setdefault(f"{arch}.expert_shared_count", ("u32", hp.n_expert_shared))
    return t, kv


def build_glm4moe(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/glm4-moe.cpp load_arch_tensors (q/k/v biases as GLM-4.5 checkpoints have)
    E, V, dk = hp.n_embd, hp.n_vocab, hp.head_dim
    n_main = hp.n_layer - hp.get("n_nextn", 0)
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "attn_norm", [E])
        qkv(t, i, E, dk * hp.n_head, dk * hp.n_head_kv, dk * hp.n_head_kv, bias=hp.get("qkv_bias", True))
        t.blk(i, "attn_output", [dk * hp.n_head, E])
        if hp.get("qk_norm", False):
            t.blk(i, "attn_q_norm", [dk])
            t.blk(i, "attn_k_norm", [dk])
        t.blk(i, "post_attention_norm", [E])
        if i >= hp.n_layer_dense_lead:
            t.blk(i, "ffn_gate_inp", [E, hp.n_expert])
            t.blk(i, "exp_probs_b", [hp.n_expert], "bias")
            moe_ffn(t, i, E, hp.n_ff_exp, hp.n_expert)
            if hp.get("n_expert_shared", 0) > 0:
                shexp_ffn(t, i, E, hp.n_ff_exp * hp.n_expert_shared)
        else:
            dense_ffn(t, i, E, hp.n_ff)
        if i >= n_main:
            nextn_tensors(t, i, E, V, hp)
    out_tensors(t, hp)
    return t, common_kv(arch, hp)


def build_gpt_oss(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/openai-moe.cpp load_arch_tensors: sinks, o/router/expert biases, q/k/v biases;
    # output.weight is required (no tying).
    E, V, H, Hkv, d = hp.n_embd, hp.n_vocab, hp.n_head, hp.n_head_kv, hp.head_dim
    F, X = hp.n_ff_exp, hp.n_expert
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "attn_norm", [E])
        t.blk(i, "post_attention_norm", [E])
        qkv(t, i, E, H * d, Hkv * d, Hkv * d, bias=True)
        t.blk(i, "attn_output", [H * d, E])
        t.blk(i, "attn_output", [E], "bias")
        t.blk(i, "attn_sinks", [H])
        t.blk(i, "ffn_gate_inp", [E, X])
        t.blk(i, "ffn_gate_inp", [X], "bias")
        moe_ffn(t, i, E, F, X)
        t.blk(i, "ffn_gate_exps", [F, X], "bias")
        t.blk(i, "ffn_down_exps", [E, X], "bias")
        t.blk(i, "ffn_up_exps", [F, X], "bias")
    out_tensors(t, hp, allow_tied=False)
    kv = common_kv(arch, hp)
    kv[f"{arch}.rope.dimension_count"] = ("u32", d)
    return t, kv


def build_gemma3(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/gemma3.cpp load_arch_tensors (tied output unless output.weight exists)
    E, V, d = hp.n_embd, hp.n_vocab, hp.head_dim
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "attn_norm", [E])
        qkv(t, i, E, d * hp.n_head, d * hp.n_head_kv, d * hp.n_head_kv)
        t.blk(i, "attn_output", [d * hp.n_head, E])
        t.blk(i, "post_attention_norm", [E])
        t.blk(i, "attn_k_norm", [d])
        t.blk(i, "attn_q_norm", [d])
        t.blk(i, "ffn_norm", [E])
        t.blk(i, "ffn_gate", [E, hp.n_ff])
        t.blk(i, "ffn_up", [E, hp.n_ff])
        t.blk(i, "ffn_down", [hp.n_ff, E])
        t.blk(i, "post_ffw_norm", [E])
    out_tensors(t, hp)
    return t, common_kv(arch, hp)


def build_qwen3next(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/qwen3next.cpp load_arch_tensors; GDN projections split into attn_qkv + attn_gate
    # as conversion/qwen.py Qwen3NextModel.modify_tensors writes them (ssm_in is legacy).
    E, V, H, Hkv, d = hp.n_embd, hp.n_vocab, hp.n_head, hp.n_head_kv, hp.head_dim
    d_state, n_k, n_v = hp.ssm_d_state, hp.ssm_n_group, hp.ssm_dt_rank
    key_dim, value_dim = d_state * n_k, d_state * n_v
    conv_dim = 2 * key_dim + value_dim
    n_main = hp.n_layer - hp.get("n_nextn", 0)
    interval = hp.get("full_attention_interval", 4)
    F, X = hp.n_ff_exp, hp.n_expert
    Fs = hp.get("n_ff_shexp") or hp.n_ff
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        recurrent = i < n_main and (i + 1) % interval != 0
        t.blk(i, "attn_norm", [E])
        t.blk(i, "post_attention_norm", [E])
        if not recurrent:
            qkv(t, i, E, d * H * 2, d * Hkv, d * Hkv)  # Q carries the output gate: 2x wide
            t.blk(i, "attn_output", [d * H, E])
            t.blk(i, "attn_q_norm", [d])
            t.blk(i, "attn_k_norm", [d])
        else:
            t.blk(i, "attn_qkv", [E, conv_dim])
            t.blk(i, "attn_gate", [E, value_dim])
            t.blk(i, "ssm_conv1d", [hp.ssm_d_conv, conv_dim])
            t.blk(i, "ssm_dt", [n_v], "bias")
            t.add(f"blk.{i}.ssm_a", [n_v])  # LLM_TENSOR_SSM_A_NOSCAN: no suffix
            t.blk(i, "ssm_ba", [E, 2 * n_v])
            t.blk(i, "ssm_norm", [d_state])
            t.blk(i, "ssm_out", [value_dim, E])
        t.blk(i, "ffn_gate_inp", [E, X])
        t.blk(i, "ffn_down_exps", [F, E, X])
        t.blk(i, "ffn_gate_exps", [E, F, X])
        t.blk(i, "ffn_up_exps", [E, F, X])
        t.blk(i, "ffn_gate_inp_shexp", [E])
        t.blk(i, "ffn_gate_shexp", [E, Fs])
        t.blk(i, "ffn_up_shexp", [E, Fs])
        t.blk(i, "ffn_down_shexp", [Fs, E])
        if i >= n_main:
            nextn_tensors(t, i, E, V, hp)
    out_tensors(t, hp)
    kv = common_kv(arch, hp)
    kv[f"{arch}.full_attention_interval"] = ("u32", interval)
    return t, kv


def nemotron_layers(hp: HP) -> str:
    pat = hp.hybrid_pattern
    if len(pat) != hp.n_layer - hp.get("n_nextn", 0):
        raise SystemExit(f"hybrid_pattern has {len(pat)} entries, expected n_layer - n_nextn")
    return pat


def build_nemotron_h_moe(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/nemotron-h.cpp load_arch_tensors (shared by nemotron_h and nemotron_h_moe).
    # hybrid_pattern: M = Mamba2, * = attention, E = MoE FFN (as in hybrid_override_pattern).
    E, V, d = hp.n_embd, hp.n_vocab, hp.head_dim
    pat = nemotron_layers(hp)
    n_main = len(pat)
    d_conv, d_inner, d_state = hp.ssm_d_conv, hp.ssm_d_inner, hp.ssm_d_state
    n_ssm_head, n_group = hp.ssm_dt_rank, hp.ssm_n_group
    d_in_proj = 2 * d_inner + 2 * n_group * d_state + n_ssm_head
    F, X, Fs = hp.n_ff_exp, hp.n_expert, hp.n_ff_shexp
    H, Hkv = hp.n_head, hp.n_head_kv
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i, c in enumerate(pat):
        t.blk(i, "attn_norm", [E])
        if c == "M":
            t.blk(i, "ssm_in", [E, d_in_proj])
            t.blk(i, "ssm_conv1d", [d_conv, d_inner + 2 * n_group * d_state])
            t.blk(i, "ssm_conv1d", [d_inner + 2 * n_group * d_state], "bias")
            t.blk(i, "ssm_dt", [n_ssm_head], "bias")
            t.add(f"blk.{i}.ssm_a", [1, n_ssm_head])  # no .weight suffix
            t.add(f"blk.{i}.ssm_d", [1, n_ssm_head])
            t.blk(i, "ssm_norm", [d_inner // n_group, n_group])
            t.blk(i, "ssm_out", [d_inner, E])
        elif c == "*":
            qkv(t, i, E, d * H, d * Hkv, d * Hkv)
            t.blk(i, "attn_output", [d * H, E])
        elif c == "E":
            t.blk(i, "ffn_gate_inp", [E, X])
            t.blk(i, "exp_probs_b", [X], "bias")
            moe_ffn(t, i, E, F, X, gate=False)  # relu^2 experts: up/down only
            shexp_ffn(t, i, E, Fs, gate=False)
        else:
            raise SystemExit(f"hybrid_pattern: unknown layer type {c!r}")
    for i in range(n_main, hp.n_layer):
        # MTP block: attention sub-layer + MoE sub-layer + nextn fusion tensors
        t.blk(i, "nextn.enorm", [E])
        t.blk(i, "nextn.hnorm", [E])
        t.blk(i, "nextn.eh_proj", [2 * E, E])
        t.blk(i, "nextn.shared_head_norm", [E])
        t.blk(i, "attn_norm", [E])
        qkv(t, i, E, d * H, d * Hkv, d * Hkv)
        t.blk(i, "attn_output", [d * H, E])
        t.blk(i, "post_attention_norm", [E])
        t.blk(i, "ffn_gate_inp", [E, X])
        t.blk(i, "exp_probs_b", [X], "bias")
        moe_ffn(t, i, E, F, X, gate=False)
        shexp_ffn(t, i, E, Fs, gate=False)
    out_tensors(t, hp)
    kv = common_kv(arch, hp)
    # per-layer arrays as conversion/nemotron.py writes them: head_count_kv > 0 only on
    # attention layers (and the MTP block), feed_forward_length > 0 only on MoE layers (and MTP)
    full = pat + "X" * (hp.n_layer - n_main)
    kv[f"{arch}.attention.head_count_kv"] = ("arr_i32", [Hkv if c in "*X" else 0 for c in full])
    kv[f"{arch}.feed_forward_length"] = ("arr_i32", [F if c in "EX" else 0 for c in full])
    kv[f"{arch}.attention.layer_norm_epsilon"] = ("f32", hp.get("norm_eps", 1e-5))  # required
    return t, kv


def build_lfm2(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/lfm2.cpp load_arch_tensors: conv layers where head_count_kv[il] == 0;
    # output norm is named token_embd_norm (LLM_TENSOR_OUTPUT_NORM_LFM2); tied output.
    E, V = hp.n_embd, hp.n_vocab
    kvh = hp.n_head_kv
    if not isinstance(kvh, list) or len(kvh) != hp.n_layer:
        raise SystemExit("lfm2 needs n_head_kv as a per-layer list (0 = short-conv layer)")
    d = E // hp.n_head
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "ffn_norm", [E])
        dense_ffn(t, i, E, hp.n_ff)
        t.blk(i, "attn_norm", [E])
        if kvh[i] > 0:
            t.blk(i, "attn_q_norm", [d])
            t.blk(i, "attn_k_norm", [d])
            qkv(t, i, E, E, d * kvh[i], d * kvh[i])
            t.blk(i, "attn_output", [E, E])
        else:
            t.blk(i, "shortconv.conv", [hp.shortconv_l_cache, E])
            t.blk(i, "shortconv.in_proj", [E, 3 * E])
            t.blk(i, "shortconv.out_proj", [E, E])
    t.add("token_embd_norm.weight", [E])
    if not hp.get("tied_output", True):
        t.add("output.weight", [E, V])
    kv = common_kv(arch, hp)
    kv[f"{arch}.shortconv.l_cache"] = ("u32", hp.shortconv_l_cache)
    return t, kv


def build_mamba2(hp: HP, arch: str) -> tuple[Table, dict]:
    # src/models/mamba2.cpp load_arch_tensors
    E, V = hp.n_embd, hp.n_vocab
    d_conv, d_inner, d_state = hp.ssm_d_conv, hp.ssm_d_inner, hp.ssm_d_state
    n_group, dt_rank = hp.ssm_n_group, hp.ssm_dt_rank
    conv_dim = d_inner + 2 * n_group * d_state
    t = Table()
    t.add("token_embd.weight", [E, V])
    for i in range(hp.n_layer):
        t.blk(i, "attn_norm", [E])
        t.blk(i, "ssm_in", [E, d_inner + conv_dim + dt_rank])
        t.blk(i, "ssm_conv1d", [d_conv, conv_dim])
        t.blk(i, "ssm_conv1d", [conv_dim], "bias")
        t.blk(i, "ssm_dt", [dt_rank], "bias")
        t.add(f"blk.{i}.ssm_a", [1, dt_rank])
        t.add(f"blk.{i}.ssm_d", [1, dt_rank])
        t.blk(i, "ssm_norm", [d_inner // n_group, n_group])
        t.blk(i, "ssm_out", [d_inner, E])
    out_tensors(t, hp)
    kv = common_kv(arch, hp)
    # conversion/mamba.py Mamba2Model: head_count 0 and feed_forward_length 0 ("seemingly required")
    kv[f"{arch}.attention.head_count"] = ("u32", 0)
    kv[f"{arch}.feed_forward_length"] = ("u32", 0)
    return t, kv


ARCHS = {
    "llama": build_llama,
    "qwen3": build_qwen3,
    "qwen3moe": build_qwen3,
    "deepseek2": build_deepseek2,
    "glm4moe": build_glm4moe,
    "gpt-oss": build_gpt_oss,
    "gemma3": build_gemma3,
    "qwen3next": build_qwen3next,
    "nemotron_h_moe": build_nemotron_h_moe,
    "lfm2": build_lfm2,
    "mamba2": build_mamba2,
}


# --------------------------------------------------------------------------------------------
# Quant mix
# --------------------------------------------------------------------------------------------

# tensor_get_category (src/llama-quant.cpp): first match wins, substring tests on the full name.
def category(name: str) -> str:
    if name == "output.weight":
        return "OUTPUT"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "TOKEN_EMBD"
    for sub, cat in (("attn_qkv.weight", "ATTENTION_QKV"), ("attn_kv_b.weight", "ATTENTION_KV_B"),
                     ("attn_v.weight", "ATTENTION_V"), ("attn_k.weight", "ATTENTION_K"),
                     ("attn_q.weight", "ATTENTION_Q"), ("attn_output.weight", "ATTENTION_OUTPUT"),
                     ("ffn_up", "FFN_UP"), ("ffn_gate", "FFN_GATE"), ("ffn_down", "FFN_DOWN")):
        if sub in name:
            return cat
    return "OTHER"


def allows_quantization(t: Tensor) -> bool:
    """tensor_allows_quantization (src/llama-quant.cpp), the parts that apply to our archs."""
    name = t.name
    if len(t.ne) < 2 or not name.endswith("weight"):
        return False
    for sub in ("_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d", "shortconv.conv.weight"):
        if sub in name:
            return False
    return True


def unquantized_type(t: Tensor) -> QT:
    """Type convert_hf_to_gguf.py writes for tensors the quantizer leaves alone: 1-D tensors,
    norms, biases, routers (FFN_GATE_INP) and SSM conv kernels are forced to F32."""
    return QT.F32


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fallback(t: Tensor, ty: QT) -> QT:
    """tensor_type_fallback (src/llama-quant.cpp)."""
    blck = GGML_QUANT_SIZES[ty][0]
    if t.ne[0] % blck == 0:
        return ty
    fb = {QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}
    r = fb.get(ty, ty)
    if t.ne[0] % GGML_QUANT_SIZES[r][0] != 0:
        r = QT.F16
    return r


class FtypeMixer:
    """Port of llama_tensor_get_type_impl for the non-IQ ftypes (b11434 src/llama-quant.cpp).

    Counters (i_attention_wv, i_ffn_down) advance in tensor order, as in the quantizer, which
    walks the tensors in file order; our files are in layer order (see `order` in the README)."""

    def __init__(self, ftype: str, arch: str, hp: HP, tensors: list[Tensor]) -> None:
        self.ftype = ftype
        self.arch = arch
        self.n_expert = hp.get("n_expert", 0) or 0
        nh, nkv = hp.get("n_head"), hp.get("n_head_kv")
        if isinstance(nh, list):
            nh = nh[0]
        if isinstance(nkv, list):
            nkv = nkv[0]
        # llama_hparams::n_gqa(il=0) = n_head / n_head_kv (0 if n_head_kv == 0)
        self.n_gqa = (nh // nkv) if (nh and nkv) else 0
        self.model_70b = hp.get("llm_type_70b", False)
        self.has_tied = not any(t.name == "output.weight" for t in tensors)
        self.n_attention_wv = sum(1 for t in tensors if category(t.name) in ("ATTENTION_V", "ATTENTION_QKV", "ATTENTION_KV_B"))
        self.n_ffn_down = hp.n_layer  # n_layer_all
        self.i_attention_wv = 0
        self.i_ffn_down = 0
        self.default = FTYPE_DEFAULT[ftype]

    def get(self, t: Tensor) -> QT:
        ft = self.ftype
        new = self.default
        if new in (QT.F32, QT.F16, QT.BF16):
            return new
        cat = category(t.name)
        n_exp = max(1, self.n_expert)
        if cat == "OUTPUT" or (self.has_tied and cat == "TOKEN_EMBD"):
            blck = GGML_QUANT_SIZES[new][0]
            if ft == "MXFP4_MOE":
                new = QT.Q8_0
            elif t.ne[0] % blck != 0:
                new = QT.Q8_0
            elif new != QT.Q8_0:
                new = QT.Q6_K
        elif ft == "MXFP4_MOE":
            new = QT.MXFP4 if len(t.ne) > 2 and t.ne[2] > 1 else QT.Q8_0
        elif cat == "TOKEN_EMBD":
            pass
        elif cat in ("ATTENTION_V", "ATTENTION_QKV", "ATTENTION_KV_B"):
            if ft == "Q2_K":
                new = QT.Q4_K if self.n_gqa >= 4 else QT.Q3_K
            elif ft == "Q3_K_M":
                new = QT.Q5_K if self.i_attention_wv < 2 else QT.Q4_K
            elif ft == "Q3_K_L":
                new = QT.Q5_K
            elif ft in ("Q4_K_M", "Q5_K_M") and use_more_bits(self.i_attention_wv, self.n_attention_wv):
                new = QT.Q6_K
            elif ft == "Q4_K_S" and self.i_attention_wv < 4:
                new = QT.Q5_K
            if self.model_70b and new in (QT.Q3_K, QT.Q4_K):
                new = QT.Q5_K
            if self.n_expert == 8:
                new = QT.Q8_0
            self.i_attention_wv += 1
        elif cat == "ATTENTION_K":
            if self.n_expert == 8:
                new = QT.Q8_0
        elif cat == "FFN_DOWN":
            if n_exp > 1:
                i_layer, n_layer = t.layer, self.n_ffn_down
            else:
                i_layer, n_layer = self.i_ffn_down, self.n_ffn_down
            if ft == "Q2_K":
                new = QT.Q3_K
            elif ft == "Q3_K_M":
                new = QT.Q5_K if i_layer < n_layer // 16 else QT.Q4_K
            elif ft == "Q3_K_L":
                new = QT.Q5_K
            elif ft == "Q4_K_M":
                if use_more_bits(i_layer, n_layer):
                    new = QT.Q6_K
            elif ft == "Q5_K_M" and use_more_bits(i_layer, n_layer):
                new = QT.Q6_K
            elif ft == "Q4_K_S" and i_layer < n_layer // 8:
                new = QT.Q5_K
            self.i_ffn_down += 1
        elif cat == "ATTENTION_OUTPUT":
            if self.n_expert == 8:
                if ft in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"):
                    new = QT.Q5_K
            else:
                if ft == "Q2_K":
                    new = QT.Q3_K
                elif ft == "Q3_K_M":
                    new = QT.Q4_K
                elif ft == "Q3_K_L":
                    new = QT.Q5_K
        return fallback(t, new)


def assign_types(arch: str, hp: HP, quant: dict, tensors: list[Tensor]) -> None:
    ftype = quant.get("ftype")
    if ftype is not None and ftype not in FTYPE_DEFAULT:
        raise SystemExit(f"unsupported ftype {ftype!r} (known: {', '.join(FTYPE_DEFAULT)})")
    default = qtype(quant["default"]) if "default" in quant else None
    if ftype is None and default is None:
        raise SystemExit("[quant] needs `ftype` or `default`")
    types = {k: qtype(v) for k, v in quant.get("types", {}).items()}
    mixer = FtypeMixer(ftype, arch, hp, tensors) if ftype else None
    for t in tensors:
        if t.type is not None:
            continue  # the builder fixed it (e.g. a type the format requires)
        full = t.name[: -len(".weight")] if t.name.endswith(".weight") else t.name
        if full in types:
            t.type = types[full]
        elif t.kind in types:
            t.type = types[t.kind]
        elif not allows_quantization(t):
            t.type = unquantized_type(t)
        elif mixer is not None:
            t.type = mixer.get(t)
        else:
            t.type = fallback(t, default)
        # keep the quantizer's counters in step even for explicitly typed tensors
        if mixer is not None and (full in types or t.kind in types) and allows_quantization(t):
            cat = category(t.name)
            if cat in ("ATTENTION_V", "ATTENTION_QKV", "ATTENTION_KV_B"):
                mixer.i_attention_wv += 1
            elif cat == "FFN_DOWN":
                mixer.i_ffn_down += 1
        blck = GGML_QUANT_SIZES[t.type][0]
        if t.ne[0] % blck:
            raise SystemExit(f"{t.name}: ne0={t.ne[0]} is not a multiple of {t.type.name}'s block {blck}")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def add_kv(w: GGUFWriter, key: str, typ: str, val) -> None:
    if typ == "u32":
        w.add_uint32(key, int(val))
    elif typ == "i32":
        w.add_int32(key, int(val))
    elif typ == "f32":
        w.add_float32(key, float(val))
    elif typ == "bool":
        w.add_bool(key, bool(val))
    elif typ == "str":
        w.add_string(key, str(val))
    elif typ == "arr_i32":
        w.add_array(key, [int(x) for x in val])  # gguf-py packs python ints as INT32
    elif typ == "arr_bool":
        w.add_key_value(key, [bool(x) for x in val], GGUFValueType.ARRAY, GGUFValueType.BOOL)
    else:
        raise ValueError(typ)


def raw_kv(kv: dict, arch: str, extra: dict) -> None:
    """[gguf_kv] table: extra keys, `{arch}` expanded; value types inferred (int->u32,
    float->f32, bool, str, list of int->i32 array, list of bool->bool array)."""
    for k, v in extra.items():
        k = k.replace("{arch}", arch)
        if isinstance(v, bool):
            kv[k] = ("bool", v)
        elif isinstance(v, int):
            kv[k] = ("u32" if v >= 0 else "i32", v)
        elif isinstance(v, float):
            kv[k] = ("f32", v)
        elif isinstance(v, str):
            kv[k] = ("str", v)
        elif isinstance(v, list) and v and isinstance(v[0], bool):
            kv[k] = ("arr_bool", v)
        elif isinstance(v, list):
            kv[k] = ("arr_i32", v)
        else:
            raise SystemExit(f"[gguf_kv] {k}: unsupported value {v!r}")


@dataclass
class Built:
    name: str
    arch: str
    kv: dict
    tensors: list[Tensor]
    spec: dict = field(default_factory=dict)


def build(spec: dict) -> Built:
    arch = spec["arch"]
    if arch not in ARCHS:
        raise SystemExit(f"{spec['name']}: arch {arch!r} not supported (known: {', '.join(ARCHS)})")
    hp = HP(spec["hparams"])
    table, kv = ARCHS[arch](hp, arch)
    raw_kv(kv, arch, spec.get("gguf_kv", {}))
    # File order = llama-quantize's output order: it walks llama_model_loader::weights_map, a
    # std::map ordered by weight_name_comparer (src/llama-model-loader.h): non-block tensors
    # first (layer -1), then blocks in numeric order, names compared with strcmp inside each.
    table.tensors.sort(key=lambda t: (-1 if t.layer is None else t.layer, t.name.encode()))
    assign_types(arch, hp, spec["quant"], table.tensors)
    names = [t.name for t in table.tensors]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"{spec['name']}: duplicate tensors {sorted(dup)}")
    return Built(spec["name"], arch, kv, table.tensors, spec)


def write(b: Built, path: Path) -> int:
    """Write header + tensor infos, then extend the file to its full size as a hole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gguf.tmp")
    w = GGUFWriter(tmp, b.arch)  # writes general.architecture
    w.add_name(b.name)
    w.add_uint32("general.alignment", ALIGNMENT)
    ftype = b.spec["quant"].get("ftype")
    if ftype in FTYPES:
        w.add_file_type(FTYPES[ftype])
    w.add_string("tokenizer.ggml.model", "none")
    for key, (typ, val) in b.kv.items():
        add_kv(w, key, typ, val)
    total = 0
    for t in b.tensors:
        nb = nbytes(t.type, t.ne)
        # numpy order (reversed ne); dtype float32 + raw_dtype keeps the shape as given
        w.add_tensor_info(t.name, list(reversed(t.ne)), np.dtype(np.float32), nb, raw_dtype=t.type)
        total += pad(nb, ALIGNMENT)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    fout.flush()
    header_end = fout.tell()
    w.close()
    size = pad(header_end, ALIGNMENT) + total
    with open(tmp, "r+b") as f:
        f.truncate(size)
    os.replace(tmp, path)
    return size


def load_spec(path: Path) -> dict:
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    for k in ("name", "arch", "provenance", "hparams", "quant"):
        if k not in spec:
            raise SystemExit(f"{path}: missing top-level key {k!r}")
    if spec["name"] != path.stem:
        raise SystemExit(f"{path}: name {spec['name']!r} must equal the file stem")
    return spec


def all_specs() -> list[Path]:
    return sorted(SPEC_DIR.glob("*.toml"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", type=Path, help="spec files (default with --all: oracle/specs/*.toml)")
    ap.add_argument("--all", action="store_true", help="every spec in oracle/specs/")
    ap.add_argument("--out", type=Path, default=Path("/work/cache/oracle-gguf"))
    ap.add_argument("--list", action="store_true", help="print the tensor table instead of writing")
    args = ap.parse_args(argv)
    paths = list(args.specs)
    if args.all:
        paths += all_specs()
    if not paths:
        ap.error("give spec files or --all")
    for p in paths:
        b = build(load_spec(p))
        if args.list:
            print(f"# {b.name} ({b.arch})")
            for t in b.tensors:
                print(f"{t.name:44s} {t.type.name:6s} {t.ne}")
            continue
        out = args.out / f"{b.name}.gguf"
        size = write(b, out)
        print(f"{out}  {size:>15,d} bytes  {len(b.tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
