"""The start-up tuner's finalists timed in the decode step (runtime/engine/step_tuning.py).

On the CPU the step timer is replaced (choose() takes it as an argument) and tune() by
test_tuning_store's FakeTune; the `cuda` test times real captured steps of the tiny llama.
"""

from __future__ import annotations

import contextlib
import types

import pytest
import torch
from test_tuning_store import A100, BF16, H100, LLAMA, fresh_process, keyed, on, restart  # noqa: F401
from tiny_configs import tiny_llama_runner

from runtime.engine import step_roles, step_tuning
from runtime.kernels import fused_linear as fl
from runtime.kernels import gemv_blocks, gemv_tuning, tuning_store

# every test in a fresh "process": an empty cache folder, no choice made yet (test_tuning_store.py)
pytestmark = pytest.mark.usefixtures("fresh_process")


@pytest.fixture(autouse=True)
def no_step_timings(monkeypatch):
    monkeypatch.setattr(step_tuning, "STEP_TIMINGS", {})
    monkeypatch.setattr(step_tuning, "VARIANT_TIMINGS", {})
    monkeypatch.setattr(step_roles, "TIMINGS", {})


def near_ties(key, spread=(1.0, 1.05, 1.08, 1.5)) -> list[tuple[int, int, int]]:
    """Give `key` candidates timed alone at `spread` (the fastest first); returns them in that order."""
    configs = gemv_tuning.candidates(*key)[: len(spread)]
    gemv_tuning.TIMINGS[key] = dict(zip(configs, spread, strict=True))
    return configs


def test_finalists_are_the_fastest_alone_within_the_margin():
    timings = {(1, 1, 1): 10.0, (2, 2, 2): 10.9, (3, 3, 3): 11.2, (4, 4, 4): 10.5, (5, 5, 5): 10.8}
    assert step_tuning.finalists(timings) == [(1, 1, 1), (4, 4, 4), (5, 5, 5)]
    assert step_tuning.finalists(timings, limit=5) == [(1, 1, 1), (4, 4, 4), (5, 5, 5), (2, 2, 2)]
    assert step_tuning.finalists(timings, margin=0.01) == [(1, 1, 1)]


def test_pending_takes_the_shapes_tuned_now_with_finalists_most_bytes_first(monkeypatch):
    on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    qkv, o, gate_up, down, lm_head = keyed(LLAMA)
    for key in (qkv, gate_up, down, lm_head):
        near_ties(key)
    gemv_tuning.TIMINGS[o] = dict.fromkeys(gemv_tuning.TIMINGS[o], 1.0) | {fl._TUNED[o]: 0.5}  # one finalist
    gemv_tuning.SOURCES[qkv] = "stored"  # read from a file: its choice stands
    monkeypatch.setenv("RUNTIME_GEMV_BLOCKS", "act_linear:2048x8192=2/1024/4")  # down forced
    assert step_tuning.pending(LLAMA, BF16) == [lm_head, gate_up]


def test_choose_keeps_the_steps_fastest_and_times_each_shape_after_the_earlier_choices(monkeypatch):
    on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    gate_up, lm_head = keyed(LLAMA)[2], keyed(LLAMA)[4]
    lm_configs, gate_up_configs = near_ties(lm_head), near_ties(gate_up)
    seen = []

    def time_configs(key, variants):  # the third finalist wins in the step, the fastest alone loses
        seen.append((key, variants, fl._TUNED.get(lm_head)))
        return {v: 1.0 - 0.1 * i for i, v in enumerate(variants)}

    chosen = step_tuning.choose([lm_head, gate_up], time_configs)
    assert chosen == {lm_head: lm_configs[2], gate_up: gate_up_configs[2]}
    no_options = frozenset()  # no option names them: each finalist alone
    assert seen[0][:2] == (lm_head, [(c, no_options) for c in lm_configs[:3]])
    assert seen[1][:2] == (gate_up, [(c, no_options) for c in gate_up_configs[:3]])
    assert seen[1][2] == lm_configs[2]  # gate/up timed with the LM head's step choice in place
    assert fl._TUNED[lm_head] == lm_configs[2] and fl._TUNED[gate_up] == gate_up_configs[2]
    assert gemv_tuning.SOURCES[lm_head] == gemv_tuning.SOURCES[gate_up] == "step"
    assert step_tuning.STEP_TIMINGS[lm_head] == pytest.approx(dict(zip(lm_configs[:3], (1.0, 0.9, 0.8))))


