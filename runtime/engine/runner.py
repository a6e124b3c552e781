"""Runner: binds a loaded model, its static state and (on CUDA) a pool of captured decode steps.

The decode step reads tokens and positions from the static buffers and writes the next token and
position back into them, so the host only enqueues replays; on CUDA it also writes the new tokens
into a ring in pinned host memory (token_ring), where the host reads them without a copy. Three
variants per batch bucket: "greedy" (argmax), "topk" (sampling among the best TOPK_CANDIDATES
logits, exact for top-k settings up to that size and plain temperature) and "sample" (a sort of
the row, any setting); where a row's cache outgrows L2 while the attention leaves SMs idle, batch 1
has each variant twice, the second for those positions (spill_graphs.py). All are captured at
start-up, before any request, so capture never disturbs a live cache. A prompt from position 0 replays a prefill graph of its length
bucket (runtime/engine/prefill_graphs.py), captured on first use: its warm-up and capture write
only the cache row being prefilled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings

import torch

from graphs.buckets import bucket_for, make_buckets
from graphs.pool import GraphPool
from runtime.engine import step_tuning
from runtime.engine.prefill_graphs import PrefillGraphs
from runtime.engine.sampler import SamplingParams, advance, fused_sampler, sample, sample_step
from runtime.engine.spill_graphs import graph_key, spill_keys, spill_window
from runtime.engine.state import DecodeBuffers, KVCache, kv_cache_bytes
from runtime.errors import RuntimeUserError
from runtime.kernels import argmax, gemv_tuning, ops, prebuild, topk
from runtime.kernels.position_plan import spill_positions
from runtime.kernels.switches import env_choice, env_power_of_two
from runtime.models.loader import LoadedModel, oom_message

VARIANTS = ("greedy", "topk", "sample")
TOPK_CANDIDATES = 128  # the "topk" variant samples among this many best logits
TOKEN_RING = 64  # slots per row of the host ring the step writes its tokens into (publish.py)


def topk_candidates() -> int:
    """The "topk" variant's candidate count: TOPK_CANDIDATES, or RUNTIME_TOPK_CANDIDATES (a power of
    two up to topk.CHUNK; an A/B knob, read where variants are chosen and steps captured). Fewer
    candidates shorten the sampler's selection but send top-k settings above them to the "sample"
    variant's full sort. H200, the topk step against greedy with 64 against 128, four trials each:
    Gemma -8 us, Qwen3 -2, Llama 0 (notes/kernels.md); 128 stays."""
    return env_power_of_two("RUNTIME_TOPK_CANDIDATES", TOPK_CANDIDATES, 2, topk.CHUNK)


def variant_for(params: SamplingParams) -> str:
    """greedy: argmax only; topk: exact while 0 < top_k <= topk_candidates(), for plain
    temperature (top-k off, top-p 1) or with no sampling at all (only a penalty); sample: a
    full-vocabulary sort, any setting."""
    if params.greedy:
        return "greedy"
    plain = params.top_k == 0 and params.top_p >= 1
    if params.temperature == 0 or plain or 0 < params.top_k <= topk_candidates():
        return "topk"
    return "sample"


def _candidates(logits: torch.Tensor, variant: str) -> int:
    """The sampler's candidate set for logits (B, V): topk_candidates() for topk, 0 (a full sort) else."""
    return min(topk_candidates(), logits.shape[-1]) if variant == "topk" else 0


def next_token(
    logits: torch.Tensor, positions: torch.Tensor, buf: DecodeBuffers, rows: slice, variant: str
) -> torch.Tensor:
    """logits (B, V) of `rows` -> next tokens (B,), by the variant's sampler; positions (B,): where
    the tokens go (keys the noise).  # graph: safe"""
    if variant == "greedy":
        return ops.argmax_checked(logits)[0]
    return sample(
        logits, positions, buf.temperature[rows], buf.top_k[rows], buf.top_p[rows],
        buf.repetition_penalty[rows], buf.seed[rows], buf.seen[rows],
        candidates=_candidates(logits, variant),
    )  # fmt: skip


