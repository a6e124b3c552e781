"""The step's tokens written into the host's ring (runtime/kernels/publish.py): the kernel against its
reference on fresh random tokens and positions (on the GPU into pinned host memory), and generate
reading the ring: the same tokens as with the copy after each step, past the ring's wrap-around.
Conventions of kernel_testing.py: `cuda` on a GPU, a small list under the CPU interpreter in a child
process."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import INTERPRET, assert_passes_under_interpreter, cases, kernel_test, needs_triton
from tiny_configs import tiny_llama_runner

from runtime.engine.runner import TOKEN_RING
from runtime.kernels.publish import publish_tokens_ref, publish_tokens_triton

if INTERPRET:
    pytestmark = [needs_triton]
DEVICE = "cpu" if INTERPRET else "cuda"


@kernel_test
@pytest.mark.parametrize("B", cases([1, 3, 16, 33], [1, 3]))
def test_publish_writes_each_row_at_its_position_modulo_the_ring(B):
    """Positions past the ring's length (they wrap), two rows on the same slot (their own columns),
    columns past B left alone; on the GPU the ring is pinned host memory, as the runner's."""
    g = torch.Generator().manual_seed(B)
    R, B_max = 8, B + 2
    tokens = torch.randint(0, 262_144, (B,), generator=g)
    positions = torch.randint(0, 5 * R, (B,), generator=g)
    positions[-1] = positions[0]
    ring = torch.full((R, B_max), -7, dtype=torch.int64, pin_memory=not INTERPRET)
    want = ring.clone()
    publish_tokens_ref(tokens, positions, want)
    publish_tokens_triton(tokens.to(DEVICE), positions.to(DEVICE), ring)
    if not INTERPRET:
        torch.cuda.synchronize()
    assert torch.equal(ring, want)
    assert (want != -7).sum() == B and (want[:, B:] == -7).all()


def _generations(monkeypatch, mode: str, device: str, params) -> list:
    """Three rows (a bucket of 4), one continuing from position 9, TOKEN_RING + 9 new tokens each:
    with the ring ("1" on the CPU, the default on the GPU) and with the copy after each step."""
    from runtime.engine.generate import generate

    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (5, 11, 2)]
    results = []
    for ring in ("1" if device == "cpu" else "auto", "0"):
        monkeypatch.setenv("RUNTIME_TOKEN_RING", ring)
        runner = tiny_llama_runner(mode, device, capacity=160)
        assert (runner.token_ring is None) == (ring == "0")
        assert runner.token_ring is None or runner.token_ring.shape == (TOKEN_RING, 4)
        assert runner.token_ring is None or runner.token_ring.is_pinned() == (device == "cuda")
        result = generate(runner, prompts, params, TOKEN_RING + 9, starts=[0, 9, 0])
        results.append(result.tokens)
        runner.release()
    return results


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_generate_reads_the_ring_as_it_read_the_copies_on_the_cpu(monkeypatch, sampled):
    from runtime.engine.sampler import SamplingParams

    monkeypatch.setenv("RUNTIME_KERNELS", "torch")
    params = SamplingParams(temperature=0.9, top_k=20, seed=5) if sampled else SamplingParams()
    with_ring, with_copies = _generations(monkeypatch, "eager", "cpu", params)
    assert with_ring == with_copies and all(len(t) == TOKEN_RING + 9 for t in with_ring)
    assert len({tuple(t) for t in with_ring}) == 3  # the rows differ: a wrong column would show


@pytest.mark.cuda
@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_generate_reads_the_ring_as_it_read_the_copies_from_graphs(monkeypatch, sampled):
    from runtime.engine.sampler import SamplingParams

    params = SamplingParams(temperature=0.9, top_k=20, seed=5) if sampled else SamplingParams()
    with_ring, with_copies = _generations(monkeypatch, "graph", "cuda", params)
    assert with_ring == with_copies and all(len(t) == TOKEN_RING + 9 for t in with_ring)


def test_the_ring_is_off_on_the_cpu_unless_asked_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv("RUNTIME_KERNELS", "torch")
    monkeypatch.delenv("RUNTIME_TOKEN_RING", raising=False)
    assert tiny_llama_runner("eager", "cpu", capacity=160).token_ring is None
    monkeypatch.setenv("RUNTIME_TOKEN_RING", "yes")
    with pytest.raises(ValueError, match="RUNTIME_TOKEN_RING='yes'"):
        tiny_llama_runner("eager", "cpu", capacity=160)


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_publish_under_the_cpu_interpreter():
    assert_passes_under_interpreter(__file__)