def test_the_steps_choice_is_stored_and_the_next_start_reads_it(monkeypatch):
    on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    lm_head = keyed(LLAMA)[4]
    configs = near_ties(lm_head)
    step_tuning.remember(
        A100, step_tuning.choose([lm_head], lambda key, cs: {c: -i for i, c in enumerate(cs)})
    )
    assert tuning_store.load(A100)[lm_head] == (configs[2], 1.08)  # with what it measured alone
    chosen = dict(fl._TUNED)

    restart(monkeypatch)
    fake = on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == [] and fl._TUNED == chosen
    assert step_tuning.pending(LLAMA, BF16) == []  # read from the store: nothing is timed again


def test_refine_does_nothing_off_cuda_or_switched_off(monkeypatch):
    runner = types.SimpleNamespace(device=torch.device("cpu"), capacity=4096, model=None)
    assert step_tuning.refine(runner) == 0.0
    monkeypatch.setenv("RUNTIME_STEP_TUNE", "0")
    runner.device = torch.device("cuda")
    assert step_tuning.refine(runner) == 0.0  # never reaches the model
    monkeypatch.setenv("RUNTIME_STEP_TUNE", "yes")
    with pytest.raises(ValueError, match="RUNTIME_STEP_TUNE='yes': choose one of 1, blocks, 0"):
        step_tuning.refine(runner)


def test_steps_run_for_start_up_work_leave_the_buffers_as_they_were():
    runner = tiny_llama_runner("eager", "cpu", capacity=64)
    runner.buffers.positions[:2] = torch.tensor([5, 9])
    runner.buffers.tokens[:2] = torch.tensor([7, 3])
    before = {name: t.clone() for name, t in vars(runner.buffers).items()}
    with runner.kept_state():
        runner._step((2, "greedy"))
        assert not torch.equal(runner.buffers.positions, before["positions"])  # the step did advance
    for name, t in vars(runner.buffers).items():
        assert torch.equal(t, before[name]), name
    assert runner.nonfinite_at.tolist() == [-1] * 4


@pytest.mark.cuda
def test_the_finalists_are_timed_in_captured_steps_and_decode_as_eager_does(monkeypatch):
    from runtime.engine.generate import generate
    from runtime.engine.sampler import SamplingParams

    monkeypatch.setattr(step_tuning, "MARGIN", 100.0)  # every shape has FINALISTS finalists
    monkeypatch.setattr(step_tuning, "ROUNDS", 2)
    monkeypatch.setattr(step_tuning, "VARIANT_TIMINGS", {})
    monkeypatch.setattr(step_roles, "TIMINGS", {})
    monkeypatch.setattr(step_roles, "MARGIN", 0.0)  # an option is on where its fastest variant wins
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "fresh")  # the role options too, whatever this card ships
    monkeypatch.delenv("RUNTIME_STEP_TUNE", raising=False)  # the default: blocks with the options
    graph = tiny_llama_runner("graph", "cuda", capacity=320)
    assert graph.mode == "graph", graph.capture_error
    shapes = graph.model.gemv_shapes()
    keys = [(*s, torch.float32) for s in dict.fromkeys(shapes)]
    assert set(step_tuning.STEP_TIMINGS) == set(keys)
    card = tuning_store.card("cuda")
    stored = tuning_store.load(card)
    for key in keys:
        times = step_tuning.STEP_TIMINGS[key]
        assert list(times) == step_tuning.finalists(gemv_tuning.TIMINGS[key])
        assert all(0 < ms < 10 for ms in times.values())
        assert fl._TUNED[key] == min(times, key=times.get) == stored[key][0]
        assert gemv_tuning.SOURCES[key] == "step"
    spec = graph.model.spec
    down, gate_up = ("down", spec.hidden, spec.intermediate), ("gate_up", 2 * spec.intermediate, spec.hidden)
    options = {("residual_add", frozenset({down})), ("early_release", frozenset({gate_up, down}))}
    assert set(step_roles.TIMINGS) == options
    down_key = next(k for k in keys if k[:3] == ("linear", spec.hidden, spec.intermediate))
    variants = step_tuning.VARIANT_TIMINGS[down_key]  # each finalist with each subset of the options
    assert len(variants) == 4 * len(step_tuning.STEP_TIMINGS[down_key])
    assert min(variants.values()) == min(step_tuning.STEP_TIMINGS[down_key].values())
    for (field, entries), times in step_roles.TIMINGS.items():
        kept = times[True] < times[False]
        assert (entries <= gemv_blocks.SHIPPED_ROLES[field]) == kept
        assert (entries <= tuning_store.stored_roles(card, field)) == kept
    eager = tiny_llama_runner("eager", "cuda", capacity=320)
    prompts = [[5, 9, 13, 2, 40], [7, 7, 1]]
    want = generate(eager, prompts, SamplingParams(), 24).tokens
    assert generate(graph, prompts, SamplingParams(), 24).tokens == want
    graph.release()