def step_tail_ref(logits: torch.Tensor, buf: DecodeBuffers, nonfinite_at: torch.Tensor, variant: str) -> None:
    """The decode step after the LM head, in place for rows [0, B): logits (B, V) float32 were
    computed at buf.positions[:B]; nonfinite_at (B_max,) int64 takes that position in a row whose
    logits are not finite, unless it holds one (>= 0); the row's next token goes into buf.tokens
    and buf.seen, and its position advances. Plain torch ops (the reference): 9 launches greedy,
    12 topk (the argmax's 2, 4 for the record, `positions + 1`, the sampler's 2, 3 to finish)."""
    B = logits.shape[0]
    tokens, positions = buf.tokens[:B], buf.positions[:B]
    best, bad = ops.argmax_checked(logits)  # one pass: the greedy pick and the finite check
    nonfinite_at[:B] = torch.where(bad & (nonfinite_at[:B] < 0), positions, nonfinite_at[:B])
    nxt = best if variant == "greedy" else next_token(logits, positions + 1, buf, slice(0, B), variant)
    advance(nxt, tokens, positions, buf.seen[:B])


def step_tail(logits: torch.Tensor, buf: DecodeBuffers, nonfinite_at: torch.Tensor, variant: str) -> None:
    """step_tail_ref folded into the kernels: greedy in the argmax's 2 launches; topk in the
    sampler's 3 (2 up to 32768 logits), sample in sort_sample's 5 around one sort: the first
    also checks the logits, the last records and writes token, position and seen. Where the
    fused sampler cannot run (sampler.sample_step): the argmax's 2 (the record only), the
    sampler, 3 torch kernels.
    The reference runs where the op "step_tail" or "argmax_checked" is off.  # graph: safe
    logits may also be bf16 or fp16 (the batch LM head's own output): the kernels widen them as
    they load; the torch paths widen them first. Either way the float32 values decide."""
    if not (ops.enabled("step_tail", logits) and ops.enabled("argmax_checked", logits)):
        return step_tail_ref(logits.float(), buf, nonfinite_at, variant)
    B = logits.shape[0]
    tokens, positions, seen = buf.tokens[:B], buf.positions[:B], buf.seen[:B]
    if variant == "greedy":
        argmax.argmax_step_triton(logits, positions, nonfinite_at[:B], tokens, seen)
        return
    candidates = _candidates(logits, variant)
    logits = logits if fused_sampler(logits, candidates) else logits.float()
    sample_step(
        logits, tokens, positions, buf.temperature[:B], buf.top_k[:B], buf.top_p[:B],
        buf.repetition_penalty[:B], buf.seed[:B], seen,
        candidates=candidates, nonfinite_at=nonfinite_at[:B],
    )  # fmt: skip


