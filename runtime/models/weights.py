"""Weights: HF tensor names -> our packed parameters, from safetensors, a state dict or random init.

The model is built on the meta device and its parameters are assigned straight from tensors
already on the target device in the target dtype: no second copy, no default init pass.
Tied embeddings stay one tensor (DecoderLM reads the LM head from the embedding).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from runtime.errors import ModelNotFoundError
from runtime.models import staged_read
from runtime.models.decoder import DecoderLM
from runtime.models.folded_norms import fold_norm_weights
from runtime.models.spec import ModelSpec

GetTensor = Callable[[str], torch.Tensor]
# prefixes some checkpoints put before the plain "model." of the text decoder
_PREFIXES = ("model.language_model.", "language_model.model.", "model.")


def weight_table(spec: ModelSpec) -> list[tuple[str, list[str]]]:
    """(our parameter name, HF names concatenated along dim 0 to make it), for every parameter."""
    table = [("embed.weight", ["embed_tokens.weight"]), ("norm.weight", ["norm.weight"])]
    if not spec.tied_embeddings:
        table.append(("lm_head.weight", ["lm_head.weight"]))
    norms = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}
    if spec.sandwich_norms:
        norms = {
            "attn_norm": "input_layernorm",
            "attn_out_norm": "post_attention_layernorm",
            "mlp_norm": "pre_feedforward_layernorm",
            "mlp_out_norm": "post_feedforward_layernorm",
        }
    for i in range(spec.layers):
        ours, hf = f"layers.{i}.", f"layers.{i}."
        for our_norm, hf_norm in norms.items():
            table.append((f"{ours}{our_norm}.weight", [f"{hf}{hf_norm}.weight"]))
        attn = f"{hf}self_attn."
        table.append((f"{ours}attn.qkv.weight", [f"{attn}{p}_proj.weight" for p in "qkv"]))
        if spec.qkv_bias:
            table.append((f"{ours}attn.qkv.bias", [f"{attn}{p}_proj.bias" for p in "qkv"]))
        table.append((f"{ours}attn.o_proj.weight", [f"{attn}o_proj.weight"]))
        if spec.qk_norm:
            table.append((f"{ours}attn.q_norm.weight", [f"{attn}q_norm.weight"]))
            table.append((f"{ours}attn.k_norm.weight", [f"{attn}k_norm.weight"]))
        mlp = f"{hf}mlp."
        table.append((f"{ours}mlp.gate_up.weight", [f"{mlp}gate_proj.weight", f"{mlp}up_proj.weight"]))
        table.append((f"{ours}mlp.down.weight", [f"{mlp}down_proj.weight"]))
    return table


def _resolver(names: Iterable[str]) -> Callable[[str], str | None]:
    """Map a prefix-free HF name ("layers.0.mlp...") onto the checkpoint's own spelling."""
    present = set(names)

    def resolve(short: str) -> str | None:
        for prefix in ("", *_PREFIXES):
            if prefix + short in present:
                return prefix + short
        return None

    return resolve


def convert(spec: ModelSpec, names: Iterable[str], get: GetTensor, device, dtype, where: str) -> dict:
    """Pack checkpoint tensors into our parameters, on `device` in `dtype`."""
    resolve = _resolver(names)
    state = {}
    for ours, hf_names in weight_table(spec):
        parts = []
        for short in hf_names:
            full = resolve(short)
            if full is None:
                raise ModelNotFoundError(f"{where}: missing tensor {short!r} (needed for {ours})")
            parts.append(get(full).to(device=device, dtype=dtype))
        state[ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return state


def build_model(spec: ModelSpec, state: dict[str, torch.Tensor]) -> DecoderLM:
    """Assign packed tensors to a model built on the meta device (no init, no copy). Consumes
    `state`: the dict is emptied once the model holds its tensors, so the matrices that
    fold_norm_weights replaces are freed one by one (peak: the weights plus one matrix, not plus
    every qkv and gate/up matrix)."""
    with torch.device("meta"):
        model = DecoderLM(spec)
    model.load_state_dict(state, strict=True, assign=True)
    state.clear()
    for p in model.parameters():
        p.requires_grad_(False)
    model.prepare()
    fold_norm_weights(model)
    return model.eval()


def from_state_dict(spec: ModelSpec, hf_state: dict[str, torch.Tensor], device, dtype) -> DecoderLM:
    """Build from an in-memory HF state dict (tests, and models converted on the fly)."""
    return build_model(
        spec, convert(spec, hf_state.keys(), hf_state.__getitem__, device, dtype, "state dict")
    )


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a folder: the sharded index's files, or every *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).exists()]
        if missing:
            raise ModelNotFoundError(f"{index}: shard files missing: {', '.join(missing)}")
        return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelNotFoundError(f"{folder}: no *.safetensors weights found")
    return files


def from_safetensors(spec: ModelSpec, folder: Path, device, dtype) -> DecoderLM:
    """Load a folder of safetensors (single file or sharded) straight onto `device`."""
    from safetensors import SafetensorError, safe_open

    handles, owner = [], {}
    try:
        if staged_read.staged_enabled():  # every tensor on the device first: peak ~1.7x the weights
            read = {}
            for f in safetensors_files(folder):
                read.update(staged_read.read_file(f, torch.device(device)))
            state = convert(spec, read.keys(), read.__getitem__, device, dtype, str(folder))
            del read
        else:
            for f in safetensors_files(folder):
                h = safe_open(str(f), framework="pt", device=str(device))
                handles.append(h)
                owner.update(dict.fromkeys(h.keys(), h))
            state = convert(spec, owner.keys(), lambda n: owner[n].get_tensor(n), device, dtype, str(folder))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        if isinstance(e, torch.cuda.OutOfMemoryError):
            raise
        raise ModelNotFoundError(f"{folder}: cannot read safetensors weights ({e}); re-download them") from e
    return build_model(spec, state)


def random_model(spec: ModelSpec, device, dtype, seed: int = 0) -> DecoderLM:
    """Weights drawn from N(0, 0.02), norms at identity: for shape-only benchmarks."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in DecoderLM(spec).state_dict().items()}
    gen = torch.Generator(device=device).manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            state[name] = torch.full(shape, 1.0 - spec.norm_offset, device=device, dtype=dtype)
        elif name.endswith(".bias"):
            state[name] = torch.zeros(shape, device=device, dtype=dtype)
        else:
            t = torch.empty(shape, device=device, dtype=dtype)
            state[name] = t.normal_(0.0, 0.02, generator=gen)
    return build_model(spec, state)
