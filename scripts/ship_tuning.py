"""Write the GEMV block choices shipped for one card (runtime/kernels/tuned/) from a tuning JSON.

The inputs are what `scripts/profile_step.py --out X.json` writes as X_gemv.json: a list of
{op, N, K, best: [BLOCK_N, BLOCK_K, num_warps], best_us, ...}, one per shape tune() timed in that
process, or a tuning store copied from the card (the shapes tune_shapes timed there). Run profile_step with RUNTIME_GEMV_TUNE=fresh so every shape is timed, not read from a store.
  python scripts/ship_tuning.py results/2026-11-27-gpu-checks/gemv_tuning_h100.json \\
      --gpu "NVIDIA H100 80GB HBM3" --capability 9.0 --measured-with "triton 3.6.0, torch 2.11.0+cu130"
Without --gpu or --capability: this machine's card, and its triton and torch as --measured-with.
Refuses a config tune() would no longer time (the candidate list changed since the measurement).
--step-blocks (with --step-source, the A/B that chose them) replaces shapes' timed choices by blocks a
same-process A/B of the decode step preferred: under PDL a launch overlaps its neighbours, which a
shape timed alone does not show. --residual-add and --early-release (each with its --...-source) list
the projections, as role:NxK, whose GEMV such an A/B preferred to add the residual in its epilogue
(ops.residual_epilogue) or to release the next kernel right after its wait (ops.early_release).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from runtime.kernels import tuning_store
from runtime.kernels.gemv_blocks import parse_blocks
from runtime.kernels.gemv_tuning import candidates


def measured_rows(path: Path) -> list[dict]:
    """{op, N, K, best, best_us} rows from profile_step's list, or from a tuning store (what
    tune_shapes saved on the card: {"choices": [{op, N, K, config, us}, ...]}), us rounded to 0.01."""
    doc = json.loads(path.read_text())
    if isinstance(doc, dict):
        doc = [{**c, "best": c["config"], "best_us": round(c["us"], 2)} for c in doc["choices"]]
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "tuning_json",
        nargs="*",
        help="profile_step's _gemv.json lists, or a tuning store file (none: --step-blocks only)",
    )
    ap.add_argument("--gpu", help="torch.cuda.get_device_name of the card that measured")
    ap.add_argument("--capability", help="its compute capability, e.g. 9.0")
    ap.add_argument("--dtype", default="bfloat16", help="the weights' dtype when measured")
    ap.add_argument("--measured-with", default="", help="versions, for the record")
    ap.add_argument(
        "--step-blocks",
        default="",
        help="blocks chosen in the decode step rather than alone, as RUNTIME_GEMV_BLOCKS writes them "
        "(op:NxK=BLOCK_N/BLOCK_K/warps ...): they replace the timed choices, with no time",
    )
    ap.add_argument("--step-source", help="with --step-blocks: the A/B that chose them, for the record")
    what = {
        "residual_add": "adds the residual in its epilogue",
        "early_release": "releases the next kernel early",
    }
    for field, roles in tuning_store.ROLE_LISTS.items():
        flag = "--" + field.replace("_", "-")
        ap.add_argument(
            flag,
            default="",
            help=f"role:NxK entries (role {' or '.join(roles)}, W of (N, K)) whose GEMV {what[field]} on "
            "this card, as a same-process A/B of the step preferred",
        )
        ap.add_argument(f"{flag}-source", help=f"with {flag}: the A/B that chose them, for the record")
    ap.add_argument("--out", help="default: runtime/kernels/tuned/<gpu name>.json")
    args = ap.parse_args()
    if args.gpu is None or args.capability is None:  # measured on this machine
        if not torch.cuda.is_available():
            sys.exit("no CUDA card here: pass --gpu and --capability")
        here = tuning_store.card("cuda")
        args.gpu = args.gpu or here.name
        args.capability = args.capability or "{}.{}".format(*here.capability)
        args.measured_with = args.measured_with or f"triton {here.triton}, torch {here.torch}"
    if not args.tuning_json and not args.step_blocks:
        sys.exit("nothing to ship: pass a tuning JSON or --step-blocks")
    dtype = getattr(torch, args.dtype)

    choices = {}
    for path in args.tuning_json:
        for row in measured_rows(Path(path)):
            key, config = (row["op"], row["N"], row["K"], dtype), tuple(row["best"])
            if config not in candidates(*key):
                sys.exit(f"{key[:3]}: {config} is not among today's candidates; re-tune")
            if key not in choices or row["best_us"] < choices[key][1]:  # a shape timed twice: the faster
                choices[key] = (config, row["best_us"])

    # a launch inside the step overlaps its neighbours under PDL, which a shape timed alone does not
    # show: where a same-process A/B of the step chose other blocks, they win (their time unknown)
    if args.step_blocks and not args.step_source:
        sys.exit("--step-blocks needs --step-source (the A/B that chose them)")
    for (op, n, k), config in parse_blocks(args.step_blocks, "--step-blocks").items():
        key = (op, n, k, dtype)
        if config not in candidates(*key):
            sys.exit(f"--step-blocks {key[:3]}: {config} is not among today's candidates")
        choices[key] = (config, None)

    # the projections the step preferred a choice for: {field: [role:NxK, ...]}, each list named by its A/B
    listed, sources = {}, ""
    for field in tuning_store.ROLE_LISTS:
        flag, entries = "--" + field.replace("_", "-"), getattr(args, field).replace(";", " ").split()
        source = getattr(args, f"{field}_source")
        if entries and not source:
            sys.exit(f"{flag} needs {flag}-source (the A/B that chose them)")
        for entry in entries:
            try:
                tuning_store.role_shape(entry, field)
            except ValueError as e:
                sys.exit(f"{flag}: {e}")
        if entries:
            listed[field] = entries
            sources += f"; {field.replace('_', ' ')} in the step: {' '.join(entries)}, from {source}"

    head = {
        "format": tuning_store.FORMAT,
        "card": {"name": args.gpu, "capability": [int(v) for v in args.capability.split(".")]},
        "measured_with": args.measured_with,
        "source": ", ".join(args.tuning_json)
        + (
            f"{'; ' if args.tuning_json else ''}in the step (no time alone): {args.step_blocks}, from {args.step_source}"
            if args.step_blocks
            else ""
        )
        + sources,
        **listed,
    }
    out = Path(args.out or tuning_store.SHIPPED_DIR / f"{tuning_store.slug(args.gpu)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tuning_store.dumps(head, choices))
    print(f"{out}: {len(choices)} shapes for {args.gpu} (sm {args.capability})")


if __name__ == "__main__":
    main()