class Runner:
    def __init__(
        self, loaded: LoadedModel, *, capacity: int | None = None, max_batch: int = 1, mode: str = "auto"
    ):
        self.loaded, self.model, self.spec = loaded, loaded.model, loaded.spec
        self.device = self.model.device
        self.capacity = capacity or min(self.spec.max_positions, 4096)
        if self.capacity < 2:
            raise RuntimeUserError(f"--max-seq-len must be at least 2, got {self.capacity}")
        self.max_batch = max_batch
        self.buckets = make_buckets(max_batch)
        if mode not in ("auto", "graph", "eager"):
            raise RuntimeUserError(f"unknown mode {mode!r}; choose graph or eager")
        if mode == "graph" and self.device.type != "cuda":
            raise RuntimeUserError("--mode graph needs a CUDA device; use --mode eager on the CPU")
        self.mode = ("graph" if self.device.type == "cuda" else "eager") if mode == "auto" else mode
        try:
            self.cache = KVCache(self.spec, max_batch, self.capacity, self.device, self.model.dtype)
            self.buffers = DecodeBuffers.allocate(max_batch, self.spec.vocab, self.device)
        except torch.cuda.OutOfMemoryError as e:
            need = kv_cache_bytes(self.spec, self.capacity, max_batch, self.model.dtype)
            raise RuntimeUserError(
                oom_message(
                    "allocating the KV cache", need, self.device, "lower --max-seq-len or the max batch"
                )
            ) from e
        # first position where a row's logits were not finite (-1 = none); read after a request
        self.nonfinite_at = torch.full((max_batch,), -1, dtype=torch.int64, device=self.device)
        self.token_ring = self._token_ring()
        # batch-1 steps at positions in [start, end) replay the spill graphs (spill_graphs.py)
        self.spill_window = spill_window(self.model, self.capacity, self.device)
        self.pool: GraphPool | None = None
        self.capture_error: str | None = None
        self.tune_s = 0.0
        self.prebuild: prebuild.Prebuild | None = None  # the kernels built ahead of the capture
        self.gemv_blocks: str | None = None  # the batch-1 GEMVs' blocks and their source, for the record
        if self.mode == "graph":
            if ops.enabled("linear", self.model.embed.weight):  # pick the GEMV blocks on this card
                self.tune_s = gemv_tuning.tune_shapes(
                    self.model.gemv_shapes(), self.model.dtype, self.device, self.buckets
                )
                self.tune_s += step_tuning.refine(self)  # tune()'s finalists timed in the step
                self.gemv_blocks = gemv_tuning.describe(self.model.gemv_shapes(), self.model.dtype)
            self._capture()
        # prompts from position 0 replay a graph per length bucket (RUNTIME_PREFILL_GRAPHS=0: eager)
        self.prefill_graphs: PrefillGraphs | None = None
        if self.mode == "graph" and os.environ.get("RUNTIME_PREFILL_GRAPHS", "1") != "0":
            self.prefill_graphs = PrefillGraphs(self.model, self.cache, self.capacity, self.device)

    # graph: everything below `_step` is captured; it touches only fixed-address tensors
    def _step(self, key: tuple) -> None:
        B, variant, *spill = key  # (B, variant), or (1, variant, "spill"): spill_graphs.graph_key
        buf = self.buffers
        tokens, positions = buf.tokens[:B], buf.positions[:B]
        # (B, V): float32, or bf16 from cuBLAS at B > 1 where the tail's kernels widen as they load
        widen = not ops.enabled("narrow_logits", positions)
        with spill_positions() if spill else contextlib.nullcontext():
            logits = self.model.decode(tokens, positions, self.cache, widen_logits=widen)
        step_tail(logits, buf, self.nonfinite_at, variant)  # next token, position, seen, the record
        if self.token_ring is not None:  # the new tokens into the host's ring, at their new positions
            ops.publish_tokens(tokens, positions, self.token_ring)

    def _token_ring(self) -> torch.Tensor | None:
        """(TOKEN_RING, B_max) int64 the step writes each row's new token into, at slot position %
        TOKEN_RING (runtime/kernels/publish.py): pinned host memory on CUDA, where the publish kernel
        runs, so the host reads tokens without a copy between two steps. RUNTIME_TOKEN_RING: "auto"
        (the default) there, "0" never (generate copies the tokens after each step), "1" on the CPU
        too (a plain tensor: the reference writes it)."""
        choice = env_choice("RUNTIME_TOKEN_RING", ("auto", "0", "1"), "auto")
        if choice == "0":
            return None
        if self.device.type == "cuda":
            if not ops.enabled("publish_tokens", self.buffers.tokens):
                return None  # the reference cannot write host memory from inside a graph
            return torch.zeros((TOKEN_RING, self.max_batch), dtype=torch.int64, pin_memory=True)
        return torch.zeros((TOKEN_RING, self.max_batch), dtype=torch.int64) if choice == "1" else None

    def _capture(self) -> None:
        keys = [(b, v) for b in self.buckets for v in VARIANTS]
        keys += spill_keys(VARIANTS, self.spill_window)
        # the Triton kernels of every step, built on all cores first (a fresh cache's start-up)
        self.prebuild = prebuild.compile_ahead(lambda: self._unlaunched_steps(keys), self.device)
        self.pool = GraphPool(self._step)
        try:
            self.pool.capture(keys, order=lambda k: k[0])
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            self.pool.release()
            self.pool, self.mode = None, "eager"
            self.capture_error = str(e).splitlines()[0]
            warnings.warn(
                f"CUDA graph capture failed ({self.capture_error}); falling back to eager decode",
                stacklevel=2,
            )

    def _unlaunched_steps(self, keys: list[tuple]) -> None:
        """Each key's step once while prebuild records Triton's launches instead of running them:
        the step's torch ops still run, on outputs no kernel wrote, so the buffers they write
        (tokens, positions, seen, the record) are put back afterwards."""
        with self.kept_state():
            for key in keys:
                self._step(key)

    @contextlib.contextmanager
    def kept_state(self):
        """Steps run inside (start-up work before any request) leave the decode buffers and the
        non-finite record as they found them; the cache rows they wrote hold no request yet."""
        buf = self.buffers
        saved = {f.name: getattr(buf, f.name).clone() for f in dataclasses.fields(buf)}
        record = self.nonfinite_at.clone()
        try:
            yield
        finally:
            for name, value in saved.items():
                getattr(buf, name).copy_(value)
            self.nonfinite_at.copy_(record)

    @property
    def capture_s(self) -> float:
        """Start-up seconds after the load: GEMV tuning (first model of a shape only), the kernels'
        pre-build and the capture."""
        built = self.prebuild.seconds if self.prebuild else 0.0
        return (self.pool.capture_s if self.pool else 0.0) + self.tune_s + built

    def bucket(self, n: int) -> int:
        return bucket_for(n, self.buckets)

    def step(self, bucket: int, variant: str, position: int = 0) -> None:
        """Advance rows [0, bucket) by one token: a graph replay, or the same code eagerly.
        position: the largest position the rows feed (known to the host), which picks the graph."""
        key = graph_key(bucket, variant, position, self.spill_window)
        if self.pool is not None:
            self.pool.replay(key)
        else:
            self._step(key)

    def set_row(self, row: int, params: SamplingParams, keep_seen: bool = False) -> None:
        buf = self.buffers
        buf.temperature[row] = params.temperature
        buf.top_k[row] = params.top_k
        buf.top_p[row] = params.top_p
        buf.repetition_penalty[row] = params.repetition_penalty
        buf.seed[row] = params.seed + row
        self.nonfinite_at[row] = -1
        if not keep_seen:
            buf.seen[row].zero_()

    def _next_token(
        self, logits: torch.Tensor, positions: torch.Tensor, rows: slice, variant: str
    ) -> torch.Tensor:
        """logits (B, V) of `rows` -> next tokens (B,), by the variant's sampler.  # graph: safe"""
        return next_token(logits, positions, self.buffers, rows, variant)

    @torch.inference_mode()
    def prefill(self, row: int, tokens: list[int], start: int, variant: str = "sample") -> int:
        """Prefill `tokens` at positions [start, start + T) of `row`, pick the first new token with
        the request's sampler variant and leave the row ready to decode. Returns that token (a
        host sync: TTFT includes it)."""
        ids = torch.tensor(tokens, dtype=torch.int64, device=self.device)
        buf = self.buffers
        buf.seen[row].scatter_(0, ids, True)
        logits = self.prefill_graphs.run(row, ids) if start == 0 and self.prefill_graphs else None
        if logits is None:
            logits = self.model.prefill(ids[None], self.cache, row=row, start=start)  # (1, V)
        end = torch.tensor([start + len(tokens)], device=self.device)
        first = self._next_token(logits, end, slice(row, row + 1), variant)
        if not torch.isfinite(logits).all():
            self.nonfinite_at[row] = start + len(tokens) - 1
        buf.tokens[row] = first[0]
        buf.positions[row] = start + len(tokens)
        buf.seen[row, first[0]] = True
        return int(first[0])

    def release(self) -> None:
        if self.pool is not None:
            self.pool.release()
            self.pool = None
        if self.prefill_graphs is not None:
            self.prefill_graphs.release()
            self.prefill_graphs = None
