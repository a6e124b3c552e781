"""The start-up's kernel pre-build (runtime/kernels/prebuild.py), on the CPU: launches recorded
instead of run, each distinct build compiled once for an H100 target into a private Triton cache,
nothing rebuilt once cached, and a failing build counted rather than raised."""

from __future__ import annotations

import pytest
import torch

from runtime.kernels import _triton, prebuild
from runtime.kernels._triton import cdiv, jit, tl

if not _triton.AVAILABLE or _triton.INTERPRETING:
    pytest.skip("needs Triton compiling (not TRITON_INTERPRET=1)", allow_module_level=True)

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402

H100 = GPUTarget("cuda", 90, 32)
META = torch.device("meta")


@jit
def _scale(x_ptr, out_ptr, n, factor, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + i, tl.load(x_ptr + i, mask=i < n) * factor, mask=i < n)


@jit
def _broken(x_ptr, BLOCK: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)  # BLOCK = 10 is no power of two: a build error


@jit
def _two_return_types(x, WIDEN: tl.constexpr):
    if WIDEN:
        return x.to(tl.int64)
    return x  # a GPU build refuses a helper whose branches return two types, even constexpr ones


@jit
def _broken_in_a_helper(x_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(x_ptr + i, _two_return_types(tl.load(x_ptr + i), True))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    try:
        get_ptxas(H100.arch)
    except RuntimeError as e:
        pytest.skip(f"no ptxas for sm_90: {e}")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))


def launches(blocks: tuple[int, ...]) -> None:
    """What a start-up's step would run: one launch per block size, one of them twice."""
    x = torch.empty(1000, dtype=torch.float32, device=META)
    out = torch.empty_like(x)
    for block in (*blocks, blocks[0]):
        _scale[(8,)](x, out, 1000, 0.5, BLOCK=block)


def test_builds_each_distinct_launch_once_then_only_what_is_new():
    first = prebuild.compile_ahead(lambda: launches((64, 128)), META, target=H100)
    assert (first.kernels, first.built, first.failed, first.skipped) == (2, 2, 0, "")
    again = prebuild.compile_ahead(lambda: launches((64, 128)), META, target=H100)
    assert (again.kernels, again.built) == (2, 0), "a cached build was built again"
    more = prebuild.compile_ahead(lambda: launches((64, 256)), META, target=H100)
    assert (more.kernels, more.built) == (2, 1)


def test_recorded_build_is_the_one_a_launch_compiles():
    """The build lands under the key triton.compile looks up for the same launch."""
    with prebuild.recording(H100) as rec:
        launches((32,))
    (launch,) = rec.launches.values()
    assert not launch.cached(H100)
    assert launch.constants() == {"BLOCK": 32}
    prebuild.compile_ahead(lambda: launches((32,)), META, target=H100)
    assert launch.cached(H100)


def test_recording_launches_nothing_and_restores_run():
    from triton.runtime.jit import JITFunction

    original = JITFunction.run
    with prebuild.recording(H100) as rec:
        # meta tensors: a real launch would fail; recorded, it only binds
        _scale[(1,)](torch.empty(4, device=META), torch.empty(4, device=META), 4, 1.0, BLOCK=16)
    assert JITFunction.run is original
    assert len(rec.launches) == 1


def test_failed_build_is_counted_not_raised():
    def run():
        _broken[(1,)](torch.empty(16, device=META), BLOCK=10)
        launches((64,))

    result = prebuild.compile_ahead(run, META, target=H100)
    assert (result.kernels, result.built, result.failed) == (2, 2, 1)
    assert "1 failed" in result.describe()


def test_a_failure_inside_a_helper_names_its_innermost_cause():
    """The kernel's own error shows the call of the helper; the reason is the helper's."""
    result = prebuild.compile_ahead(
        lambda: _broken_in_a_helper[(1,)](torch.empty(16, device=META), BLOCK=16), META, target=H100
    )
    assert result.failed == 1
    assert "caused by" in result.errors[0] and "return types" in result.errors[0], result.errors[0]


def test_code_that_cannot_record_skips_with_the_reason():
    def run():
        raise ValueError("needs a real launch")

    result = prebuild.compile_ahead(run, META, target=H100)
    assert result.kernels == 0 and "needs a real launch" in result.skipped
    assert "skipped" in result.describe()


def test_off_on_the_cpu_and_when_asked(monkeypatch):
    assert prebuild.compile_ahead(lambda: launches((64,)), torch.device("cpu")) is None
    monkeypatch.setenv("RUNTIME_PREBUILD", "0")
    assert not prebuild.enabled(torch.device("cuda"))


@pytest.mark.cuda
def test_on_the_card_kernels_and_launchers_build_ahead_then_launch_from_the_cache():
    """A private, empty cache: both builds and their launchers come from the workers; the launch
    after them finds all of it there and computes the right values."""
    x = torch.arange(1000, dtype=torch.float32, device="cuda")
    out = torch.empty_like(x)

    def run():
        for block in (64, 128):
            _scale[(cdiv(1000, block),)](x, out, 1000, 0.5, BLOCK=block)

    result = prebuild.compile_ahead(run, x.device)
    assert (result.kernels, result.built, result.failed, result.launchers_failed) == (2, 2, 0, 0), result
    run()
    torch.testing.assert_close(out, x * 0.5)
    assert prebuild.compile_ahead(run, x.device).built == 0
