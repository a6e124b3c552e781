"""Baselines in the same run: transformers' own model on exactly our weights, timed like ours.

transformers_eager     AutoModelForCausalLM + plain `generate` (dynamic cache), fixed length
transformers_compile   the same with cache_implementation="static", which makes generate compile the
                       forward itself (CompileConfig mode="reduce-overhead": CUDA graphs inside
                       torch.compile); GPU only

The transformers model is built from the same config and its parameters are views of ours
(q/k/v and gate/up are row slices of our packed matrices), so both read the same bytes: random
weights and checkpoints alike, with no second copy in memory.

Timing: a streamer records the host clock as each token arrives. transformers copies every new
token to the host before the next step, so these arrivals are per-step times (host clock, with
the sync transformers already does; our runtime instead uses CUDA events without a sync).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from runtime.bench.metrics import Measurement
from runtime.engine.sampler import SamplingParams
from runtime.models.loader import LoadedModel
from runtime.models.sources import checkpoint_folder, shipped_config
from runtime.models.weights import weight_table


def hf_config(loaded: LoadedModel):
    """The transformers config our model was built from: the checkpoint's, or the shipped one."""
    from transformers import AutoConfig

    if loaded.weights == "checkpoint":
        return AutoConfig.from_pretrained(checkpoint_folder(loaded.model_id))
    path = Path(loaded.model_id)
    if path.is_dir():
        return AutoConfig.from_pretrained(path)
    path = path if path.suffix == ".json" else shipped_config(loaded.model_id)
    if path is None:
        raise FileNotFoundError(f"no config found for {loaded.model_id}")
    data = json.loads(path.read_text())
    return AutoConfig.for_model(data.pop("model_type"), **data)


def hf_state_dict(loaded: LoadedModel, hf_names: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Our packed parameters split back into transformers' names (views, no copies).

    hf_names: the transformers model's own state-dict names and shapes (for the split sizes)."""
    ours = loaded.model.state_dict()
    state = {}
    for our_name, short_names in weight_table(loaded.spec):
        full = [next(p + s for p in ("model.", "") if p + s in hf_names) for s in short_names]
        sizes = [hf_names[name][0] for name in full]
        for name, part in zip(full, ours[our_name].split(sizes, dim=0)):
            state[name] = part
    return state


def hf_model(loaded: LoadedModel):
    """A transformers CausalLM whose parameters are our weights."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    device, dtype = loaded.model.device, loaded.model.dtype
    with torch.device(device):  # built for real (meta would leave rotary buffers unset)
        model = AutoModelForCausalLM.from_config(hf_config(loaded), dtype=dtype)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    result = model.load_state_dict(hf_state_dict(loaded, shapes), strict=False, assign=True)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"weights do not map onto transformers' model: missing {missing}, extra {result.unexpected_keys}"
        )
    if loaded.spec.tied_embeddings:
        model.tie_weights()
    # an empty generation config: no eos or sampling defaults creep in from the model's config
    model.generation_config = GenerationConfig()
    return model.eval()


def _streamer_class():
    from transformers.generation.streamers import BaseStreamer

    class ArrivalTimes(BaseStreamer):
        """Host time of each put after the first (the first put is the prompt)."""

        def __init__(self) -> None:
            self.seen_prompt = False
            self.times: list[float] = []

        def put(self, value) -> None:
            if self.seen_prompt:
                self.times.append(time.perf_counter())
            self.seen_prompt = True

        def end(self) -> None:
            pass

    return ArrivalTimes


def generation_config(params: SamplingParams, max_new_tokens: int, stop_ids: Sequence[int], static: bool):
    from transformers import CompileConfig, GenerationConfig

    # sampling flags only when sampling: transformers warns about them on greedy runs
    sampling = (
        dict(do_sample=True, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
        if params.temperature > 0
        else dict(do_sample=False)
    )
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        **sampling,
        repetition_penalty=params.repetition_penalty,
        eos_token_id=list(stop_ids) or None,
        pad_token_id=stop_ids[0] if stop_ids else 0,
        cache_implementation="static" if static else None,
        # static: transformers compiles its own forward (CUDA graphs), its recommended recipe
        disable_compile=not static,
        compile_config=CompileConfig(fullgraph=False, mode="reduce-overhead") if static else None,
    )


def _cut_at_stop(tokens: list[int], stop_ids: Sequence[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in stop_ids:
            return tokens[: i + 1]
    return tokens


class TransformersEngine:
    def __init__(self, loaded: LoadedModel, compiled: bool = False):
        self.model = hf_model(loaded)
        self.device = loaded.model.device
        self.compiled = compiled
        self.mode = "compile" if compiled else "eager"
        self.capture_s = 0.0  # compiled: the first run's time, which includes compilation
        self.kv_cache_mb: float | None = None  # transformers' cache is not ours to size
        self.note: str | None = None
        self._first = True
        self._streamer = _streamer_class()

    @torch.inference_mode()
    def run(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int,
        stop_ids: Sequence[int],
    ) -> Measurement:
        ids = torch.tensor([list(p) for p in prompts], dtype=torch.int64, device=self.device)
        config = generation_config(params, max_new_tokens, stop_ids, static=self.compiled)
        streamer = self._streamer()
        torch.manual_seed(params.seed)  # transformers samples from the global generator
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.model.generate(
            ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=streamer
        )
        if cuda:
            torch.cuda.synchronize()
        t_end = time.perf_counter()
        if self._first and self.compiled:
            self.capture_s = t_end - t0
        self._first = False
        tokens = [_cut_at_stop(row, stop_ids) for row in out[:, ids.shape[1] :].tolist()]
        arrivals = streamer.times or [t_end]
        return Measurement(
            tokens=tokens,
            ttft_ms=(arrivals[0] - t0) * 1e3,
            step_ms=[(b - a) * 1e3 for a, b in zip(arrivals, arrivals[1:])],
            decode_ms=(arrivals[-1] - arrivals[0]) * 1e3,
            total_ms=(t_end - t0) * 1e3,
        )

    def release(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
