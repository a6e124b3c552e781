"""load_model: a model id + weights kind -> our DecoderLM on a device, with its tokenizer and stop ids.

weights: checkpoint (fail if none can be had), random (a config from the folder, the hub cache
or configs/models/), auto (checkpoint where one can be had, else random with a warning).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from runtime.errors import ModelNotFoundError, RuntimeUserError
from runtime.models.config_json import NotUnderstood, spec_from_config_json
from runtime.models.decoder import DecoderLM
from runtime.models.sources import EMBEDDED_ID, checkpoint_folder, shipped_config
from runtime.models.spec import ModelSpec
from runtime.models.weights import from_safetensors, random_model

DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
WEIGHT_KINDS = ("auto", "checkpoint", "random")
# what any tokenizer AutoTokenizer can load is made of
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "*.model", "tekken.json")


@dataclass
class LoadedModel:
    model_id: str
    model: DecoderLM
    spec: ModelSpec
    tokenizer: Any | None
    stop_ids: tuple[int, ...]
    weights: str  # checkpoint | random: what was actually loaded
    load_s: float
    # seconds per part of load_s (config, weights, tokenizer): where a slow start-up goes
    load_parts: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.model.device


def oom_message(what: str, need_bytes: int, device: torch.device, fix: str) -> str:
    """The out-of-memory message every stage shares: what failed, needed vs free memory, the fix."""
    free, total = torch.cuda.mem_get_info(device)
    return (
        f"out of GPU memory {what}: needs {need_bytes / 2**30:.2f} GiB, {free / 2**30:.2f} of "
        f"{total / 2**30:.2f} GiB free; {fix}"
    )


def parse_dtype(name: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """auto: bfloat16 on CUDA, float32 elsewhere (CPU matmuls in bf16 are slow and inexact)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise RuntimeUserError(f"unknown dtype {name!r}; choose one of auto, bfloat16, float16, float32")
    return DTYPES[name]


def parse_device(name: str | None) -> torch.device:
    """None -> cuda if present else cpu; a cuda request without a GPU is a clear error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise RuntimeUserError(f"unknown device {name!r}; use cpu or cuda") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeUserError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    return device


def _hf_config(path: Path):
    """The transformers config of a model folder (its config.json) or of a config file, built from
    the file directly (AutoConfig.from_pretrained would also look for the folder's other files)."""
    from transformers import AutoConfig

    data = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    return AutoConfig.for_model(data.pop("model_type"), **data)


def read_spec(path: Path) -> ModelSpec:
    """The spec of a model folder (its config.json) or a config file: read straight from the JSON
    where config_json reproduces transformers' reading of it (no transformers import, seconds
    less per start), else through transformers' config classes."""
    try:
        return spec_from_config_json(path)
    except NotUnderstood:
        return ModelSpec.from_hf(_hf_config(path))


def _stop_ids(folder: Path | None, spec: ModelSpec) -> tuple[int, ...]:
    """Every stop id of the generation config, else the config's eos ids."""
    ids = list(spec.eos_ids)
    gen = folder / "generation_config.json" if folder else None
    if gen is not None and gen.exists():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    return tuple(dict.fromkeys(int(i) for i in ids))


def _tokenizer(folder: Path | None):
    """The folder's tokenizer: built from its files where runtime.tokenizer_files reproduces
    transformers exactly (no transformers import), else through AutoTokenizer; None without one."""
    if folder is None:
        return None
    from runtime.tokenizer_files import load_tokenizer

    tokenizer = load_tokenizer(folder)
    if tokenizer is not None:
        return tokenizer
    if not any(any(folder.glob(pattern)) for pattern in TOKENIZER_FILES):
        return None  # a bare config folder: no need to import transformers to learn that
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        return None


def _random_config(model_id: str) -> Path:
    if Path(model_id).is_dir() or Path(model_id).suffix == ".json":
        return Path(model_id)
    shipped = shipped_config(model_id)
    if shipped is None:
        raise ModelNotFoundError(
            f"no config for random weights of {model_id!r}: ship one as configs/models/<name>.json "
            "or pass a model folder"
        )
    return shipped


def load_model(
    model_id: str = EMBEDDED_ID,
    *,
    weights: str = "checkpoint",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "auto",
    seed: int = 0,
) -> LoadedModel:
    if weights not in WEIGHT_KINDS:
        raise RuntimeUserError(f"unknown weights kind {weights!r}; choose one of {', '.join(WEIGHT_KINDS)}")
    device = device if isinstance(device, torch.device) else parse_device(device)
    torch_dtype = parse_dtype(dtype, device)
    start = time.perf_counter()
    folder = None
    if weights in ("checkpoint", "auto"):
        try:
            folder = checkpoint_folder(model_id)
        except ModelNotFoundError as e:
            if weights == "checkpoint":
                raise
            warnings.warn(f"{e}\n-> using RANDOM weights for {model_id} (shape-only numbers)", stacklevel=2)
    config_path = folder if folder is not None else _random_config(model_id)
    spec = read_spec(config_path)
    parts = {"config_s": time.perf_counter() - start}
    if spec.family == "gemma3" and torch_dtype == torch.float16:
        raise RuntimeUserError("Gemma 3 overflows in float16; use --dtype bfloat16 (or float32)")
    try:
        if folder is not None:
            model = from_safetensors(spec, folder, device, torch_dtype)
        else:
            model = random_model(spec, device, torch_dtype, seed)
    except torch.cuda.OutOfMemoryError as e:
        need = spec.param_bytes(torch.empty((), dtype=torch_dtype).element_size())
        raise RuntimeUserError(
            oom_message(
                f"loading the weights of {model_id}", need, device, "free the GPU or use a smaller dtype"
            )
        ) from e
    parts["weights_s"] = time.perf_counter() - start - parts["config_s"]
    # random weights keep the tokenizer of a config folder that has one (text in, shapes only)
    tokenizer = _tokenizer(folder if folder is not None else config_path if config_path.is_dir() else None)
    parts["tokenizer_s"] = time.perf_counter() - start - parts["config_s"] - parts["weights_s"]
    return LoadedModel(
        model_id=model_id,
        model=model,
        spec=spec,
        tokenizer=tokenizer,
        stop_ids=_stop_ids(folder, spec),
        weights="checkpoint" if folder is not None else "random",
        load_s=time.perf_counter() - start,
        load_parts={k: round(v, 3) for k, v in parts.items()},
    )
