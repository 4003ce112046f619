#!/usr/bin/env python3
"""Record llama.cpp memory-oracle fixtures (tests/fixtures/oracle/<model>/<case>.json).

For every model GGUF (header-only sparse files from oracle/gen_gguf.py, plus the real
gemma-3-270m) it runs a matrix of llama.cpp flag sets through `oracle-probe` (a dry run:
no_alloc + load_mode none, exact bytes from llama_get_memory_breakdown) and writes one small
JSON per case in the schema of FIXTURE-FORMAT (schema 1).

Several devices without a GPU: `ggml-rpc-server` processes on 127.0.0.1, each LD_PRELOADed with
libfakemem.so so that it reports a chosen memory size, stand in for GPUs (RPC0, RPC1, RPC2).
The recorder starts them itself, remembers their PIDs and stops exactly those processes.

stdlib + gguf (gguf-py) only. See oracle/README.md; normally run through oracle/record.sh.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_BUILD = 11434
HOST = "127.0.0.1"  # loopback only, never anything else
# fixed ports so that buffer-type names (which embed host:port) are stable across re-records
DEFAULT_PORT_BASE = 50152
# fake GPU sizes (MiB) reported by RPC0, RPC1, RPC2; deliberately unequal so the default
# split (by free memory, llama_model::load_tensors) is not an even split
FAKE_MIB = [8192, 12288, 6144]

LOG_PREFIX = re.compile(r"^\d+\.\d{2}\.\d{3}\.\d{3} [IWEDT] ")


# ----------------------------------------------------------------------------------------------
# RPC servers (fake GPUs)
# ----------------------------------------------------------------------------------------------
class RpcFarm:
    """Starts ggml-rpc-server processes on loopback and stops exactly those (by PID)."""

    def __init__(self, server_bin: Path, shim: Path, port_base: int, sizes_mib: list[int]):
        self.procs: list[subprocess.Popen] = []
        self.endpoints: list[str] = []
        self.sizes_mib = sizes_mib
        # GGML_RPC_DEBUG=1: each server logs its alloc_buffer / buffer_clear / set_tensor calls.
        # -sm tensor cases read them: a Meta device's per-device buffers are not in
        # llama_get_memory_breakdown (see real_split_buffers)
        self.logdir = Path(tempfile.mkdtemp(prefix="oracle-rpc-"))
        self.logs: list[Path] = []
        for i, mib in enumerate(sizes_mib):
            port = port_base + i
            if _port_in_use(port):
                self.stop()
                raise SystemExit(f"port {HOST}:{port} is busy; set --port-base to a free range")
            env = dict(os.environ)
            env["LD_PRELOAD"] = str(shim)
            env["FAKEMEM_MIB"] = str(mib)
            env["GGML_RPC_DEBUG"] = "1"
            log = self.logdir / f"rpc{i}.log"
            self.logs.append(log)
            with open(log, "wb") as fh:
                p = subprocess.Popen(
                    [str(server_bin), "-H", HOST, "-p", str(port), "-t", "1"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=fh,
                    start_new_session=True,
                )
            self.procs.append(p)
            self.endpoints.append(f"{HOST}:{port}")
        atexit.register(self.stop)
        for ep in self.endpoints:
            _wait_port(ep)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()  # signals this PID only
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        shutil.rmtree(self.logdir, ignore_errors=True)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((HOST, port)) == 0


def _wait_port(ep: str, timeout: float = 20.0) -> None:
    host, port = ep.split(":")
    t0 = time.time()
    while time.time() - t0 < timeout:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"ggml-rpc-server on {ep} did not start")


# ----------------------------------------------------------------------------------------------
# model metadata (only what the matrix needs)
# ----------------------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    name: str
    path: Path
    arch: str
    n_layer: int
    n_expert: int
    has_swa: bool
    recurrent: bool
    spec: str | None
    head_dims: list[int] = field(default_factory=list)


RECURRENT_OR_HYBRID = {
    "mamba", "mamba2", "rwkv6", "rwkv7", "jamba", "falcon-h1", "granitehybrid", "lfm2", "lfm2moe",
    "nemotron_h", "nemotron_h_moe", "qwen3next", "qwen35", "qwen35moe", "plamo2",
}
SWA_ARCHS = {"gemma2", "gemma3", "gpt-oss", "cohere2", "gemma3n"}


def gguf_kv(path: Path) -> dict:
    """Metadata key/values of a GGUF (v2/v3, little-endian), without the tensor table.
    (gguf-py's GGUFReader maps every tensor and takes ~30 s on a 262k-token vocab.)"""
    import struct

    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        (version,) = struct.unpack("<I", f.read(4))
        if version < 2:
            raise ValueError(f"{path}: GGUF v{version} not supported")
        _n_tensors, n_kv = struct.unpack("<QQ", f.read(16))

        def rstr() -> str:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        def rval(t: int):
            if t in scalar:
                fmt = scalar[t]
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            if t == 8:
                return rstr()
            if t == 9:
                (et,) = struct.unpack("<I", f.read(4))
                (n,) = struct.unpack("<Q", f.read(8))
                if et in scalar:
                    fmt = scalar[et]
                    sz = struct.calcsize(fmt)
                    data = f.read(sz * n)
                    return list(struct.unpack("<" + fmt[1:] * n, data)) if n <= 4096 else None
                return [rval(et) for _ in range(n)] if n <= 4096 else [rval(et) for _ in range(n)] and None
            raise ValueError(f"{path}: unknown GGUF value type {t}")

        kv = {}
        for _ in range(n_kv):
            key = rstr()
            (t,) = struct.unpack("<I", f.read(4))
            kv[key] = rval(t)
        return kv


def read_model(name: str, path: Path, spec: str | None) -> ModelInfo:
    kv = gguf_kv(path)

    def val(key, default=None):
        v = kv.get(key)
        return default if v is None else v

    arch = val("general.architecture")
    n_layer = int(val(f"{arch}.block_count", 0))
    n_expert = int(val(f"{arch}.expert_count", 0) or 0)
    swa = val(f"{arch}.attention.sliding_window", 0) or 0
    has_swa = bool(swa) and (arch in SWA_ARCHS or arch in {"lfm2", "lfm2moe"})
    heads = []
    for k in ("attention.key_length", "attention.value_length"):
        v = val(f"{arch}.{k}")
        if isinstance(v, int):
            heads.append(v)
    return ModelInfo(name, path, arch, n_layer, n_expert, has_swa, arch in RECURRENT_OR_HYBRID, spec, heads)


# ----------------------------------------------------------------------------------------------
# the matrix
# ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    slug: str
    tool: str
    args: list[str]
    n_dev: int  # RPC devices to attach (0 = CPU only)


def matrix(m: ModelInfo, eps: list[str]) -> list[Case]:
    L = m.n_layer
    cases: list[Case] = []

    def add(slug: str, args: list[str], n_dev: int = 1, tool: str = "server") -> None:
        if n_dev > len(eps):
            return
        cases.append(Case(slug, tool, ["-fit", "off"] + args, n_dev))

    base = ["-c", "4096", "-ngl", "99"]
    # context: multiples of 256 and not; slots with and without unified KV
    add("c4096-np1", base + ["-np", "1"])
    add("c5000-np1", ["-c", "5000", "-ngl", "99", "-np", "1"])
    add("c1000-np1-fa-off", ["-c", "1000", "-ngl", "99", "-np", "1", "-fa", "off"])
    add("c4096-np-auto", base)  # server default: 4 slots + unified KV
    add("c4096-np2", base + ["-np", "2"])
    add("c4096-np2-kvu", base + ["-np", "2", "-kvu"])
    add("c4096-np4", base + ["-np", "4"])
    add("c4096-np4-kvu", base + ["-np", "4", "-kvu"])
    add("c3000-np3", ["-c", "3000", "-ngl", "99", "-np", "3"])
    # flash attention and cache types
    add("c4096-np1-fa-off", base + ["-np", "1", "-fa", "off"])
    add("c4096-np1-fa-on", base + ["-np", "1", "-fa", "on"])
    add("c4096-np1-q8_0", base + ["-np", "1", "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0"])
    add("c4096-np1-q4_0", base + ["-np", "1", "-fa", "on", "-ctk", "q4_0", "-ctv", "q4_0"])
    add("c4096-np1-ctk-q8_0-fa-off", base + ["-np", "1", "-fa", "off", "-ctk", "q8_0"])
    # batch sizes
    add("c4096-np1-ub256-b256", base + ["-np", "1", "-ub", "256", "-b", "256"])
    add("c4096-np1-ub2048-b2048", base + ["-np", "1", "-ub", "2048", "-b", "2048"])
    add("c4096-np1-ub512-b4096", base + ["-np", "1", "-ub", "512", "-b", "4096"])
    if m.has_swa:
        add("c4096-np1-swa-full", base + ["-np", "1", "--swa-full"])
        add("c4096-np2-swa-full", base + ["-np", "2", "--swa-full"])
    add("c4096-np1-nkvo", base + ["-np", "1", "-nkvo"])
    add("c4096-np1-nkvo-fa-off", base + ["-np", "1", "-nkvo", "-fa", "off"])
    # partial offload
    add(f"c4096-np1-ngl{L // 2}", ["-c", "4096", "-ngl", str(L // 2), "-np", "1"])
    add(f"c4096-np1-ngl{L}", ["-c", "4096", "-ngl", str(L), "-np", "1"])  # all but output
    add("c4096-np1-ngl0", ["-c", "4096", "-ngl", "0", "-np", "1"])
    # completion semantics (n_outputs_max = n_batch)
    add("completion-c4096", base, tool="completion")
    add("completion-c4096-ub2048-b2048", base + ["-ub", "2048", "-b", "2048"], tool="completion")
    add("completion-c4096-np2-fa-off", base + ["-np", "2", "-fa", "off"], tool="completion")
    # MoE expert placement
    if m.n_expert > 0:
        add("c4096-np1-ot-exps-cpu", base + ["-np", "1", "-ot", r"exps=CPU"])
        add("c4096-np1-n-cpu-moe2", base + ["-np", "1", "--n-cpu-moe", "2"])
        add("c4096-np1-cpu-moe", base + ["-np", "1", "--cpu-moe"])
        add("c4096-np1-ot-blk0-1-exps-cpu", base + ["-np", "1", "-ot", r"blk\.(0|1)\.ffn_.*_exps\.=CPU"])
    # CPU only (no devices)
    add("cpu-c4096-np1", ["-c", "4096", "-np", "1"], n_dev=0)
    add("cpu-c4096-np1-nr", ["-c", "4096", "-np", "1", "-nr"], n_dev=0)
    add("cpu-c4096-np2-fa-off", ["-c", "4096", "-np", "2", "-fa", "off"], n_dev=0)
    # several devices
    add("rpc2-c4096-np1", base + ["-np", "1"], n_dev=2)
    add("rpc2-c4096-np1-ts1-3", base + ["-np", "1", "-ts", "1,3"], n_dev=2)
    add("rpc2-c4096-np2-fa-off", base + ["-np", "2", "-fa", "off"], n_dev=2)
    add(f"rpc2-c4096-np1-ngl{L // 2}", ["-c", "4096", "-ngl", str(L // 2), "-np", "1"], n_dev=2)
    add("rpc2-c4096-np1-sm-none-mg1", base + ["-np", "1", "-sm", "none", "-mg", "1"], n_dev=2)
    add("rpc2-c4096-np1-ub256-b256", base + ["-np", "1", "-ub", "256", "-b", "256"], n_dev=2)
    add("rpc2-c4096-np1-ub2048-b2048", base + ["-np", "1", "-ub", "2048", "-b", "2048"], n_dev=2)
    add("rpc2-c4096-np1-nkvo", base + ["-np", "1", "-nkvo"], n_dev=2)
    add("rpc2-c4096-np1-q8_0", base + ["-np", "1", "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0"], n_dev=2)
    if m.has_swa:
        add("rpc2-c4096-np2-swa-full", base + ["-np", "2", "--swa-full"], n_dev=2)
    add("rpc3-c4096-np1-ts1-1-1", base + ["-np", "1", "-ts", "1,1,1"], n_dev=3)
    add(f"rpc3-c4096-np2-ngl{L // 2}-ts1-1-1", ["-c", "4096", "-ngl", str(L // 2), "-np", "2", "-ts", "1,1,1"], n_dev=3)
    add("rpc3-c4096-np4-kvu", base + ["-np", "4", "-kvu"], n_dev=3)
    add("rpc3-completion-c5000-ts3-2-1", ["-c", "5000", "-ngl", "99", "-ts", "3,2,1"], n_dev=3, tool="completion")
    if sm_tensor_ok(m):
        # -sm tensor (Meta device, tensor parallelism): measured by a real load (see
        # real_split_buffers), so only for models small enough to load for real
        tp = base + ["-sm", "tensor"]
        add("rpc2-sm-tensor-c4096-np1", tp + ["-np", "1"], n_dev=2)
        add("rpc2-sm-tensor-c4096-np1-ts1-3", tp + ["-np", "1", "-ts", "1,3"], n_dev=2)
        add("rpc2-sm-tensor-c4096-np-auto", tp, n_dev=2)
        add("rpc2-sm-tensor-c4096-np1-ub256-b256", tp + ["-np", "1", "-ub", "256", "-b", "256"], n_dev=2)
        add("rpc2-sm-tensor-c4096-np1-q8_0", tp + ["-np", "1", "-ctk", "q8_0", "-ctv", "q8_0"], n_dev=2)
        add("rpc3-sm-tensor-c4096-np1", tp + ["-np", "1"], n_dev=3)
        add("rpc3-sm-tensor-c5000-np2-ts3-2-1", ["-c", "5000", "-ngl", "99", "-sm", "tensor", "-np", "2", "-ts", "3,2,1"], n_dev=3)
        add("rpc3-sm-tensor-completion-c4096-ub1024", tp + ["-ub", "1024"], n_dev=3, tool="completion")
        add(f"rpc2-sm-tensor-c4096-np1-ngl{L // 2}", ["-c", "4096", "-ngl", str(L // 2), "-sm", "tensor", "-np", "1"], n_dev=2)
        add("rpc2-sm-tensor-c4096-np1-nkvo", tp + ["-np", "1", "-nkvo"], n_dev=2)
        add("rpc2-sm-tensor-c4096-np1-dev-rpc1-rpc0", tp + ["-np", "1", "-dev", "RPC1,RPC0", "-ts", "1,3"], n_dev=2)
        if m.n_expert > 0:
            add("rpc2-sm-tensor-c4096-np1-ot-exps-cpu", tp + ["-np", "1", "-ot", "exps=CPU"], n_dev=2)
    if m.n_expert > 0:
        add("rpc2-c4096-np1-ot-exps-cpu", base + ["-np", "1", "-ot", "exps=CPU"], n_dev=2)
        add("rpc2-c4096-np1-n-cpu-moe2", base + ["-np", "1", "--n-cpu-moe", "2"], n_dev=2)
        # experts of the first two layers onto the *second* RPC device; its buffer type is
        # named after the server's own device index: RPC0[127.0.0.1:<port of RPC1>]
        add(
            "rpc2-c4096-np1-ot-blk0-1-exps-rpc1",
            base + ["-np", "1", "-ot", rf"blk\.(0|1)\.ffn_.*_exps\.=RPC0[{eps[1]}]"],
            n_dev=2,
        )
    return cases


# llm_arch_supports_sm_tensor (src/llama-arch.cpp) refuses these (of the archs we generate)
SM_TENSOR_REFUSED = {"mamba", "mamba2", "jamba", "falcon-h1", "plamo2", "deepseek2", "nemotron_h",
                     "nemotron_h_moe", "granitehybrid", "minicpm3", "gemma3n", "olmo2", "olmoe", "t5",
                     "bitnet", "grok", "mpt"}
# accepted, and the dry run passes, but b11434's real load aborts in ggml_backend_tensor_set
# ("GGML_ASSERT(offset + size <= ggml_nbytes(tensor) && "tensor write out of bounds")") for
# glm4moe-tiny and qwen3next-tiny over RPC: no per-device bytes to record
SM_TENSOR_LOAD_ABORTS = {"glm4moe", "qwen3next"}
# real loads fault in every page of the sparse file: only for the tiny models
SM_TENSOR_MAX_FILE = 600 << 20


def sm_tensor_ok(m: ModelInfo) -> bool:
    return (m.arch not in SM_TENSOR_REFUSED and m.arch not in SM_TENSOR_LOAD_ABORTS
            and m.path.stat().st_size <= SM_TENSOR_MAX_FILE)


def is_sm_tensor(c: Case) -> bool:
    return any(a == "-sm" and b == "tensor" for a, b in zip(c.args, c.args[1:]))


_RPC_ALLOC = re.compile(r"^\[alloc_buffer\] device: \d+, size: (\d+) -> remote_ptr: ([0-9a-f]+), remote_size: (\d+)")
_RPC_FREE = re.compile(r"^\[free_buffer\] remote_ptr: ([0-9a-f]+)")
_RPC_CLEAR = re.compile(r"^\[buffer_clear\] remote_ptr: ([0-9a-f]+)")
_RPC_SET = re.compile(r"^\[set_(?:tensor|tensor_hash)\] buffer: (?:0x)?([0-9a-f]+)")


def real_split_buffers(log_text: str) -> dict:
    """One RPC server's buffers from its GGML_RPC_DEBUG log of one client session: live
    buffers that received weights (set_tensor) are model, those cleared at creation
    (ggml_backend_buffer_clear in the llama_kv_cache / llama_memory_recurrent constructors)
    are context, the rest (the scheduler's compute buffer) compute."""
    live: dict[int, int] = {}
    kind: dict[int, str] = {}
    for ln in log_text.splitlines():
        mm = _RPC_ALLOC.match(ln)
        if mm:
            live[int(mm.group(2), 16)] = int(mm.group(3))
            continue
        mm = _RPC_FREE.match(ln)
        if mm:
            live.pop(int(mm.group(1), 16), None)
            continue
        mm = _RPC_CLEAR.match(ln)
        if mm:
            kind.setdefault(int(mm.group(1), 16), "context")
            continue
        mm = _RPC_SET.match(ln)
        if mm:
            ptr = int(mm.group(1), 16)
            if kind.get(ptr) != "context":
                kind[ptr] = "model"
    out = {"model": 0, "context": 0, "compute": 0, "n_buffers": len(live)}
    for ptr, size in live.items():
        out[kind.get(ptr, "compute")] += size
    return out


def is_meta_row(b: dict) -> bool:
    """The Meta device's breakdown row (CPU_REPACK also has a device: the CPU)."""
    return (b.get("device") or "").startswith("Meta(")


def run_sm_tensor(probe: Path, farm: "RpcFarm", m: ModelInfo, case: Case, eps: list[str], timeout: int) -> dict:
    """-sm tensor: llama_get_memory_breakdown has one row for the Meta device, in a dry run
    the full (unsplit) tensor sizes, in a real load the largest device's buffer. The dry run
    gives everything else (host rows, layers, splits, KV log); a real load of the same flags
    gives each server's own buffers from its debug log."""
    raw = run_probe(probe, m, case, eps, timeout)
    if "error" in raw or "buffers" not in raw:
        return raw
    offs = [farm.logs[i].stat().st_size for i in range(case.n_dev)]
    real = run_probe(probe, m, case, eps, timeout, real=True)
    if "error" in real or "buffers" not in real:
        return {"error": f"real load: {real.get('error', 'no breakdown')}"}
    time.sleep(0.3)  # the servers log the session's end after the client exits
    per_dev = []
    for i in range(case.n_dev):
        with open(farm.logs[i], "rb") as fh:
            fh.seek(offs[i])
            per_dev.append(real_split_buffers(fh.read().decode("utf-8", "replace")))
    raw["split_buffers"] = per_dev
    raw["meta_real"] = [b for b in real["buffers"] if is_meta_row(b)]
    return raw


def fit_matrix(m: ModelInfo, eps: list[str]) -> list[Case]:
    """llama-fit-params cases: what --fit decides for these fake GPUs (its default margin
    -fitt 1024 MiB per device, plus "tight" variants whose -fitt margins are computed in
    run_fit so that only 60 % of what full offload needs is usable: even tiny models spill)."""
    cases = []

    def add(slug: str, args: list[str], n_dev: int) -> None:
        if n_dev <= len(eps):
            cases.append(Case(slug, "fit-params", args, n_dev))

    for n in (1, 2, 3):
        add(f"fit-rpc{n}-c4096-np1", ["-c", "4096", "-np", "1"], n)
    add("fit-rpc2-c-auto-np1", ["-np", "1"], 2)  # -c unset: fit may lower the context
    add("fit-rpc2-c8192-np4", ["-c", "8192", "-np", "4"], 2)  # (llama-fit-params has no -kvu)
    for n in (1, 2, 3):
        add(f"fit-rpc{n}-c4096-np1-tight", ["-c", "4096", "-np", "1"], n)
    return cases


def run_fit(build: Path, probe: Path, m: ModelInfo, case: Case, eps: list[str], timeout: int) -> dict:
    """Run llama-fit-params, then measure its answer with the probe (completion semantics,
    as llama-fit-params itself measures: it leaves n_outputs_max = n_batch)."""
    fit_bin = build / "bin/llama-fit-params"
    if case.slug.endswith("-tight"):
        # margins: usable = 60 % of what each device needs with everything offloaded
        # (sum over devices for a single one), measured like fit measures (completion semantics)
        full = run_probe(probe, m, Case(case.slug, "completion", ["-fit", "off", "-ngl", "99"] + case.args,
                                        case.n_dev), eps, timeout)
        if "buffers" not in full:
            return {"error": f"tight pre-measure: {full.get('error')}"}
        need = {}
        for b in full["buffers"]:
            if b["device"] and b["device"].startswith("RPC"):
                need[b["device"]] = need.get(b["device"], 0) + b["model"] + b["context"] + b["compute"]
        fitt = []
        for i in range(case.n_dev):
            usable = need.get(f"RPC{i}", 0) * 6 // 10
            fitt.append(str(max(0, FAKE_MIB[i] - usable // (1 << 20))))
        case = Case(case.slug, case.tool, case.args + ["-fitt", ",".join(fitt)], case.n_dev)
    cmd = [str(fit_bin), "-m", str(m.path), "--rpc", ",".join(eps[: case.n_dev])] + case.args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("-c ")]
    if p.returncode != 0 or not lines:
        return {"error": f"llama-fit-params rc={p.returncode}: {p.stderr.strip()[-300:]}"}
    raw = lines[-1].strip()
    toks = shlex.split(raw)
    fitted: dict = {"raw": raw, "c": None, "ngl": None, "ts": None, "ot": []}
    i = 0
    while i < len(toks):
        k, v = toks[i], toks[i + 1] if i + 1 < len(toks) else ""
        if k == "-c":
            fitted["c"] = int(v)
        elif k == "-ngl":
            fitted["ngl"] = int(v)
        elif k == "-ts":
            fitted["ts"] = [int(x) for x in v.split(",")]
        elif k == "-ot":
            fitted["ot"] = v.split(",")
        i += 2
    # measure the fitted configuration (the flags the user gave, with fit's answers on top)
    given = [a for a in case.args]
    j = 0
    measure = []
    while j < len(given):  # drop -fitt and -c (fit's -c replaces it)
        if given[j] in ("-fitt", "-c"):
            j += 2
            continue
        measure.append(given[j])
        j += 1
    measure = ["-fit", "off"] + toks + measure
    mc = Case(case.slug, "completion", measure, case.n_dev)
    meas = run_probe(probe, m, mc, eps, timeout)
    return {"args": case.args, "fitted": fitted, "measure_args": measure, "measured": meas}


def fit_fixture(m: ModelInfo, case: Case, res: dict, eps: list[str]) -> dict:
    meas = res["measured"]
    projected = []
    if "buffers" in meas:
        for b in meas["buffers"]:
            projected.append({"buft": b["buft"], "device": b["device"] or "CPU",
                              "bytes": b["model"] + b["context"] + b["compute"]})
        projected.sort(key=lambda x: (x["device"] == "CPU", x["device"], x["buft"]))
    margins = None
    args = res["args"]
    if "-fitt" in args:
        margins = [int(x) * (1 << 20) for x in args[args.index("-fitt") + 1].split(",")]
    return {
        "schema": 1,
        "case": f"{m.name}/{case.slug}",
        "model": m.name,
        "arch": m.arch,
        "gguf": m.path.name,
        "spec": m.spec,
        "llama_build": LLAMA_BUILD,
        "tool": "fit-params",
        "args": args,
        "rpc": eps[: case.n_dev],
        "devices": [
            {"name": f"RPC{i}", "buft": f"RPC0[{eps[i]}]", "total_bytes": FAKE_MIB[i] << 20,
             "free_bytes": FAKE_MIB[i] << 20}
            for i in range(case.n_dev)
        ],
        "margin_bytes": margins or [1024 << 20] * case.n_dev,
        "fitted": res["fitted"],
        # the fitted flags measured by the probe (completion semantics, like fit's own probes)
        "measure_args": res["measure_args"],
        "projected": projected,
        "n_layer": int(meas.get("n_layer", 0)) + int(meas.get("n_layer_nextn", 0) or 0),
        # 4 = pipeline parallelism in the fitted configuration (bigger compute buffers than
        # in fit's own intermediate probes, see RECORDING.md)
        "sched_copies": parse_log(_lines(meas))["copies"],
        "n_ctx": meas.get("n_ctx"),
    }


# ----------------------------------------------------------------------------------------------
# running a case and turning the probe output into a fixture
# ----------------------------------------------------------------------------------------------
def run_probe(probe: Path, m: ModelInfo, case: Case, eps: list[str], timeout: int, real: bool = False) -> dict:
    cmd = [str(probe), "--oracle-tool", case.tool, "-m", str(m.path)]
    if real:
        cmd.append("--oracle-real-load")
    if case.n_dev > 0:
        cmd += ["--rpc", ",".join(eps[: case.n_dev])]
    cmd += case.args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = p.stdout.strip()
    if not out.startswith("{"):
        return {"error": f"probe rc={p.returncode}: {p.stderr.strip()[-400:]}"}
    return json.loads(out)


def _lines(raw: dict) -> list[str]:
    return [LOG_PREFIX.sub("", ln) for ln in raw.get("log", [])]


def parse_log(lines: list[str]) -> dict:
    d: dict = {"layers": {}, "cells_swa": None, "cells_base": None, "splits": None,
               "output": None, "fa": None, "copies": None, "overridden": {}, "notes": [],
               "kv_layers": {"attn": [], "recr": []}}
    for ln in lines:
        mm = re.search(r"layer\s+(\d+) assigned to device (\S+?), is_swa = (\d)", ln)
        if mm:
            d["layers"][int(mm.group(1))] = (mm.group(2), mm.group(3) == "1")
            continue
        mm = re.search(r"graph(?: \(pp bs=\d+, tg bs=\d+\))?: nodes = [^,]+, splits = (\d+)(?: / (\d+))?", ln)
        if mm:
            pp = int(mm.group(1))
            tg = int(mm.group(2)) if mm.group(2) else pp
            d["splits"] = {"pp": pp, "tg": tg}
            continue
        mm = re.search(r"creating\s+SWA KV cache, size = (\d+) cells", ln)
        if mm:
            d["cells_swa"] = int(mm.group(1))
            continue
        mm = re.search(r"creating non-SWA KV cache, size = (\d+) cells", ln)
        if mm:
            d["cells_base"] = int(mm.group(1))
            continue
        mm = re.search(r"llama_context:\s+(\S+)\s+output buffer size =\s+([\d.]+) MiB", ln)
        if mm:
            d["output"] = (mm.group(1), float(mm.group(2)))
            continue
        # per-layer placement of the attention KV cache / recurrent state (llama_kv_cache and
        # llama_memory_recurrent constructors); "filtered"/"skipped" layers have none
        mm = re.search(r"^(llama_kv_cache|llama_memory_recurrent)[:,] layer\s+(\d+): dev = (\S+)", ln)
        if mm:
            kind = "attn" if mm.group(1) == "llama_kv_cache" else "recr"
            d["kv_layers"][kind].append([int(mm.group(2)), mm.group(3)])
            continue
        mm = re.search(r"^tensor \S+ \(.*\) buffer type overridden to (\S+)", ln)
        if mm:
            d["overridden"][mm.group(1)] = d["overridden"].get(mm.group(1), 0) + 1
            continue
        mm = re.search(r"sched copies = (\d+)", ln)
        if mm:
            d["copies"] = int(mm.group(1))
            continue
        mm = re.search(r"llama_context: flash_attn\s+= (\S+)", ln)
        if mm and d["fa"] is None:
            d["fa"] = mm.group(1)
            continue
        # resolve_fused_ops decides -fa auto: "Flash Attention enabled" / "... set to disabled"
        mm = re.search(r"resolve_fused_ops: Flash Attention (.*)", ln)
        if mm:
            d["fa"] = "disabled" if "disabled" in mm.group(1) else "enabled"
    return d


def kv_streams(raw: dict) -> int:
    return 1 if raw.get("kv_unified") else max(1, int(raw.get("n_seq_max", 1)))


def to_fixture(m: ModelInfo, case: Case, raw: dict, eps: list[str]) -> dict:
    lines = _lines(raw)
    lg = parse_log(lines)
    notes: list[str] = []
    n_layer = int(raw["n_layer"]) + int(raw.get("n_layer_nextn", 0) or 0)
    layers = []
    for il in sorted(lg["layers"]):
        dev, is_swa = lg["layers"][il]
        layers.append({"index": il, "device": dev})
    buffers = []
    dev_order = {d["name"]: i for i, d in enumerate(raw["devices"])}

    def border(b):  # devices in llama.cpp order, then the host-side buffer types by name
        return (dev_order.get(b["device"], len(dev_order)), b["buft"])

    split = raw.get("split_buffers")
    fx_devices = [
        {"name": d["name"], "buft": d["buft"], "total_bytes": d["total_bytes"], "free_bytes": d["free_bytes"]}
        for d in raw["devices"]
    ]
    if split is not None:
        # -sm tensor: the Meta device's row is replaced by one row per simple device (what
        # each server allocated); the Meta row (dry run: unsplit sizes) is kept in notes
        for b in raw["buffers"]:
            if is_meta_row(b):
                notes.append(f"Meta breakdown (dry run, unsplit): model {b['model']} context "
                             f"{b['context']} compute {b['compute']}")
        fx_devices = []
        for i, sb in enumerate(split):
            name, buft = f"RPC{i}", f"RPC0[{eps[i]}]"
            mib = FAKE_MIB[i] << 20
            fx_devices.append({"name": name, "buft": buft, "total_bytes": mib, "free_bytes": mib})
            buffers.append({"buft": buft, "device": name, "is_host": False, "model": sb["model"],
                            "context": sb["context"], "compute": sb["compute"]})
    for b in sorted(raw["buffers"], key=border):
        if split is not None and is_meta_row(b):
            continue
        # host buffer types have no device of their own (ggml_backend_buft_get_device = NULL)
        dev = b["device"] if b["device"] is not None else "CPU"
        buffers.append({
            "buft": b["buft"], "device": dev, "is_host": b["is_host"],
            "model": b["model"], "context": b["context"], "compute": b["compute"],
        })
    # output buffer: llama_context::output_reserve(n_seq_max) at construction: 4 * n_vocab *
    # max(n_seq_max, n_seq_max) bytes (logits only; no embeddings, no backend sampling). The log
    # prints it to 2 decimals in MiB; keep the exact formula value only if it matches the log.
    output = None
    if lg["output"] is not None:
        buft, mib = lg["output"]
        exact = 4 * int(raw["n_vocab"]) * int(raw["n_seq_max"])
        if abs(exact / 1048576.0 - mib) <= 0.0051:
            output = {"buft": buft, "bytes": exact}
        else:
            notes.append(f"output buffer log {mib} MiB != 4*n_vocab*n_seq_max")
    n_stream = kv_streams(raw)
    kv = {
        "n_ctx": raw["n_ctx"],
        "n_ctx_seq": raw["n_ctx_seq"],
        "n_stream": n_stream,
        "cells_swa": lg["cells_swa"],
        # [layer, device] for every layer that has attention KV / recurrent state
        "layers_attn": sorted(lg["kv_layers"]["attn"]),
        "layers_recr": sorted(lg["kv_layers"]["recr"]),
    }
    fx = {
        "schema": 1,
        "case": f"{m.name}/{case.slug}",
        "model": m.name,
        "arch": m.arch,
        "gguf": m.path.name,
        "spec": m.spec,
        "llama_build": LLAMA_BUILD,
        "tool": case.tool,
        "args": case.args,
        "rpc": eps[: case.n_dev],
        "devices": fx_devices,
        "buffers": buffers,
        "output_buffer": output,
        "layers": layers,
        "n_layer": n_layer,  # block_count, NextN blocks included; layers[n_layer] = output
        "n_layer_nextn": int(raw.get("n_layer_nextn", 0) or 0),
        "graph_splits": lg["splits"],
        "kv": kv,
        "ctx": {
            "n_seq_max": raw["n_seq_max"],
            "n_batch": raw["n_batch"],
            "n_ubatch": raw["n_ubatch"],
            "n_outputs_max": raw["n_outputs_max"],
            "kv_unified": raw["kv_unified"],
            "flash_attn": lg["fa"],
            "sched_copies": lg["copies"],
        },
        # -ot / --cpu-moe / --n-cpu-moe: how many tensors each override sent where (the
        # requested CPU becomes CPU_REPACK for repackable types unless -nr)
        "overridden": dict(sorted(lg["overridden"].items())),
        "notes": "; ".join(notes + case_notes(lines)),
    }
    return fx


def case_notes(lines: list[str]) -> list[str]:
    """Warnings and decisions llama.cpp logged that change memory (kept short)."""
    keep = []
    pats = [
        r"pipeline parallelism enabled",
        r"rounding down",
        r"padding V cache",
        r"enabling flash_attn",
        r"Flash Attention .* set to \w+",
        r"cannot be used with preferred buffer type",
        r"quantized V cache",
        r"n_ctx_seq \(\d+\) > n_ctx_train",
    ]
    for ln in lines:
        # token_embd alone never repacks (it is read by get_rows): present in every case, noise
        if re.search(r"tensor 'token_embd.weight' \(\w+\) \(and 0 others\) cannot be used", ln):
            continue
        for p in pats:
            if re.search(p, ln):
                s = ln.strip()
                if s not in keep:
                    keep.append(s[:200])
    return keep


def dump_fixture(fx: dict) -> str:
    """Stable, compact JSON: one top-level key per line, one device/buffer per line."""
    parts = []
    for k, v in fx.items():
        if k in ("devices", "buffers", "projected") and v:
            inner = ",\n  ".join(json.dumps(x) for x in v)
            parts.append(f'"{k}": [\n  {inner}\n ]')
        else:
            parts.append(f"{json.dumps(k)}: {json.dumps(v)}")
    return "{\n " + ",\n ".join(parts) + "\n}\n"


def check_fixture(fx: dict) -> list[str]:
    errs = []
    idx = [l["index"] for l in fx["layers"]]
    if idx != list(range(fx["n_layer"] + 1)):
        errs.append(f"layers {idx[:3]}..{idx[-3:] if idx else []} do not cover 0..={fx['n_layer']}")
    if not fx["buffers"]:
        errs.append("no buffers")
    if fx["graph_splits"] is None:
        errs.append("no graph splits in log")
    return errs


def compare_real(probe: Path, m: ModelInfo, c: Case, eps: list[str], timeout: int) -> None:
    """Dry run (no_alloc, load_mode none) vs a real load (default mmap, weights read)."""
    dry = run_probe(probe, m, c, eps, timeout)
    real = run_probe(probe, m, c, eps, timeout, real=True)
    tag = f"{m.name}/{c.slug}"
    if "buffers" not in dry or "buffers" not in real:
        print(f"{tag}: error dry={dry.get('error')} real={real.get('error')}")
        return
    bd = {b["buft"]: b for b in dry["buffers"]}
    br = {b["buft"]: b for b in real["buffers"]}
    diffs = []
    for buft in sorted(set(bd) | set(br)):
        x, y = bd.get(buft), br.get(buft)
        if x is None or y is None:
            diffs.append(f"{buft}: only in {'real' if x is None else 'dry'} "
                         f"{(y or x)['model']}/{(y or x)['context']}/{(y or x)['compute']}")
            continue
        for k in ("model", "context", "compute"):
            if x[k] != y[k]:
                diffs.append(f"{buft}.{k}: dry {x[k]} real {y[k]} ({y[k] - x[k]:+d})")
    sd, sr = parse_log(_lines(dry))["splits"], parse_log(_lines(real))["splits"]
    if sd != sr:
        diffs.append(f"splits dry {sd} real {sr}")
    od, orr = parse_log(_lines(dry))["output"], parse_log(_lines(real))["output"]
    if od != orr:
        diffs.append(f"output buffer dry {od} real {orr}")
    print(f"{tag}: " + ("identical" if not diffs else "; ".join(diffs)), flush=True)


# ----------------------------------------------------------------------------------------------
def discover(gguf_dirs: list[Path], specs_dir: Path | None, only: set[str] | None) -> list[tuple[str, Path, str | None]]:
    found = []
    for d in gguf_dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.gguf")):
            name = p.stem
            if only and name not in only:
                continue
            spec = None
            if specs_dir is not None and (specs_dir / f"{name}.toml").exists():
                spec = f"oracle/specs/{name}.toml"
            found.append((name, p, spec))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, default=Path(os.environ.get("ORACLE_CACHE", "/work/cache")) / f"llama.cpp-b{LLAMA_BUILD}/build")
    ap.add_argument("--gguf-dir", type=Path, action="append", default=None,
                    help="directory of <model>.gguf files (repeatable)")
    ap.add_argument("--specs", type=Path, default=Path(__file__).resolve().parent / "specs")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests/fixtures/oracle")
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--case", default="", help="regex on case slug")
    ap.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE)
    # one case at a time: a ggml-rpc-server serves one client connection at a time, so two
    # concurrent clients that each hold one server and wait for the other deadlock (seen with
    # llama-fit-params, which reconnects for every probe)
    ap.add_argument("--jobs", type=int, default=1, help="parallel cases (only safe without RPC)")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--fit-out", type=Path,
                    default=Path(__file__).resolve().parent.parent / "tests/fixtures/oracle-fit")
    ap.add_argument("--no-fit", action="store_true", help="skip the llama-fit-params cases")
    ap.add_argument("--compare-real", action="store_true",
                    help="no fixtures: run each case as dry run and as a real load, print the differences")
    ap.add_argument("--raw", type=Path, default=None, help="also keep raw probe output (with logs) here")
    ap.add_argument("--cases-json", type=Path, default=None,
                    help="record these cases instead of the matrix: a JSON list of "
                         "{model, slug, args, n_dev} (oracle/record_plans.sh writes it from `ggplan plan`)")
    a = ap.parse_args()

    probe = a.build / "oracle/oracle-probe"
    shim = a.build / "oracle/libfakemem.so"
    server = a.build / "bin/ggml-rpc-server"
    for f in (probe, shim, server):
        if not f.exists():
            print(f"missing {f}: run oracle/build.sh first", file=sys.stderr)
            return 1
    gdirs = a.gguf_dir or [Path(os.environ.get("ORACLE_CACHE", "/work/cache")) / "oracle-gguf"]
    only = set(x for x in a.only.split(",") if x) or None
    given = json.loads(a.cases_json.read_text()) if a.cases_json else None
    if given is not None:
        only = {c["model"] for c in given}
    models = discover(gdirs, a.specs, only)
    if not models:
        print("no models found", file=sys.stderr)
        return 1

    t0 = time.time()
    farm = RpcFarm(server, shim, a.port_base, FAKE_MIB)
    signal.signal(signal.SIGTERM, lambda *_: (farm.stop(), sys.exit(1)))
    eps = farm.endpoints
    jobs = []
    infos = []
    for name, path, spec in models:
        m = read_model(name, path, spec)
        infos.append(m)
        if given is not None:
            cases = [Case(c["slug"], c.get("tool", "server"), c["args"], c["n_dev"])
                     for c in given if c["model"] == name]
        else:
            cases = matrix(m, eps) + ([] if a.no_fit or a.compare_real else fit_matrix(m, eps))
        for c in cases:
            if a.case and not re.search(a.case, c.slug):
                continue
            jobs.append((m, c))
    print(f"{len(jobs)} cases over {len(infos)} models", flush=True)

    failures = []
    counts: dict[str, int] = {}
    if a.compare_real:
        try:
            for m, c in jobs:
                compare_real(probe, m, c, eps, a.timeout)
        finally:
            farm.stop()
        return 0

    def work(job):
        m, c = job
        t = time.time()
        try:
            if c.tool == "fit-params":
                return m, c, run_fit(a.build, probe, m, c, eps, a.timeout), time.time() - t
            if is_sm_tensor(c):
                return m, c, run_sm_tensor(probe, farm, m, c, eps, a.timeout), time.time() - t
            raw = run_probe(probe, m, c, eps, a.timeout)
        except subprocess.TimeoutExpired:
            return m, c, {"error": "timeout"}, time.time() - t
        return m, c, raw, time.time() - t

    if not a.case and given is None:
        # full matrix for these models: drop their old fixtures so removed cases do not linger
        for m in infos:
            for old in (a.out / m.name).glob("*.json"):
                old.unlink()
            if not a.no_fit:
                for old in (a.fit_out / m.name).glob("*.json"):
                    old.unlink()
    try:
        with ThreadPoolExecutor(max_workers=a.jobs) as ex:
            for m, c, raw, dt in ex.map(work, jobs):
                tag = f"{m.name}/{c.slug}"
                if a.raw:
                    rp = a.raw / m.name / f"{c.slug}.json"
                    rp.parent.mkdir(parents=True, exist_ok=True)
                    rp.write_text(json.dumps(raw, indent=1))
                if c.tool == "fit-params":
                    if "error" in raw or "buffers" not in raw.get("measured", {}):
                        err = raw.get("error") or raw.get("measured", {}).get("error", "no breakdown")
                        failures.append((tag, err, []))
                        print(f"FAIL {tag} ({dt:.1f}s): {err}", flush=True)
                        continue
                    out = a.fit_out / m.name / f"{c.slug}.json"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(dump_fixture(fit_fixture(m, c, raw, eps)))
                    counts["fit-params"] = counts.get("fit-params", 0) + 1
                    print(f"ok   {tag} ({dt:.1f}s) {raw['fitted']['raw']}", flush=True)
                    continue
                if "error" in raw or "buffers" not in raw:
                    err = raw.get("error", "no breakdown")
                    tail = [ln for ln in _lines(raw) if re.search(r"error|failed|exception", ln, re.I)][-3:]
                    failures.append((tag, err, tail))
                    print(f"FAIL {tag} ({dt:.1f}s): {err} {tail}", flush=True)
                    continue
                fx = to_fixture(m, c, raw, eps)
                errs = check_fixture(fx)
                if errs:
                    failures.append((tag, "; ".join(errs), []))
                    print(f"BAD  {tag}: {errs}", flush=True)
                    continue
                out = a.out / m.name / f"{c.slug}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(dump_fixture(fx))
                counts[m.arch] = counts.get(m.arch, 0) + 1
                print(f"ok   {tag} ({dt:.1f}s)", flush=True)
    finally:
        farm.stop()

    dt = time.time() - t0
    print(f"\nrecorded {sum(counts.values())} fixtures, {len(failures)} failed, in {dt:.0f} s")
    for arch in sorted(counts):
        print(f"  {arch:20s} {counts[arch]}")
    for tag, err, tail in failures:
        print(f"  failed: {tag}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
