"""GPU: start-up time from a local safetensors folder, as a user's first command pays it.

1. Writes a random-weight checkpoint of the model (transformers' own layout, bf16) and a
   stand-in tokenizer of the model's vocabulary size to --folder, unless a checkpoint is there
   already (the GPU machines cannot reach the hub).
2. In a fresh child process: CUDA context, our imports, load_model(folder) (which imports
   transformers only where a tokenizer needs it: transformers_imported) and a Runner capturing
   every bucket up to --max-batch (3 variants each). Prints one JSON line with each part's seconds; load_plus_capture_s counts from after
   the CUDA context (imports included).
   Two children per --loaders value (RUNTIME_LOADER: safetensors' reader, or the staged one) and
   --prebuild value (RUNTIME_PREBUILD: the kernels built on all cores before the capture, or not):
   the first start, then a second with Python's bytecode and Triton's kernel caches warm. With
   --fresh-triton-cache each first start has an empty Triton cache (a fresh machine's).
   --bytecode says what Python bytecode the first start finds: "installed" (the default), that of
   the dependencies as pip leaves them (compiled at install; a throw-away start compiles it here,
   where this machine's site-packages may hold none) and none of this package's (an editable
   install writes it at the first import); "cold", none at all (every import compiles its module).
   STARTUP_PROFILE=1 prints a cProfile of the load above each JSON line (it slows the load).
The files were just written, so they come from the page cache: a cold disk adds its read time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t1 = time.perf_counter()
from runtime.models.loader import load_model
from runtime.engine.runner import Runner
t1b = time.perf_counter()
import cProfile, os, pstats
prof = cProfile.Profile() if os.environ.get("STARTUP_PROFILE") == "1" else None  # where the load's seconds go
if prof: prof.enable()
loaded = load_model(sys.argv[1], weights="checkpoint", device="cuda", dtype="bfloat16")
if prof: prof.disable()
torch.cuda.synchronize(); t2 = time.perf_counter()
runner = Runner(loaded, capacity=4096, max_batch=int(sys.argv[2]), mode="graph")
torch.cuda.synchronize(); t3 = time.perf_counter()
if prof: pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
print(json.dumps({"torch_import_and_cuda_init_s": round(t1 - t0, 2), "runtime_imports_s": round(t1b - t1, 2),
                  "load_s": round(t2 - t1b, 2), **loaded.load_parts, "capture_s": round(t3 - t2, 2),
                  "tune_s": round(runner.tune_s, 2), "graphs": len(runner.pool.stats),
                  "prebuild": runner.prebuild.describe() if runner.prebuild else "off",
                  "load_plus_capture_s": round(t3 - t1, 2), "total_s": round(t3 - t0, 2),
                  "transformers_imported": "transformers" in sys.modules}))
"""


def write_tokenizer(folder: Path, vocab: int) -> None:
    """A stand-in fast tokenizer of `vocab` word-level entries, so a start loads one through
    AutoTokenizer as it would from a real checkpoint (the import and the tokenizer.json parse)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab - 1)} | {"<unk>": vocab - 1}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="w0").save_pretrained(folder)


def write_checkpoint(model_id: str, folder: Path) -> float:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shipped = Path(__file__).parent.parent / "configs" / "models" / f"{model_id.split('/')[-1]}.json"
    start = time.perf_counter()
    config = AutoConfig.from_pretrained(shipped)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    write_tokenizer(folder, config.vocab_size)
    return time.perf_counter() - start


def start_child(folder: Path, max_batch: int, env: dict) -> subprocess.CompletedProcess:
    """One start in a fresh process (CHILD); exits with its stderr's end if it failed."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(max_batch)], capture_output=True, text=True, env=env
    )
    if child.returncode:
        sys.exit(child.stderr[-3000:])
    return child


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-llama/Llama-3.2-1B-Instruct")
    ap.add_argument("--folder", default="/tmp/startup-checkpoint")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument(
        "--loaders", default="safetensors,staged", help="RUNTIME_LOADER values, two children each"
    )
    ap.add_argument("--prebuild", default="1", help="RUNTIME_PREBUILD values, two children each")
    ap.add_argument(
        "--fresh-triton-cache",
        action="store_true",
        help="each first start gets an empty TRITON_CACHE_DIR (its second start reuses it)",
    )
    ap.add_argument("--pycache", default="/tmp/runtime-pycache", help="PYTHONPYCACHEPREFIX of the children")
    ap.add_argument("--bytecode", choices=("installed", "cold"), default="installed",
                    help="the first start's Python bytecode: the dependencies' as installed, or none")  # fmt: skip
    args = ap.parse_args()
    folder = Path(args.folder)
    if not list(folder.glob("*.safetensors")):
        print(f"wrote {folder} in {write_checkpoint(args.model, folder):.1f} s", file=sys.stderr)
    # two children per loader: the first may compile Python bytecode (this machine's site-packages
    # may hold none, and be read-only: the cache goes to a writable prefix) and Triton kernels; the
    # second starts as an installed environment does, with both caches warm
    for loader, prebuild in itertools.product(args.loaders.split(","), args.prebuild.split(",")):
        triton_cache = {}
        if args.fresh_triton_cache:
            triton_cache = {"TRITON_CACHE_DIR": tempfile.mkdtemp(prefix="triton-cache-")}
        env = dict(
            os.environ, RUNTIME_LOADER=loader, RUNTIME_PREBUILD=prebuild, PYTHONPYCACHEPREFIX=args.pycache
        )
        shutil.rmtree(args.pycache, ignore_errors=True)
        if args.bytecode == "installed":
            # every module a start imports compiled once, on a Triton cache of its own; then this
            # package's bytecode removed again, as an editable install has none before its first run
            scratch = {"TRITON_CACHE_DIR": tempfile.mkdtemp(prefix="triton-scratch-")}
            start_child(folder, args.max_batch, dict(env, **scratch))
            repo = Path(__file__).resolve().parent.parent
            shutil.rmtree(Path(args.pycache + str(repo)), ignore_errors=True)
        for start in ("first", "second"):
            child = start_child(folder, args.max_batch, dict(env, **triton_cache))
            *profile_lines, last = child.stdout.strip().splitlines()
            print("\n".join(profile_lines))
            times = json.loads(last)
            print(
                json.dumps(
                    {
                        "model": args.model,
                        "loader": loader,
                        "prebuild_setting": prebuild,
                        "fresh_triton_cache": bool(triton_cache),
                        "start": start,
                        "bytecode": args.bytecode if start == "first" else "warm",
                        "max_batch": args.max_batch,
                        **times,
                    }
                )
            )


if __name__ == "__main__":
    main()