def fake_runner(model=None):
    """What refine reads of a Runner, on no device: Llama's shapes, its residual-joining MLP."""
    model = model or types.SimpleNamespace(
        gemv_shapes=lambda: LLAMA, dtype=BF16, spec=types.SimpleNamespace(hidden=2048, intermediate=8192),
        layers=[types.SimpleNamespace(mlp_out_norm=None)],
    )  # fmt: skip
    return types.SimpleNamespace(
        device=torch.device("cuda"), capacity=4096, model=model,
        kept_state=contextlib.nullcontext, _unlaunched_steps=lambda keys: None,
    )  # fmt: skip


DOWN, GATE_UP = ("down", 2048, 8192), ("gate_up", 16384, 2048)


def test_role_options_where_nothing_ships_and_no_switch_names_them(monkeypatch):
    llama = fake_runner().model
    gemma = types.SimpleNamespace(spec=llama.spec, layers=[types.SimpleNamespace(mlp_out_norm=object())])
    both = [("residual_add", frozenset({DOWN})), ("early_release", frozenset({GATE_UP, DOWN}))]
    assert step_roles.options(llama, A100) == both
    assert step_roles.options(gemma, A100) == both[1:]  # its MLP meets a norm before the residual
    assert step_roles.options(llama, H100) == []  # the H100 ships its lists
    assert step_roles.options(llama, None) == []
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "fresh")
    assert step_roles.options(llama, H100) == both
    monkeypatch.setenv("RUNTIME_GEMV_EARLY", "none")
    assert step_roles.options(llama, H100) == both[:1]


def test_options_naming_no_shape_timed_now_are_timed_alone_kept_where_faster_and_stored(monkeypatch):
    """Only the LM head is timed at this start, so the role options go off and on after its blocks."""
    on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    lm_head = keyed(LLAMA)[4]
    lm_configs = near_ties(lm_head)
    seen = []

    def fake_variants(runner, variants, position):
        labels = list(variants)
        if labels == [False, True]:  # a role option: the residual add gains, the early release loses
            variants[True]()
            seen.append(set(gemv_blocks.SHIPPED_ROLES["residual_add"]))
            gains = gemv_blocks.shipped_role("residual_add", *DOWN) and not seen[1:]
            return {False: 1.0, True: 0.99 if gains else 0.999}  # 1%, and 0.1%: within MARGIN
        return {c: -i for i, c in enumerate(labels)}  # blocks: the last finalist

    monkeypatch.setattr(step_tuning, "time_variants", fake_variants)
    monkeypatch.setattr(step_tuning.prebuild, "compile_ahead", lambda run, device: run())
    monkeypatch.setenv("RUNTIME_STEP_TUNE", "blocks")
    step_tuning.refine(fake_runner())  # the blocks only
    assert seen == [] and tuning_store.stored_roles(A100, "residual_add") == set()
    restart(monkeypatch)
    on(monkeypatch, A100)
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "fresh")
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    near_ties(lm_head)
    monkeypatch.delenv("RUNTIME_GEMV_TUNE")
    monkeypatch.delenv("RUNTIME_STEP_TUNE")  # the default: the options too
    step_tuning.refine(fake_runner())
    assert fl._TUNED[lm_head] == lm_configs[2]
    assert gemv_blocks.SHIPPED_ROLES == {"residual_add": {DOWN}, "early_release": set()}
    assert seen == [{DOWN}, {DOWN}]  # the early release timed with the add already chosen
    assert tuning_store.stored_roles(A100, "residual_add") == {DOWN}
    assert tuning_store.stored_roles(A100, "early_release") == set()

    restart(monkeypatch)
    fake = on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")  # the next start: everything from the store
    assert fake.calls == [] and gemv_blocks.SHIPPED_ROLES["residual_add"] == {DOWN}
    assert step_tuning.refine(fake_runner()) == 0.0  # nothing timed alone: nothing timed in the step
    tuning_store.save(A100, tuning_store.load(A100))  # a later save of blocks keeps the lists
    assert tuning_store.stored_roles(A100, "residual_add") == {DOWN}
    restart(monkeypatch)
    on(monkeypatch, A100)
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "fresh")  # fresh: neither stored blocks nor stored roles
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert gemv_blocks.SHIPPED_ROLES == {"residual_add": set(), "early_release": set()}


