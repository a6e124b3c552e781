"""Start-up: the Triton kernels a capture will launch, built on every core before it starts.

On a machine whose Triton cache is empty, capturing the decode graphs compiled their ~24
distinct kernels one after another as the warm-up first launched each (~0.6 s apiece on the H100
machine: 14 s of a 30 s first start). Here the capture's own code runs first with
JITFunction.run replaced by a recorder: no kernel is launched, and Triton's binder turns each
call into exactly what a launch would compile (signature, constexprs, integer and alignment
specialisation, options). The builds missing from Triton's on-disk cache then run in forked
workers (compiling holds the GIL, so threads would not help), and the capture finds every
kernel in the cache. A failed build is only counted: the capture's own compile then raises the
real error where it always did. RUNTIME_PREBUILD=0 turns this off.

The recording relies on Triton 3.x internals (the binder and JITFunction._pack_args); on a
Triton where they differ, compile_ahead reports why it skipped and the capture compiles as before.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from runtime.kernels._triton import AVAILABLE, INTERPRETING

if AVAILABLE:
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature


@dataclass
class Launch:
    """One distinct build: what JITFunction.run hands to triton.compile."""

    fn: Any  # JITFunction
    signature: dict  # parameter -> "*bf16", "i32", "fp32", ... or "constexpr"
    constexprs: dict  # (index,) -> value: the tl.constexpr parameters and integers specialised to 1
    attrs: dict  # (index,) -> alignment hints (tt.divisibility 16)
    options: Any  # the backend's options: num_warps, num_stages, launch_pdl, ...
    where: str  # the first recording that launched it

    def constants(self) -> dict:
        """The tl.constexpr parameters by name."""
        return {
            self.fn.arg_names[i]: v
            for (i, *_), v in self.constexprs.items()
            if self.fn.params[i].is_constexpr
        }

    def source(self):
        """The compiler's source of this build: a Gluon kernel's own (its module carries the warp
        count its explicit layouts are checked against), a Triton kernel's ASTSource."""
        if self.fn.is_gluon():
            from triton.experimental.gluon._runtime import GluonASTSource

            return GluonASTSource(self.fn, self.signature, self.constexprs, self.attrs)
        return ASTSource(self.fn, self.signature, self.constexprs, self.attrs)

    def build(self, target):
        """The whole build for target (a GPUTarget), ptxas included; the cubin lands in the cache.
        Returns Triton's compiled kernel."""
        return triton.compile(self.source(), target=target, options=self.options.__dict__)

    def cached(self, target) -> bool:
        """Whether Triton's on-disk cache holds this build for target (compile()'s own lookup)."""
        from triton._C.libtriton import get_cache_invalidating_env_vars
        from triton.runtime.cache import get_cache_key, get_cache_manager

        src, backend = self.source(), make_backend(target)
        options = backend.parse_options(dict(self.options.__dict__, **src.parse_options()))
        key = get_cache_key(src, backend, options, env_vars=get_cache_invalidating_env_vars())
        group = get_cache_manager(hashlib.sha256(key.encode("utf-8")).hexdigest())
        metadata = f"{src.name[:150]}.json"
        return bool((group.get_group(metadata) or {}).get(metadata))


class Recorder:
    """Stands in for JITFunction.run: a call is bound as run() binds it, for target's backend,
    and kept once per distinct build; nothing is compiled or launched."""

    def __init__(self, target):
        self.backend = make_backend(target)
        self.binders: dict = {}
        self.launches: dict[tuple, Launch] = {}
        self.where = ""

    def run(self, fn, *args, grid, warmup, **kwargs) -> None:
        # JITFunction.run (Triton 3.6) up to its compile
        kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
        kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
        if fn not in self.binders:
            self.binders[fn] = create_function_from_signature(fn.signature, fn.params, self.backend)
        bound, specialization, options = self.binders[fn](*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(
            self.backend, kwargs, bound, specialization, options
        )
        key = (fn, repr((signature, constexprs, attrs, options)))
        if key not in self.launches:
            self.launches[key] = Launch(fn, signature, constexprs, attrs, options, self.where)


@contextmanager
def recording(target) -> Iterator[Recorder]:
    """Every Triton launch in here is recorded for target (a GPUTarget) instead of run."""
    rec = Recorder(target)
    original = JITFunction.run
    JITFunction.run = lambda fn, *args, **kwargs: rec.run(fn, *args, **kwargs)
    try:
        yield rec
    finally:
        JITFunction.run = original


# ---------------------------------------------------------------- building, on every core

_JOBS: list[tuple[Callable[[Launch, Any], None], Launch, Any]] = []  # what forked workers run


def _run_job(index: int) -> str | None:
    """None, or why job `index` failed (its first line and the last few: a CompilationError's
    message is the source up to the offending line, a caret, then the reason)."""
    action, launch, target = _JOBS[index]
    try:
        action(launch, target)
    except Exception as e:  # a CompilationError, a ptxas failure: whatever the build raises
        lines = f"{type(e).__name__}: {e}".strip().splitlines()
        lines = lines if len(lines) <= 8 else [lines[0], "    ...", *lines[-5:]]
        cause = e.__cause__  # an error inside a jit helper: the reason is the innermost one's
        while cause is not None and cause.__cause__ is not None:
            cause = cause.__cause__
        if cause is not None:
            reason = (str(cause).strip().splitlines() or [""])[-1]
            lines.append(f"  caused by {type(cause).__name__}: {reason}")
        return "\n".join(lines)
    return None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_all(
    jobs: list[tuple[Callable[[Launch, Any], None], Launch, Any]], workers: int = 16
) -> list[str | None]:
    """action(launch, target) of each job -> None or the failure, in forked workers where there
    are two cores or more. Forked, because launches hold JITFunctions, which do not pickle; a
    worker only compiles (no CUDA call), so a parent that has initialised CUDA may fork it."""
    _JOBS[:] = jobs
    n = min(usable_cores(), workers, len(jobs))
    try:
        if n < 2:
            return [_run_job(i) for i in range(len(jobs))]
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_run_job, range(len(jobs))))
    finally:
        _JOBS.clear()


