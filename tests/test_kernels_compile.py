"""Every Triton kernel the decode and prefill paths launch, compiled for real GPUs on the CPU.

The CPU kernel tests run under TRITON_INTERPRET=1, which executes kernels with NumPy and never
builds them: a kernel only a GPU build rejects (a name bound to a (1024,) mask in one branch of an
`if` and to a (32,) mask in the other, say) passes there. Here the real entry points run on the
meta device (the model's decode and prefill, the runner's step tail and first-token pick, for the
three dev models, bf16, batch 1 and 16, each RUNTIME_PDL mode and the A/B settings) with
JITFunction.run replaced by the recorder the start-up's kernel pre-build uses
(runtime/kernels/prebuild.py): Triton's own binder turns each launch into the signature,
constexprs, integer and alignment specialisation and options a GPU launch would compile. Nothing
is written per kernel, so a new kernel or argument is picked up as soon as a path launches it.

Building all ~600 for three targets would take minutes (~0.3 s each, mostly the lowering to
LLVM and ptxas), so:
  every distinct launch goes through Triton's front end to Triton IR on every target: that is
    where the language-level errors come from (types and shapes, constexpr branches, helpers);
  a full build to a cubin, ptxas included, takes one launch per kernel, argument types, warps and
    stages on each target, and on sm_90 (the H100) one per distinct constexprs too (PDL aside:
    the default mode's launch, which has every griddepcontrol instruction).
sm_80 (A100) and sm_120 (consumer Blackwell) run where the bundled ptxas lists them. The builds
run in forked workers, one per core: compiling holds the GIL.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import itertools
import json
import os
import pkgutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

import runtime.kernels
from graphs.buckets import prefill_lengths
from runtime.engine import runner
from runtime.engine.state import DecodeBuffers, KVCache
from runtime.kernels import (
    _triton,
    attention_plan,
    fused_linear,
    fused_rows_config,
    gemv_blocks,
    ops,
    prebuild,
    tuning_store,
)
from runtime.kernels.position_plan import spill_positions
from runtime.kernels.prebuild import Launch
from runtime.models.decoder import DecoderLM
from runtime.models.loader import read_spec
from runtime.models.sources import shipped_config

try:  # the recorder and the builds use Triton 3.6's own binder and compiler stages
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction
except ImportError:
    pytest.skip("triton is not installed", allow_module_level=True)

if _triton.INTERPRETING:
    pytest.skip(
        "TRITON_INTERPRET=1: kernels are interpreted here, never compiled; run this file without it",
        allow_module_level=True,
    )

META = torch.device("meta")
DTYPE = torch.bfloat16
MODELS = ("Llama-3.2-1B-Instruct", "Qwen3-1.7B", "gemma-3-1b-it")  # configs/models/<name>.json
BATCHES = (1, 16, 64)  # batch 1, a batch bucket, and one whose (row, kv head) pairs fill the card (one split)
CAPACITY = 4096  # the runner's default cache length
PROMPT = 7  # an eager prompt: more than one token, not a multiple of 16 (Triton specialises both)
BIG_VOCAB = 2 * 262144  # a vocabulary whose top-k merge takes several rounds (_group_kernel)
# the A/B settings, each recorded in the default PDL mode: they change constexprs of their kernels
AB_SETTINGS = (
    {"RUNTIME_BATCH_ROWS": "fused"},
    {"RUNTIME_ATTN_EARLY_TABLES": "0"},
    {"RUNTIME_ATTN_EARLY_ROW_SCALE": "0"},
    {"RUNTIME_ATTN_LOADS": "serial"},
    {"RUNTIME_ATTN_V_MOVE": "early"},
    {"RUNTIME_ATTN_V_MOVE": "late"},
    {"RUNTIME_ATTN_LOADS": "serial", "RUNTIME_ATTN_EARLY_TABLES": "0"},
    {"RUNTIME_PHASE_CLOCK": "1"},
    {"RUNTIME_ATTN_MERGE": "last"},
    {"RUNTIME_ATTN_PREFETCH": "0"},
    {"RUNTIME_ATTN_MERGE_CHUNKS": "4"},
    {"RUNTIME_ATTN_MERGE_CHUNKS": "1"},
    {"RUNTIME_ATTN_WIDE_BLOCKS": "1"},
    {"RUNTIME_ATTN_WIDE_BLOCKS": "batch"},
    {"RUNTIME_ATTN_STAGES": "3"},
    {"RUNTIME_MERGE_PDL": "early"},
    {"RUNTIME_BATCH_GEMM": "rows"},
    {"RUNTIME_BATCH_GEMM": "rows_qkv"},
    {"RUNTIME_GEMV_FIRST_TILE": "after_row"},
    {"RUNTIME_QKV_PDL": "early"},
    {"RUNTIME_QKV_PDL": "long"},
    {"RUNTIME_ATTN_AHEAD": "auto"},
    {"RUNTIME_ATTN_AHEAD": "0"},
    {"RUNTIME_RESIDUAL_ADD": "o,down"},
    {"RUNTIME_GEMV_EARLY": "o,gate_up,down"},
)

# @jit kernels no recorded path launches, with the reason
NOT_LAUNCHED = {
    "runtime.kernels.topk._merge_kernel": "top_candidates_triton's last stage: a test entry point",
    # Gluon, opt-in (RUNTIME_ROWS_MMA) and never recorded on meta tensors (mma_rows.takes needs a
    # CUDA tensor): test_mma_rows.py builds its variants for each target instead
    "runtime.kernels.mma_rows._mma_rows_kernel": "opt-in Gluon kernel, built by test_mma_rows.py",
    "runtime.kernels.mma_rows._w_tile": "called by _mma_rows_kernel",
    "runtime.kernels.mma_rows._x_tile": "called by _mma_rows_kernel",
    "runtime.kernels.mma_rows._gdc_wait": "called by _mma_rows_kernel",
    "runtime.kernels.mma_rows._gdc_launch_dependents": "called by _mma_rows_kernel",
}


@dataclass(frozen=True)
class Target:
    name: str
    capability: tuple[int, int]
    sms: int  # a card's SM count: it sets the attention splits, and so BLOCK_P
    build_all_constexprs: bool  # a build per distinct constexprs, else per types, warps and stages

    @property
    def gpu(self) -> GPUTarget:
        return GPUTarget("cuda", 10 * self.capability[0] + self.capability[1], 32)


TARGETS = (
    Target("sm_90", (9, 0), 132, True),  # H100 SXM
    Target("sm_80", (8, 0), 108, False),  # A100
    Target("sm_120", (12, 0), 170, False),  # RTX 5090
)


def ptxas_refuses(target: Target) -> str | None:
    """None if the bundled ptxas builds for target, else why not."""
    try:
        ptxas = get_ptxas(target.gpu.arch).path
    except RuntimeError as e:  # no ptxas at all
        return str(e)
    arch = sm_arch_from_capability(target.gpu.arch)
    listed = subprocess.run([ptxas, "--help"], capture_output=True, text=True).stdout
    return None if arch in listed else f"{ptxas} does not list {arch}"


# ---------------------------------------------------------------- one recorded launch


def short_name(fn: JITFunction) -> str:
    return f"{fn.fn.__module__}.{fn.fn.__qualname__}".removeprefix("runtime.kernels.")


def build_key(launch: Launch, target: Target) -> tuple:
    """Launches with one key share a full build on target."""
    types = tuple(t for t in launch.signature.values() if t != "constexpr")
    key = (launch.fn, types, launch.options.num_warps, launch.options.num_stages)
    if target.build_all_constexprs:
        key += (repr({n: v for n, v in launch.constants().items() if n != "PDL"}),)
    return key


def describe(launch: Launch) -> str:
    return f"{launch.constants()} num_warps={launch.options.num_warps} num_stages={launch.options.num_stages}"


def front_end(launch: Launch, target: GPUTarget) -> None:
    """Source to Triton IR, as triton.compile starts (Triton 3.6): where a kernel's types, shapes
    and constexpr branches are checked."""
    backend = make_backend(target)
    src = launch.source()
    options = backend.parse_options(dict(launch.options.__dict__, **src.parse_options()))
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    codegen = backend.get_codegen_implementation(options)
    module = src.make_ir(target, options, codegen, backend.get_module_map(), context)
    stages = {}
    backend.add_stages(stages, options, src.language)
    stages["ttir"](module, {})


# ---------------------------------------------------------------- recording launches


@contextmanager
def recording(target: Target) -> Iterator[prebuild.Recorder]:
    """Kernel launches recorded for target instead of run (prebuild.recording, as the runtime's
    start-up records them; meta tensors sit at address 0, so every pointer counts as 16-byte
    aligned, as the runtime's own buffers are), with PDL and the attention splits decided as on a
    card of its capability and SM count, every RUNTIME_* setting at its default and no GEMV
    blocks tuned."""
    real_pdl = _triton.pdl
    with prebuild.recording(target.gpu) as rec, pytest.MonkeyPatch.context() as mp:
        # pdl() turns PDL on for CUDA devices of capability >= 9.0 only: ask it as for the target
        mp.setattr(_triton, "_capability", lambda index: target.capability)
        for module in kernel_modules():
            if getattr(module, "pdl", None) is real_pdl:
                mp.setattr(module, "pdl", lambda device, **kw: real_pdl(torch.device("cuda", 0), **kw))
        mp.setattr(attention_plan, "sm_count", lambda device: target.sms)
        mp.setattr(attention_plan, "l2_bytes", lambda device: 50 * 2**20)  # an H100's
        mp.setattr(fused_linear, "_TUNED", {})
        # no shipped role lists: the residual add in o only, no GEMV releasing early
        mp.setattr(gemv_blocks, "SHIPPED_ROLES", {field: set() for field in gemv_blocks.ROLE_LISTS})
        mp.setattr(fused_rows_config, "_TUNED_ROWS", {})
        for name in [k for k in os.environ if k.startswith("RUNTIME_")]:
            mp.delenv(name)
        mp.setenv("RUNTIME_KERNELS", "triton")
        yield rec


@contextmanager
def setting(
    rec: prebuild.Recorder, label: str, env: dict[str, str], gemv_blocks: dict | None = None
) -> Iterator[None]:
    """Launches in here are recorded under label, with env set (and the GEMV blocks chosen)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        if gemv_blocks is not None:
            mp.setattr(fused_linear, "_TUNED", gemv_blocks)
        rec.where = label
        yield


# ---------------------------------------------------------------- what the runtime launches


@functools.cache
def kernel_modules() -> tuple:
    return tuple(
        importlib.import_module(f"runtime.kernels.{m.name}")
        for m in pkgutil.iter_modules(runtime.kernels.__path__)
    )


@functools.cache
def model(name: str) -> DecoderLM:
    """The dev model on the meta device, cut to the layers that launch something different: each
    kind of rope and window, and a second layer (the first has no residual to add)."""
    spec = read_spec(shipped_config(name))
    kinds = list(zip(spec.rope, spec.sliding_window))
    keep = max(2, 1 + max(kinds.index(k) for k in kinds))
    spec = dataclasses.replace(
        spec, layers=keep, rope=spec.rope[:keep], sliding_window=spec.sliding_window[:keep]
    )
    with torch.device(META):
        lm = DecoderLM(spec)
    lm = lm.to(DTYPE)
    lm.prepare()
    return lm.eval()


def buffers(batch: int, vocab: int) -> tuple[DecodeBuffers, torch.Tensor]:
    nonfinite_at = torch.full((batch,), -1, dtype=torch.int64, device=META)
    return DecodeBuffers.allocate(batch, vocab, META), nonfinite_at


def decode(lm: DecoderLM, batch: int) -> None:
    """Runner._step for each sampler variant: the model's decode step, then its tail, then the new
    tokens into the host's ring (on the meta device here; pinned host memory in the runner)."""
    cache = KVCache(lm.spec, batch, CAPACITY, META, DTYPE)
    buf, nonfinite_at = buffers(batch, lm.spec.vocab)
    ring = torch.zeros((runner.TOKEN_RING, batch), dtype=torch.int64, device=META)
    logits = lm.decode(buf.tokens, buf.positions, cache)
    for variant in runner.VARIANTS:
        runner.step_tail(logits, buf, nonfinite_at, variant)
        ops.publish_tokens(buf.tokens, buf.positions, ring)


def prefill(lm: DecoderLM) -> None:
    """Runner.prefill: an eager prompt from position 0 and a one-token continuation, each then
    picking the first token by each variant; and PrefillGraphs' padded prompt of the first bucket."""
    cache = KVCache(lm.spec, 1, CAPACITY, META, DTYPE)
    buf, _ = buffers(1, lm.spec.vocab)
    for start, T in ((0, PROMPT), (PROMPT, 1)):
        tokens = torch.zeros((1, T), dtype=torch.int64, device=META)
        logits = lm.prefill(tokens, cache, row=0, start=start)
        end = torch.full((1,), start + T, dtype=torch.int64, device=META)
        for variant in runner.VARIANTS:
            runner.next_token(logits, end, buf, slice(0, 1), variant)
    T = prefill_lengths(CAPACITY)[0]
    one = torch.ones(1, dtype=torch.int64, device=META)
    lm.prefill_padded(torch.zeros((1, T), dtype=torch.int64, device=META), one, cache, one * 0)


def other_ops(lm: DecoderLM) -> None:
    """What ops.py and the sampler launch beyond the dev models' own steps: ops.decode_attention
    (the decoder uses qkv_decode_attention) with the model's shapes, and the top-k sampler's merge
    rounds, which start past 262144 logits."""
    spec = lm.spec
    for batch in BATCHES:
        q = torch.empty((batch, spec.heads, spec.head_dim), dtype=DTYPE, device=META)
        kv = torch.empty((batch, spec.kv_heads, CAPACITY, spec.head_dim), dtype=DTYPE, device=META)
        lengths = torch.ones(batch, dtype=torch.int64, device=META)
        ops.decode_attention(q, kv, kv, lengths, spec.softmax_scale)
    buf, nonfinite_at = buffers(1, BIG_VOCAB)
    logits = torch.empty((1, BIG_VOCAB), dtype=torch.float32, device=META)
    runner.step_tail(logits, buf, nonfinite_at, "topk")


def shipped_gemv(capability: tuple[int, int]) -> dict:
    """fused_linear._TUNED as a card of this capability takes it from runtime/kernels/tuned/."""
    tuned = {}
    for path in sorted(tuning_store.SHIPPED_DIR.glob("*.json")):
        card = json.loads(path.read_text())["card"]
        if tuple(card["capability"]) == capability:
            choices = tuning_store.shipped(tuning_store.Card(card["name"], capability, "", ""))
            tuned.update({key: config for key, (config, _) in choices.items()})
    return tuned


@functools.cache
def launches(target: Target) -> tuple[Launch, ...]:
    """Every distinct compile the decode and prefill paths need on target; the default PDL mode's
    first, so the launch a build key keeps is the default mode's."""
    modes = [_triton.PDL_DEFAULT, *(m for m in _triton.PDL_MODES if m != _triton.PDL_DEFAULT)]
    with recording(target) as rec:
        for mode in modes:
            for name in MODELS:
                lm = model(name)
                for path, run in [*paths(lm), ("other ops", functools.partial(other_ops, lm))]:
                    with setting(rec, f"{name} {path} RUNTIME_PDL={mode}", {"RUNTIME_PDL": mode}):
                        run()
        tuned = shipped_gemv(target.capability)
        for name in MODELS:
            lm = model(name)
            for env, (path, run) in itertools.product(AB_SETTINGS, paths(lm)):
                with setting(rec, f"{name} {path} " + " ".join(f"{k}={v}" for k, v in env.items()), env):
                    run()
            if tuned:  # such a card launches these blocks, not the heuristic's
                with setting(rec, f"{name} decode B=1, shipped GEMV blocks", {}, tuned):
                    decode(lm, 1)
    return tuple(rec.launches.values())


def spill_decode(lm: DecoderLM) -> None:
    """The batch-1 step of a spill graph (runtime/engine/spill_graphs.py)."""
    with spill_positions():
        decode(lm, 1)


def paths(lm: DecoderLM) -> list[tuple[str, Callable[[], None]]]:
    return [
        *((f"decode B={batch}", functools.partial(decode, lm, batch)) for batch in BATCHES),
        ("decode B=1, spill graph", functools.partial(spill_decode, lm)),
        ("prefill", functools.partial(prefill, lm)),
    ]


# ---------------------------------------------------------------- compiling, on every core


def full_build(launch: Launch, target: Target) -> None:
    launch.build(target.gpu)


def ir_only(launch: Launch, target: Target) -> None:
    front_end(launch, target.gpu)


# ---------------------------------------------------------------- the tests


def jit_functions() -> dict[str, JITFunction]:
    """Every @jit function defined in runtime/kernels/*.py, by module.name."""
    return {
        f"{v.fn.__module__}.{v.fn.__qualname__}": v
        for module in kernel_modules()
        for v in vars(module).values()
        if isinstance(v, JITFunction) and v.fn.__module__ == module.__name__
    }


def callees(fn: JITFunction) -> set[JITFunction]:
    """The @jit functions fn calls by name (compiled with it)."""
    names = {n.id for n in ast.walk(ast.parse(fn.src)) if isinstance(n, ast.Name)}
    return {v for n in names if isinstance(v := fn.__globals__.get(n), JITFunction) and v is not fn}


def test_every_kernel_is_launched():
    """Each @jit function is launched, or compiled inside one that is, or listed with a reason:
    a recording that silently missed a kernel would leave it untested."""
    launched = {launch.fn for launch in launches(TARGETS[0])}
    compiled, todo = set(launched), list(launched)
    while todo:
        for callee in callees(todo.pop()) - compiled:
            compiled.add(callee)
            todo.append(callee)
    defined = jit_functions()
    missing = {name for name, fn in defined.items() if fn not in compiled} - NOT_LAUNCHED.keys()
    assert not missing, f"@jit functions that no recorded path launches: {sorted(missing)}"
    stale = {name for name in NOT_LAUNCHED if name not in defined or defined[name] in compiled}
    assert not stale, f"NOT_LAUNCHED names kernels that are launched or gone: {sorted(stale)}"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_kernels_compile(target: Target):
    why = ptxas_refuses(target)
    if why is not None:
        pytest.skip(why)
    todo = launches(target)
    assert todo, "no kernel launch was recorded"
    start = time.perf_counter()
    built = {}
    for launch in todo:
        built.setdefault(build_key(launch, target), launch)
    jobs = [(full_build, launch, target) for launch in built.values()]
    jobs += [(ir_only, launch, target) for launch in todo if built[build_key(launch, target)] is not launch]
    errors = prebuild.run_all(jobs, workers=8)

    failed: dict[str, list[tuple[Launch, str]]] = {}
    for (_, launch, _), error in zip(jobs, errors):
        if error is not None:
            failed.setdefault(short_name(launch.fn), []).append((launch, error))
    counts = Counter(short_name(launch.fn) for launch in todo)
    print(
        f"\n{target.name}: {len(todo)} launches of {len(counts)} kernels, {len(built)} built to a cubin, "
        f"the others to Triton IR, in {time.perf_counter() - start:.1f} s: "
        + ", ".join(f"{n} x{c}" for n, c in sorted(counts.items()))
    )
    if failed:
        report = [
            f"{name}: {len(group)} of {counts[name]} launches fail; the first, "
            f"from {group[0][0].where}:\n  {describe(group[0][0])}\n  " + group[0][1].replace("\n", "\n  ")
            for name, group in failed.items()
        ]
        pytest.fail(f"kernels that do not compile for {target.name}:\n" + "\n".join(report), pytrace=False)


def test_blocks_asked_ahead_go_out_before_the_wait():
    """RUNTIME_ATTN_AHEAD (a batch bucket's one-split launch asks by default): the split kernel's
    sm_90 PTX asks L2 for the program's later blocks (prefetch.global.L2) before
    griddepcontrol.wait, where they overlap the qkv product; RUNTIME_ATTN_AHEAD=0's build asks for
    none."""
    target = TARGETS[0]
    why = ptxas_refuses(target)
    if why is not None:
        pytest.skip(why)
    split = [
        launch
        for launch in launches(target)
        if short_name(launch.fn) == "qkv_attention_kernel._qkv_split_kernel"
        and launch.constants()["PDL"] == _triton.PDL_MODES[_triton.PDL_DEFAULT]
        and launch.constants()["DIRECT"]
    ]
    ahead = [launch for launch in split if launch.constants()["AHEAD"]]
    plain = [launch for launch in split if not launch.constants()["AHEAD"]]
    assert ahead and plain, "no batch-bucket split launch with and without AHEAD was recorded"
    ptx = ahead[0].build(target.gpu).asm["ptx"]
    assert "prefetch.global.L2" in ptx
    assert ptx.index("prefetch.global.L2") < ptx.index("griddepcontrol.wait")
    assert "prefetch.global.L2" not in plain[0].build(target.gpu).asm["ptx"]