def test_a_failure_in_the_step_keeps_what_was_chosen_and_the_picks_alone_for_the_rest(monkeypatch):
    """Out of memory while capturing a variant's step (as a capture may fail) costs no start: a
    warning naming it, the shapes chosen before it keep their step choice (stored), the rest tune()'s
    picks, and the role lists stay as they were."""
    on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    gate_up, lm_head = keyed(LLAMA)[2], keyed(LLAMA)[4]
    lm_configs = near_ties(lm_head)
    gate_up_configs = near_ties(gate_up)
    picks = dict(fl._TUNED)

    calls = []
    early = ("early_release", frozenset({GATE_UP, DOWN}))

    def fake_variants(runner, variants, position):  # the LM head's finalists, then gate/up's
        calls.append(list(variants))
        if len(calls) == 2:
            variants[(gate_up_configs[1], frozenset({early}))]()  # part-way, with the release on
            assert gemv_blocks.SHIPPED_ROLES["early_release"] == {GATE_UP, DOWN}
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {c: -i for i, c in enumerate(variants)}

    monkeypatch.setattr(step_tuning, "time_variants", fake_variants)
    monkeypatch.setattr(step_tuning.prebuild, "compile_ahead", lambda run, device: run())
    with pytest.warns(UserWarning, match="inside the decode step failed \\(CUDA out of memory"):
        step_tuning.refine(fake_runner())
    assert fl._TUNED == {**picks, lm_head: lm_configs[2]}
    assert gemv_tuning.SOURCES[lm_head] == "step" and gemv_tuning.SOURCES[gate_up] == "tuned"
    assert tuning_store.load(A100)[lm_head][0] == lm_configs[2]
    assert tuning_store.load(A100)[gate_up][0] == picks[gate_up]
    assert gemv_blocks.SHIPPED_ROLES == {"residual_add": set(), "early_release": set()}
    # gate/up's finalists each with the early release off and on; no role timed after the failure
    assert calls == [
        [(c, frozenset()) for c in lm_configs[:3]],
        step_roles.variants(gate_up_configs[:3], [early]),
    ]


def test_blocks_and_the_options_naming_them_are_chosen_together(monkeypatch):
    """The down GEMV's finalists each timed with the residual add and the early release off and on:
    the pair of block and options that is fastest in the step wins, though its block loses without
    the add (where choosing the block first, then the add, keeps the other block and no add), and an
    option on must gain MARGIN."""
    on(monkeypatch, A100)
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "fresh")
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    gate_up, down = keyed(LLAMA)[2], keyed(LLAMA)[3]
    gate_up_configs, down_configs = near_ties(gate_up), near_ties(down)
    add, early = ("residual_add", frozenset({DOWN})), ("early_release", frozenset({GATE_UP, DOWN}))
    step_ms = {  # the down GEMV: its first finalist fastest without the add, its second with it
        (down_configs[0], frozenset()): 1.000, (down_configs[1], frozenset()): 1.0002,
        (down_configs[0], frozenset({add})): 1.010, (down_configs[1], frozenset({add})): 0.990,
        (down_configs[1], frozenset({add, early})): 0.9885,  # gains 0.15% over the add alone: < MARGIN
    }  # fmt: skip
    timed = {}

    def fake_variants(runner, variants, position):
        for label, set_up in variants.items():  # each variant's options in force when it is set up
            set_up()
            if label[0] in down_configs:
                on = {o for o in (add, early) if o[1] <= gemv_blocks.SHIPPED_ROLES[o[0]]}
                assert on == set(label[1]), label
        key = gate_up if set(variants) <= set(step_roles.variants(gate_up_configs, [early])) else down
        timed[key] = list(variants)
        if key == gate_up:  # gate/up: its second finalist, without the early release
            return {v: 0.9 if v == (gate_up_configs[1], frozenset()) else 1.0 for v in variants}
        return {v: step_ms.get(v, 1.05) for v in variants}

    monkeypatch.setattr(step_tuning, "time_variants", fake_variants)
    monkeypatch.setattr(step_tuning.prebuild, "compile_ahead", lambda run, device: run())
    monkeypatch.delenv("RUNTIME_GEMV_TUNE")
    step_tuning.refine(fake_runner())
    assert timed[gate_up] == step_roles.variants(gate_up_configs[:3], [early])
    assert timed[down] == step_roles.variants(down_configs[:3], [add, early])  # 3 blocks x 4 subsets
    assert len(timed[down]) == 12 and timed[down][0] == (down_configs[0], frozenset())
    assert fl._TUNED[gate_up] == gate_up_configs[1] and fl._TUNED[down] == down_configs[1]
    assert gemv_blocks.SHIPPED_ROLES == {"residual_add": {DOWN}, "early_release": set()}
    assert step_roles.TIMINGS[add] == {False: 1.0, True: 0.9885}  # each option's fastest off and on
    assert step_roles.TIMINGS[early] == {False: 0.990, True: 0.9885}
    assert step_tuning.STEP_TIMINGS[down] == {
        down_configs[0]: 1.0,
        down_configs[1]: 0.9885,
        down_configs[2]: 1.05,
    }
    assert tuning_store.load(A100)[down][0] == down_configs[1]
    assert tuning_store.stored_roles(A100, "residual_add") == {DOWN}
    assert tuning_store.stored_roles(A100, "early_release") == set()
