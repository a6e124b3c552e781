"""generate: prefill each row, then the replay loop, then stop.

The host only enqueues steps. Each step's new tokens reach pinned host memory without blocking:
written there by the step itself where the runner has a token ring (runtime/kernels/publish.py: the
token for position p of row r in slot p % R), else copied after the step; an event is recorded
after each step, and the host reads step i once step i + LAG is queued, so the GPU always has work
waiting. Rows that hit a stop id are cut there; the step that ran past the stop only fed the stop
token itself (its KV is valid history). LAG is 1 because a second overrun step would write a
garbage position into a sliding layer's ring, evicting a position the next turn of a conversation
still needs (and LAG + 1 < R keeps a slot from being written again before it is read).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from runtime.engine.runner import Runner, variant_for
from runtime.engine.sampler import SamplingParams
from runtime.engine.state import check_capacity
from runtime.errors import RuntimeFailure, RuntimeUserError

LAG = 1


@dataclass
class GenerationResult:
    tokens: list[list[int]]  # per row, generated ids (a stop id that ended the row included)
    finish: list[str]  # per row: "stop" | "length"
    ttft_ms: float  # request start -> first token of every row on the host
    step_ms: list[float] = field(default_factory=list)  # per decode step (device events on CUDA)
    decode_ms: float = 0.0  # first token on the host -> last token on the host
    total_ms: float = 0.0
    prefill_tokens: int = 0


def generate(
    runner: Runner,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    max_new_tokens: int,
    *,
    stop_ids: Sequence[int] = (),
    starts: Sequence[int] | None = None,
    keep_seen: bool = False,
    on_token: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Generate for B = len(prompts) rows (rows 0..B-1 of the cache).

    starts: cache position where each prompt begins (continuing a conversation); default 0.
    on_token(row, token) is called as tokens reach the host, a step or two behind the GPU."""
    n = len(prompts)
    if n == 0 or any(len(p) == 0 for p in prompts):
        raise RuntimeUserError("empty prompt: give at least one token")
    if max_new_tokens < 1:
        raise RuntimeUserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if n > runner.max_batch:
        raise RuntimeUserError(f"batch of {n} prompts exceeds the runner's max batch of {runner.max_batch}")
    starts = list(starts or [0] * n)
    check_capacity([s + len(p) for s, p in zip(starts, prompts)], max_new_tokens, runner.capacity)
    for p in prompts:
        if max(p) >= runner.spec.vocab or min(p) < 0:
            raise RuntimeUserError(f"token id out of range for a vocabulary of {runner.spec.vocab}")

    cuda = runner.device.type == "cuda"
    bucket = runner.bucket(n)
    variant = variant_for(params)
    stops = set(stop_ids)
    t0 = time.perf_counter()
    # padding rows decode harmlessly from position 0 of their own cache rows
    runner.buffers.tokens[n:bucket] = 0
    runner.buffers.positions[n:bucket] = 0
    out: list[list[int]] = [[] for _ in range(n)]
    finish = ["length"] * n
    done = [False] * n

    def take(row: int, token: int) -> None:
        if done[row]:
            return
        out[row].append(token)
        if on_token is not None:
            on_token(row, token)
        if token in stops:
            done[row], finish[row] = True, "stop"
        elif len(out[row]) >= max_new_tokens:
            done[row] = True

    prefill_tokens = 0
    for row, (prompt, start) in enumerate(zip(prompts, starts)):
        runner.set_row(row, params, keep_seen=keep_seen)
        take(row, runner.prefill(row, list(prompt), start, variant))
        prefill_tokens += len(prompt)
    t_first = time.perf_counter()

    # the tokens of step i: row r's in ring[(its first position + i) % R, r] where the step writes
    # them there (a copy between two replays cost ~10 us a step on the H100), else in pinned[i]
    ring, pinned = runner.token_ring, None
    first_positions = [s + len(p) for s, p in zip(starts, prompts)]
    last_position = max(first_positions)  # the largest position step 1 feeds
    if ring is None:
        pinned = torch.empty((max_new_tokens, bucket), dtype=torch.int64, pin_memory=cuda)

    def token_at(i: int, row: int) -> int:
        if pinned is None:
            return int(ring[(first_positions[row] + i) % len(ring), row])
        return int(pinned[i, row])

    events: list[torch.cuda.Event] = []
    step_ms: list[float] = []
    if cuda:
        events.append(torch.cuda.Event(enable_timing=True))
        events[0].record()
    read = 1  # next step index whose tokens the host will read

    def read_step(i: int) -> None:
        if cuda:
            events[i].synchronize()
        for row in range(n):
            take(row, token_at(i, row))

    try:
        for i in range(1, max_new_tokens):
            if all(done):
                break
            t_step = time.perf_counter()
            runner.step(bucket, variant, last_position + i - 1)  # the graph for the rows' positions
            if pinned is not None:
                pinned[i].copy_(runner.buffers.tokens[:bucket], non_blocking=cuda)
            if cuda:
                events.append(torch.cuda.Event(enable_timing=True))
                events[i].record()
                while read <= i - LAG:
                    read_step(read)
                    read += 1
            else:
                step_ms.append((time.perf_counter() - t_step) * 1e3)
                read_step(i)
                read = i + 1
        while cuda and read < len(events):
            read_step(read)
            read += 1
    finally:
        if cuda:
            torch.cuda.synchronize()
    t_end = time.perf_counter()
    if cuda:
        step_ms = [events[i - 1].elapsed_time(events[i]) for i in range(1, len(events))]

    bad = runner.nonfinite_at[:n].tolist()
    if any(p >= 0 for p in bad):
        row = next(r for r, p in enumerate(bad) if p >= 0)
        raise RuntimeFailure(
            f"non-finite logits (NaN or inf) in row {row} at position {bad[row]}: the model overflowed; "
            "try --dtype bfloat16 or float32"
        )
    return GenerationResult(
        tokens=out,
        finish=finish,
        ttft_ms=(t_first - t0) * 1e3,
        step_ms=step_ms,
        decode_ms=(t_end - t_first) * 1e3,
        total_ms=(t_end - t0) * 1e3,
        prefill_tokens=prefill_tokens,
    )
