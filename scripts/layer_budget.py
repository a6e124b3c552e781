"""Where a decode step's time goes beyond its bytes, kernel by kernel in one layer: a step_timeline.py
JSON against the bytes each kernel must read at the card's copy bandwidth.

  python3 scripts/layer_budget.py TIMELINE.json [--bandwidth-gbs 4256 | --goals RUN] [--out FILE.md]

For each timeline (model, batch) and each role in a layer (step_timeline's per-layer medians):
  adds        what the kernel adds to the step (step_timeline's column)
  bytes       what it must read: a product its weight (bf16; qkv, o, gate/up, down from the shipped
              config of the model, configs/models/), the attention the live K/V of its rows at the
              timeline's prompt length (each layer's sliding window applied, averaged over layers)
  at copy     bytes / bandwidth: what the kernel would take streaming at copy speed
  excess      adds - at copy
then the layer's sum, and what each layer would have to lose to meet the step's goal: at batch 1,
1.15x the floor (weights and cache at copy speed); at a larger batch, 1.3x the same model's
batch-1 step where the file holds one. The products are found by name (GEMV, rows, MMA and cuBLAS
kernels; a split-K reduce is not one) and named in layer order from the one before the attention
kernel: qkv, o, gate/up, down. A timeline whose layer does not hold four products and one
attention kernel prints its roles without bytes. The copy bandwidth: --bandwidth-gbs, else the one
a goals run measured (--goals), else the one step_timeline.py measured with the timeline.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from runtime.models.config_json import spec_from_config_json
from runtime.models.sources import shipped_config
from runtime.models.spec import ModelSpec

PRODUCTS = ("qkv", "o", "gate/up", "down")  # in layer order
PRODUCT_KERNELS = ("_gemv_kernel", "_rows_kernel", "_mma_rows", "nvjet", "gemm", "cutlass")
ATTENTION_KERNELS = ("_qkv_split_kernel", "attention")
FLOOR_GOAL = 1.15  # the batch-1 step's goal: its ratio to the floor
BATCH_GOAL = 1.3  # a larger batch's goal: its step's ratio to the batch-1 step


def is_product(name: str) -> bool:
    return any(k in name for k in PRODUCT_KERNELS) and "splitKreduce" not in name


def product_bytes(spec: ModelSpec) -> dict[str, int]:
    """Weight bytes (bf16) of each product of one layer."""
    h, q, kv, i = spec.hidden, spec.q_size, spec.kv_size, spec.intermediate
    return {"qkv": 2 * h * (q + 2 * kv), "o": 2 * q * h, "gate/up": 2 * 2 * i * h, "down": 2 * i * h}


def kv_bytes(spec: ModelSpec, batch: int, length: int) -> float:
    """K and V bytes (bf16) one layer's attention reads for `batch` rows `length` long, averaged over
    the layers (a sliding layer reads at most its window)."""
    live = [min(length, w) if w else length for w in spec.sliding_window]
    return batch * 2 * 2 * spec.kv_size * sum(live) / len(live)


def role_names(roles: list[dict]) -> list[str] | None:
    """Each role's part in the layer ("qkv", "attention", ...; "" for the others), or None where the
    layer does not hold four products and one attention kernel."""
    names = [r["name"] for r in roles]
    products = [j for j, n in enumerate(names) if is_product(n)]
    attention = [j for j, n in enumerate(names) if any(k in n for k in ATTENTION_KERNELS)]
    if len(products) != len(PRODUCTS) or len(attention) != 1:
        return None
    # the product just before the attention kernel (cyclically) is qkv; the rest follow in order
    start = max((j for j in products if j < attention[0]), default=products[-1])
    ordered = products[products.index(start) :] + products[: products.index(start)]
    parts = [""] * len(roles)
    parts[attention[0]] = "attention"
    for j, product in zip(ordered, PRODUCTS):
        parts[j] = product
    return parts


def budget(result: dict, gbs: float, batch1_us: float | None = None) -> dict:
    """One step_timeline result at copy bandwidth gbs -> {"gbs", "rows": per role (part, kernel,
    adds, bytes, at_copy, excess), "layer": the sums, "goal": the goal's words, "needed": the change per layer that meets it (None
    where unknown)}. batch1_us: the same model's batch-1 step, for a larger batch's goal."""
    spec = spec_from_config_json(shipped_config(result["model"]))
    parts = role_names(result["roles"])
    weights = product_bytes(spec)
    per_us = gbs * 1e3  # bytes per microsecond
    rows = []
    for role, part in zip(result["roles"], parts or [""] * len(result["roles"])):
        if part == "attention":
            nbytes = kv_bytes(spec, result["batch"], result["prompt"])
        else:
            nbytes = weights.get(part, 0)
        at_copy = nbytes / per_us
        rows.append({"part": part, "kernel": role["name"], "adds": role["adds"], "bytes": nbytes,
                     "at_copy": at_copy, "excess": role["adds"] - at_copy})  # fmt: skip
    layer = {k: sum(r[k] for r in rows) for k in ("adds", "bytes", "at_copy", "excess")}
    step_us = result.get("step_us_end_to_end")
    goal, needed = None, None
    if parts and step_us and result["batch"] == 1:
        floor_us = (spec.param_bytes() + spec.layers * kv_bytes(spec, 1, result["prompt"])) / per_us
        goal, needed = f"{FLOOR_GOAL}x the floor", (FLOOR_GOAL * floor_us - step_us) / spec.layers
    elif parts and step_us and batch1_us:
        goal, needed = f"{BATCH_GOAL}x the batch-1 step", (BATCH_GOAL * batch1_us - step_us) / spec.layers
    return {
        "gbs": gbs,
        "rows": rows,
        "layer": layer,
        "goal": goal,
        "needed": needed,
        "mapped": parts is not None,
    }


def markdown(result: dict, b: dict) -> str:
    head = (f"### {result['model']}, batch {result['batch']}, prompt {result['prompt']}: step "
            f"{result['step_us_end_to_end']} us, copy {b['gbs']:.0f} GB/s")  # fmt: skip
    lines = [head, "| part | kernel | adds us | MB | at copy us | excess us |", "|---|---|---|---|---|---|"]
    for r in b["rows"]:
        lines.append(f"| {r['part'] or '-'} | {textwrap.shorten(r['kernel'], 48, placeholder='...')} | {r['adds']:.2f} | {r['bytes'] / 1e6:.2f} | "
                     f"{r['at_copy']:.2f} | {r['excess']:.2f} |")  # fmt: skip
    s = b["layer"]
    lines.append(
        f"| **layer** | | {s['adds']:.2f} | {s['bytes'] / 1e6:.2f} | {s['at_copy']:.2f} | {s['excess']:.2f} |"
    )
    if not b["mapped"]:
        lines.append("\n(the layer's products could not be named: bytes left out)")
    elif b["needed"] is not None:
        lines.append(f"\nfor {b['goal']} each layer would have to change by {b['needed']:+.2f} us")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("timeline", type=Path, help="a JSON written by scripts/step_timeline.py --out")
    ap.add_argument("--bandwidth-gbs", type=float, help="the card's copy bandwidth, GB/s")
    ap.add_argument("--goals", type=Path, help="a goals run folder: its env.json's measured bandwidth")
    ap.add_argument("--out", type=Path, help="also write the tables here")
    args = ap.parse_args()
    gbs = args.bandwidth_gbs
    if args.goals and not gbs:
        gbs = json.loads((args.goals / "env.json").read_text()).get("bandwidth_gbs")
    results = json.loads(args.timeline.read_text())
    if not (gbs or all(r.get("bandwidth_gbs") for r in results)):
        raise SystemExit(
            f"{args.timeline} records no copy bandwidth: give it, --bandwidth-gbs GBS or --goals RUN (its env.json)"
        )
    missing = sorted({r["model"] for r in results if shipped_config(r["model"]) is None})
    if missing:
        raise SystemExit(f"no shipped config for {', '.join(missing)}: add configs/models/<name>.json")
    batch1 = {r["model"]: r.get("step_us_end_to_end") for r in results if r["batch"] == 1}
    text = "\n".join(
        markdown(r, budget(r, gbs or r["bandwidth_gbs"], batch1.get(r["model"]))) for r in results
    )
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