class LauncherError(Exception):
    """The kernel built, its launcher did not (the capture builds it again and raises there)."""


def build(launch: Launch, target) -> None:
    """The kernel's build, then its host-side launcher's: a C module per signature and constants
    that Triton compiles with the system's C compiler at a kernel's first launch (cached beside the
    cubins). The launcher is CUDA-only; loading it calls no CUDA, so a forked worker may build it."""
    kernel = launch.build(target)
    if target.backend != "cuda":
        return
    try:
        from triton.backends.nvidia.driver import CudaLauncher

        CudaLauncher(kernel.src, kernel.metadata)
    except Exception as e:
        raise LauncherError(f"{type(e).__name__}: {e}") from e


def build_driver_utils(_launch, target) -> None:
    """Triton's CUDA utility module (a C build of its own, once per cache), beside the kernels."""
    if target.backend == "cuda":
        from triton.backends.nvidia.driver import CudaUtils

        CudaUtils()


# ---------------------------------------------------------------- the start-up's entry point


@dataclass(frozen=True)
class Prebuild:
    """What compile_ahead did, for the start-up's record."""

    kernels: int  # distinct builds the recorded code launches
    built: int  # of them, missing from the cache and built here
    failed: int  # builds that raised (the capture raises the real error)
    seconds: float
    skipped: str = ""  # why nothing was recorded or built, if so
    launchers_failed: int = 0  # kernels built whose launcher did not (the capture builds it)
    record_s: float = 0.0  # of seconds: running the code unlaunched and looking up the cache
    errors: tuple[str, ...] = ()  # the first few failures

    def describe(self) -> str:
        if self.skipped:
            return f"kernel pre-build skipped: {self.skipped}"
        failed = f", {self.failed} failed" if self.failed else ""
        failed += f", {self.launchers_failed} launchers failed" if self.launchers_failed else ""
        return (
            f"{self.built} of {self.kernels} kernels built ahead in {self.seconds:.1f} s "
            f"(recording and cache lookup {self.record_s:.2f} s){failed}"
        )


def enabled(device: torch.device) -> bool:
    """On a CUDA device with Triton compiling (not interpreting), unless RUNTIME_PREBUILD=0."""
    return (
        AVAILABLE
        and not INTERPRETING
        and device.type == "cuda"
        and os.environ.get("RUNTIME_PREBUILD", "1") != "0"
    )


def compile_ahead(run: Callable[[], None], device: torch.device, target=None) -> Prebuild | None:
    """Record the Triton launches of run() (which must launch through Triton only what it would
    in earnest, and tolerate kernels that do not run: their outputs stay unwritten) and build
    those missing from the cache, in parallel. target: a GPUTarget (default: the current card's).
    None where disabled."""
    if not enabled(device) and target is None:
        return None
    start = time.perf_counter()
    try:
        if target is None:  # as Triton's driver names the card, without starting the driver
            major, minor = torch.cuda.get_device_capability(device)
            target = GPUTarget("cuda", 10 * major + minor, 32)
        with recording(target) as rec:
            run()
        launches = list(rec.launches.values())
        missing = [launch for launch in launches if not launch.cached(target)]
    except Exception as e:  # another Triton's internals, or a path that cannot run unlaunched
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return Prebuild(0, 0, 0, time.perf_counter() - start, skipped=reason)
    record_s = time.perf_counter() - start
    jobs = [(build, launch, target) for launch in missing]
    # a fresh cache also lacks the driver's own module: built beside the kernels, not after them
    errors = run_all([(build_driver_utils, None, target), *jobs])[1:] if missing else []
    launcher = [e for e in errors if e is not None and e.startswith(LauncherError.__name__)]
    failed = [e for e in errors if e is not None and not e.startswith(LauncherError.__name__)]
    return Prebuild(
        len(launches),
        len(missing),
        len(failed),
        time.perf_counter() - start,
        launchers_failed=len(launcher),
        record_s=record_s,
        errors=tuple((failed + launcher)[:3]),
    )
