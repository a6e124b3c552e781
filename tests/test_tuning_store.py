"""Remembered GEMV block choices (tuning_store.py) and tune_shapes' lookup order, on the CPU.

The card lookup and tune() are the only parts that need a GPU; both are replaced here: `card` returns
a made-up Card and FakeTune picks a candidate without timing. RUNTIME_CACHE_DIR points at tmp_path,
and fused_linear._TUNED, TIMINGS and SOURCES start empty in each test (a fresh process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runtime.kernels import fused_linear as fl
from runtime.kernels import gemv_blocks, gemv_tuning, ops, tuning_store
from runtime.kernels.tuning_store import Card

BF16 = torch.bfloat16
H100 = Card("NVIDIA H100 80GB HBM3", (9, 0), "9.9.9", "9.9.9+test")  # not the measuring versions
A100 = Card("NVIDIA A100-SXM4-80GB", (8, 0), "3.6.0", "2.11.0")
LLAMA = [("norm_linear", 3072, 2048), ("linear", 2048, 2048), ("norm_linear", 16384, 2048),
         ("act_linear", 2048, 8192), ("lm_head", 128256, 2048)]  # fmt: skip
UNSHIPPED = ("linear", 4096, 4096)


class FakeTune:
    """Stands in for tune(): chooses candidates()[pick] as if it had timed them all, records the call."""

    def __init__(self, pick: int = -1):
        self.pick, self.calls = pick, []

    def __call__(self, op, N, K, dtype, device):
        self.calls.append((op, N, K))
        candidates = gemv_tuning.candidates(op, N, K, dtype)
        best = candidates[self.pick]
        gemv_tuning.TIMINGS[(op, N, K, dtype)] = {c: 1.0 if c == best else 2.0 for c in candidates}
        fl._TUNED[(op, N, K, dtype)] = best
        return best


@pytest.fixture
def fresh_process(tmp_path, monkeypatch):
    """An empty cache folder and no choice made yet in this 'process'."""
    monkeypatch.setenv("RUNTIME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RUNTIME_GEMV_TUNE", raising=False)
    restart(monkeypatch)
    return tmp_path


def restart(monkeypatch) -> None:
    monkeypatch.setattr(fl, "_TUNED", {})
    monkeypatch.setattr(gemv_blocks, "SHIPPED_ROLES", {field: set() for field in gemv_blocks.ROLE_LISTS})
    monkeypatch.setattr(gemv_tuning, "TIMINGS", {})
    monkeypatch.setattr(gemv_tuning, "SOURCES", {})


def on(monkeypatch, card: Card, pick: int = -1) -> FakeTune:
    monkeypatch.setattr(tuning_store, "card", lambda device: card)
    fake = FakeTune(pick)
    monkeypatch.setattr(gemv_tuning, "tune", fake)
    return fake


def keyed(shapes, dtype=BF16):
    return [(*s, dtype) for s in shapes]


def write_store(card: Card, entries: list[dict]) -> None:
    path = tuning_store.store_path(card)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": tuning_store.FORMAT, "card": card.as_json(), "choices": entries}))


def stored_configs(card: Card) -> dict:
    return {k: c for k, (c, _) in tuning_store.load(card).items()}


# ---------------------------------------------------------------- (a) the store across starts


@pytest.mark.filterwarnings("error")
def test_first_start_tunes_and_saves_a_later_start_reads_the_store(fresh_process, monkeypatch):
    fake = on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == LLAMA
    chosen = dict(fl._TUNED)
    assert stored_configs(A100) == chosen
    assert {k: us for k, (_, us) in tuning_store.load(A100).items()} == dict.fromkeys(chosen, 1.0)
    assert set(gemv_tuning.SOURCES.values()) == {"tuned"}

    restart(monkeypatch)
    fake = on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == []
    assert fl._TUNED == chosen
    assert gemv_tuning.SOURCES == dict.fromkeys(keyed(LLAMA), "stored")
    assert gemv_tuning.TIMINGS == {}


def test_the_card_key_changes_with_everything_a_choice_depends_on(fresh_process, monkeypatch):
    variants = [
        A100,
        Card("NVIDIA A100-PCIE-40GB", (8, 0), "3.6.0", "2.11.0"),
        Card(A100.name, (8, 6), "3.6.0", "2.11.0"),
        Card(A100.name, (8, 0), "3.5.1", "2.11.0"),
        Card(A100.name, (8, 0), "3.6.0", "2.10.0"),
    ]
    keys = {c.key for c in variants}
    assert len(keys) == len(variants)
    for constant in ("FORMAT", "TIMING"):  # a new file layout, or tune() timing another way
        with monkeypatch.context() as m:
            m.setattr(tuning_store, constant, getattr(tuning_store, constant) + 1)
            assert A100.key not in keys

    on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    restart(monkeypatch)
    newer_triton = on(monkeypatch, variants[3])
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert newer_triton.calls == LLAMA  # another triton may compile another winner


def test_the_cache_folder(monkeypatch, tmp_path):
    def cache_dir():
        return tuning_store.store_path(H100).parent.parent

    for name in ("RUNTIME_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "runtime"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "runtime"
    monkeypatch.setenv("RUNTIME_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_off_cuda_there_is_no_card_and_nothing_is_stored(fresh_process):
    assert tuning_store.card("cpu") is None
    gemv_tuning.tune_shapes(LLAMA, torch.float32, "cpu")
    assert fl._TUNED == {} and gemv_tuning.SOURCES == {}
    assert not (fresh_process / "cache").exists()


# ---------------------------------------------------------------- (b) shipped choices


def shipped_h100() -> dict:
    return {k: c for k, (c, _) in tuning_store.shipped(H100).items()}


@pytest.mark.filterwarnings("error")
def test_shipped_choices_apply_to_their_card_whatever_the_versions(fresh_process, monkeypatch):
    fake = on(monkeypatch, H100)
    gemv_tuning.tune_shapes([*LLAMA, UNSHIPPED], BF16, "cuda")
    assert fake.calls == [UNSHIPPED]  # only the shape the file lacks is timed
    for key in keyed(LLAMA):
        assert fl._TUNED[key] == shipped_h100()[key]
        assert gemv_tuning.SOURCES[key] == "shipped"
    assert gemv_tuning.SOURCES[(*UNSHIPPED, BF16)] == "tuned"
    assert stored_configs(H100) == {(*UNSHIPPED, BF16): fl._TUNED[(*UNSHIPPED, BF16)]}  # tuned only


@pytest.mark.filterwarnings("error")
def test_shipped_choices_are_not_another_cards(fresh_process, monkeypatch):
    for card in (A100, Card(H100.name, (8, 0), H100.triton, H100.torch)):
        restart(monkeypatch)
        fake = on(monkeypatch, card)
        gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
        assert fake.calls == LLAMA
    assert tuning_store.shipped(A100) == {}
    fake = on(monkeypatch, H100)
    gemv_tuning.tune_shapes(LLAMA, torch.float16, "cuda")  # measured in bf16 only
    assert fake.calls == LLAMA


def test_the_users_store_comes_before_shipped_choices(fresh_process, monkeypatch):
    key = ("norm_linear", 3072, 2048, BF16)
    other = next(c for c in gemv_tuning.candidates(*key) if c != shipped_h100()[key])
    write_store(
        H100, [{"op": "norm_linear", "N": 3072, "K": 2048, "dtype": "bfloat16", "config": list(other)}]
    )
    fake = on(monkeypatch, H100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == []
    assert fl._TUNED[key] == other and gemv_tuning.SOURCES[key] == "stored"
    assert gemv_tuning.SOURCES[("linear", 2048, 2048, BF16)] == "shipped"


# ---------------------------------------------------------------- (c) fresh, (d) off


def test_fresh_retunes_and_overwrites_the_store(fresh_process, monkeypatch):
    on(monkeypatch, A100, pick=0)
    gemv_tuning.tune_shapes([*LLAMA, UNSHIPPED], BF16, "cuda")
    first = stored_configs(A100)

    restart(monkeypatch)
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "fresh")
    fake = on(monkeypatch, A100, pick=-1)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == LLAMA
    now = stored_configs(A100)
    for key in keyed(LLAMA):
        assert now[key] == fl._TUNED[key] == gemv_tuning.candidates(*key)[-1] != first[key]
    assert now[(*UNSHIPPED, BF16)] == first[(*UNSHIPPED, BF16)]  # another model's shape stays

    restart(monkeypatch)
    fake = on(monkeypatch, H100)  # shipped choices are skipped too
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == LLAMA


def test_fresh_retimes_a_choice_this_process_read_from_a_file(fresh_process, monkeypatch):
    fake = on(monkeypatch, H100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "fresh")
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == LLAMA
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")  # what it timed, it keeps
    assert fake.calls == LLAMA


def test_tune_0_chooses_nothing_and_touches_no_file(fresh_process, monkeypatch):
    write_store(A100, [{"op": "linear", "N": 2048, "K": 2048, "dtype": "bfloat16", "config": [1, 2048, 8]}])
    before = tuning_store.store_path(A100).read_text()
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "0")
    for card in (A100, H100):
        fake = on(monkeypatch, card)
        gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
        assert fake.calls == []
    assert fl._TUNED == {} and gemv_tuning.SOURCES == {}
    assert tuning_store.store_path(A100).read_text() == before
    assert not tuning_store.store_path(H100).exists()


# ---------------------------------------------------------------- (e) (f) (g) bad files, bad folders


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "unreadable"),
        ('{"format": 1, "card": {"name": "x"}, "choices": []}', "unreadable"),
        ('{"format": 1, "card": {}, "choices": [{"op": "conv", "N": 1}]}', "unreadable"),
        ('[1, 2, 3]', "unreadable"),
        (json.dumps({"format": 1, "card": H100.as_json(), "choices": []}), "another card"),
    ],
)  # fmt: skip
def test_a_corrupt_or_foreign_store_warns_and_tunes(fresh_process, monkeypatch, text, match):
    path = tuning_store.store_path(A100)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    fake = on(monkeypatch, A100)
    with pytest.warns(UserWarning, match=match):
        gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == LLAMA
    assert stored_configs(A100) == fl._TUNED  # replaced by a good file


def test_a_config_no_longer_among_the_candidates_is_ignored(fresh_process, monkeypatch, tmp_path):
    stale = [3, 100, 4]  # not a candidate (nor the heuristic) of any shape
    good = gemv_tuning.candidates("linear", 2048, 2048, BF16)[2]
    write_store(A100, [
        {"op": "norm_linear", "N": 3072, "K": 2048, "dtype": "bfloat16", "config": stale, "us": 1.0},
        {"op": "linear", "N": 2048, "K": 2048, "dtype": "bfloat16", "config": list(good), "us": 1.0},
    ])  # fmt: skip
    fake = on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert ("norm_linear", 3072, 2048) in fake.calls and ("linear", 2048, 2048) not in fake.calls
    assert fl._TUNED[("linear", 2048, 2048, BF16)] == good
    assert list(stale) not in [list(c) for c in stored_configs(A100).values()]

    # the same in a shipped file
    shipped_dir = tmp_path / "shipped"
    shipped_dir.mkdir()
    (shipped_dir / "h100.json").write_text(
        tuning_store.dumps(
            {"format": tuning_store.FORMAT, "card": {"name": H100.name, "capability": [9, 0]}},
            {
                ("linear", 2048, 2048, BF16): (tuple(stale), None),
                ("norm_linear", 3072, 2048, BF16): (good, None),
            },
        )
    )
    monkeypatch.setattr(tuning_store, "SHIPPED_DIR", shipped_dir)
    restart(monkeypatch)
    fake = on(monkeypatch, H100)
    gemv_tuning.tune_shapes(LLAMA[:2], BF16, "cuda")
    assert fake.calls == [("linear", 2048, 2048)]


def test_an_unwritable_cache_warns_and_the_choices_still_apply(fresh_process, monkeypatch):
    blocker = fresh_process / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RUNTIME_CACHE_DIR", str(blocker / "cache"))  # a folder under a file: even root fails
    fake = on(monkeypatch, A100)
    with pytest.warns(UserWarning, match="not saved"):
        gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert fake.calls == LLAMA and set(fl._TUNED) == set(keyed(LLAMA))


def test_a_failed_write_leaves_no_file_behind(fresh_process, monkeypatch):
    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tuning_store.os, "replace", disk_full)
    on(monkeypatch, A100)
    with pytest.warns(UserWarning, match="No space left"):
        gemv_tuning.tune_shapes(LLAMA, BF16, "cuda")
    assert set(fl._TUNED) == set(keyed(LLAMA))
    assert list(tuning_store.store_path(A100).parent.iterdir()) == []


# ---------------------------------------------------------------- (h) the shipped files


@pytest.mark.filterwarnings("error")
def test_the_shipped_files_parse_and_hold_only_candidates():
    files = sorted(tuning_store.SHIPPED_DIR.glob("*.json"))
    assert files, "no shipped choices"
    for path in files:
        got = tuning_store._read(path)
        assert got is not None, path
        _, choices = got
        assert choices, path
        for key, (config, _) in choices.items():
            assert config in gemv_tuning.candidates(*key), (path.name, key, config)
    assert set(keyed(LLAMA)) <= set(tuning_store.shipped(H100))


# the o projection's and the LM heads' blocks the step's A/B preferred on the H100 (Llama -14 us,
# Qwen3 -6 us per step against the tuner's choices alone: 1 row on 8 warps, 2 and 4 rows)
H100_STEP_BLOCKS = "linear:2048x2048=2/2048/4 lm_head:128256x2048=8/2048/8 lm_head:151936x2048=8/2048/8"
# Gemma's and Qwen3's own shapes (not the o projection Qwen3 shares with Llama) from the tuner's picks
# once it timed kernels, not the host's waits: the step preferred them (Gemma -33..-38 us, Qwen3 -15..-18)
H100_RETUNED_BLOCKS = (
    "linear:1152x6912=2/2048/8 lm_head_pre:262144x1152=16/256/4 norm_linear:1536x1152=2/2048/4 "
    "norm_linear_pre:1536x1152=8/2048/8 norm_linear_act:12288x2048=2/2048/4 "
    "linear:2048x6144=1/4096/8"
)
H100_STEP_SOURCE = (
    "results/2026-11-27-gpu-checks/profile_ab_o_lm_blocks_confirm_h100.json (o and LM heads); "
    "results/2026-11-28-gpu-checks/ab_picks_h100_gemma-3-1b-it_ab.json, "
    "results/2026-11-28-gpu-checks/ab_picks_h100_Qwen3-1.7B_ab.json (Gemma's and Qwen3's own shapes)"
)


def test_the_shipped_h100_file_is_what_the_script_makes_of_the_measurement(tmp_path):
    repo = Path(__file__).parent.parent
    sources = ["results/2026-11-27-gpu-checks/gemv_tuning_h100.json",
               "results/2026-11-27-gpu-checks/gemv_store_gated_h100.json"]  # fmt: skip
    out = tmp_path / "h100.json"
    cmd = [sys.executable, "scripts/ship_tuning.py", *sources, "--out", str(out), "--gpu", H100.name,
           "--capability", "9.0", "--measured-with", "triton 3.6.0, torch 2.11.0+cu130",
           "--step-blocks", f"{H100_STEP_BLOCKS} {H100_RETUNED_BLOCKS}", "--step-source", H100_STEP_SOURCE,
           "--residual-add", "down:2048x8192",
           "--residual-add-source", "results/2026-11-28-gpu-checks/ab_down_add_llama_ab.json",
           "--early-release", "gate_up:16384x2048 down:2048x8192 gate_up:12288x2048 down:2048x6144",
           "--early-release-source", "results/2026-11-28-gpu-checks/ab_early_llama_ab.json, "
           "results/2026-11-28-gpu-checks/ab_early3_qwen3_p256_ab.json"]  # fmt: skip
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    assert out.read_text() == (tuning_store.SHIPPED_DIR / "nvidia-h100-80gb-hbm3.json").read_text()


# the H200's early-release list: Llama's shapes (a hand-made A/B), Qwen3's (the joint step choice)
H200_EARLY = "gate_up:16384x2048 down:2048x8192 gate_up:12288x2048 down:2048x6144"


def test_the_shipped_h200_file_is_the_step_choices_it_records(tmp_path):
    """The H200's file: the dev models' shapes from the step tuner's picks on an H200 (step_tuning.py;
    in the step against the earlier file: Llama -40..-52, Qwen3 -5..-8, Gemma -6..-19 us), Qwen3's
    down and qkv blocks and its gate/up and down early release from the joint choice of blocks and
    roles (-13..-36 us), the other shapes the H100's blocks of before its Gemma and Qwen3 retune,
    Llama's down-GEMV residual add (-8..-17 us) and its gate/up and down early release (-9..-22 us with
    those blocks; Gemma's +80..+89 on the earlier blocks). ship_tuning.py remakes it from the choices
    its source records, and refuses a file with neither a measurement nor step blocks."""
    repo = Path(__file__).parent.parent
    h200 = tuning_store.SHIPPED_DIR / "nvidia-h200.json"
    source = json.loads(h200.read_text())["source"]
    blocks, _, rest = source.removeprefix("in the step (no time alone): ").partition(", from ")
    block_source, _, roles = rest.partition("; residual add in the step: down:2048x8192, from ")
    add, _, early = roles.partition(f"; early release in the step: {H200_EARLY}, from ")
    picked = "linear:2048x8192=8/2048/8 lm_head:128256x2048=4/512/4 norm_linear:1536x1152=8/2048/8"
    joint = "linear:2048x6144=8/2048/8 norm_linear:4096x2048=4/1024/4"
    assert set(f"{picked} {joint}".split()) <= set(blocks.split())
    out = tmp_path / "h200.json"
    base = [sys.executable, "scripts/ship_tuning.py", "--out", str(out), "--gpu", "NVIDIA H200",
            "--capability", "9.0", "--measured-with", "triton 3.6.0, torch 2.11.0+cu130"]  # fmt: skip
    empty = subprocess.run(base, cwd=repo, capture_output=True, text=True)
    assert empty.returncode != 0 and "nothing to ship" in empty.stderr and not out.exists()
    step = ["--step-blocks", blocks, "--step-source", block_source,
            "--residual-add", "down:2048x8192", "--residual-add-source", add,
            "--early-release", H200_EARLY, "--early-release-source", early]  # fmt: skip
    subprocess.run([*base, *step], cwd=repo, check=True, capture_output=True)
    assert out.read_text() == h200.read_text()
    h200_card = Card("NVIDIA H200", (9, 0), "9.9.9", "9.9.9+test")
    assert tuning_store.shipped(h200_card).keys() == tuning_store.shipped(H100).keys()
    assert tuning_store.shipped_roles(h200_card, "residual_add") == {("down", 2048, 8192)}
    assert tuning_store.shipped_roles(h200_card, "early_release") == {
        ("gate_up", 16384, 2048),
        ("down", 2048, 8192),
        ("gate_up", 12288, 2048),
        ("down", 2048, 6144),
    }


@pytest.mark.parametrize(
    "flag,source,bad,good,message",
    [
        ("--step-blocks", "--step-source", "linear:2048x2048=3/2048/4", "linear:2048x2048=2/2048/4",
         "not among today's candidates"),
        ("--residual-add", "--residual-add-source", "gate_up:16384x2048", "down:2048x8192", "role:NxK"),
        ("--early-release", "--early-release-source", "qkv:3072x2048", "gate_up:16384x2048", "role:NxK"),
    ],
)  # fmt: skip
def test_step_choices_must_be_valid_and_name_their_ab(tmp_path, flag, source, bad, good, message):
    """ship_tuning.py's choices from a same-process A/B of the step (--step-blocks: blocks tune()
    would time; --residual-add, --early-release: a role of its list with a shape): a bad entry is
    refused, and so is a good one with no --...-source naming the A/B."""
    repo = Path(__file__).parent.parent
    base = [sys.executable, "scripts/ship_tuning.py", "results/2026-11-27-gpu-checks/gemv_tuning_h100.json",
            "--out", str(tmp_path / "x.json"), "--gpu", H100.name, "--capability", "9.0"]  # fmt: skip
    refused = subprocess.run([*base, flag, bad, source, "ab.json"], cwd=repo, capture_output=True, text=True)
    assert refused.returncode != 0 and message in refused.stderr
    unnamed = subprocess.run([*base, flag, good], cwd=repo, capture_output=True, text=True)
    assert unnamed.returncode != 0 and source in unnamed.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.filterwarnings("error")
def test_shipped_role_lists_reach_the_step_for_their_card_only(fresh_process, monkeypatch):
    """The H100 file names Llama's down projection for the residual add (the step's A/B: -9..-14 us)
    and Llama's and Qwen3's gate/up and down projections for the early release (-13..-19 and
    -11..-19 us); tune_shapes hands its card's entries to the GEMV switches, another card's none."""
    assert tuning_store.shipped_roles(H100, "residual_add") == {("down", 2048, 8192)}
    assert tuning_store.shipped_roles(H100, "early_release") == {
        ("gate_up", 16384, 2048), ("down", 2048, 8192), ("gate_up", 12288, 2048), ("down", 2048, 6144)
    }  # fmt: skip
    assert (
        tuning_store.shipped_roles(A100, "residual_add")
        == tuning_store.shipped_roles(A100, "early_release")
        == set()
    )
    on(monkeypatch, A100)
    gemv_tuning.tune_shapes(LLAMA[:1], BF16, "cuda")
    assert not gemv_blocks.shipped_role("residual_add", "down", 2048, 8192)
    assert not gemv_blocks.shipped_role("early_release", "gate_up", 16384, 2048)
    on(monkeypatch, H100)
    gemv_tuning.tune_shapes(LLAMA[:1], BF16, "cuda")
    assert gemv_blocks.shipped_role("residual_add", "down", 2048, 8192)
    assert not gemv_blocks.shipped_role("residual_add", "down", 2048, 6144)  # Qwen3's: slower with it
    assert gemv_blocks.shipped_role("early_release", "gate_up", 16384, 2048)
    assert gemv_blocks.shipped_role("early_release", "down", 2048, 8192)
    assert not gemv_blocks.shipped_role("early_release", "gate_up", 13824, 1152)  # Gemma's: slower early
    assert not gemv_blocks.shipped_role("early_release", "o", 2048, 2048)


@pytest.mark.parametrize(
    "field,listed",
    [("residual_add", ["down:2048"]), ("residual_add", ["gate_up:16384x2048"]), ("residual_add", "down:2048x8192"),
     ("early_release", ["qkv:3072x2048"]), ("early_release", {"gate_up": "16384x2048"})],
)  # fmt: skip
def test_a_malformed_role_list_warns_and_names_nothing(monkeypatch, tmp_path, field, listed):
    doc = json.loads((tuning_store.SHIPPED_DIR / "nvidia-h100-80gb-hbm3.json").read_text())
    (tmp_path / "h100.json").write_text(json.dumps({**doc, field: listed}))
    monkeypatch.setattr(tuning_store, "SHIPPED_DIR", tmp_path)
    with pytest.warns(UserWarning, match=field):
        assert tuning_store.shipped_roles(H100, field) == set()
    assert tuning_store.shipped(H100)  # the block choices still apply
    other = next(f for f in gemv_blocks.ROLE_LISTS if f != field)
    assert tuning_store.shipped_roles(H100, other)  # and so does the other list


# ---------------------------------------------------------------- what a benchmark row records


def test_describe_names_each_shapes_blocks_and_their_source(fresh_process, monkeypatch):
    on(monkeypatch, H100)
    gemv_tuning.tune_shapes(LLAMA[:2], BF16, "cuda")
    assert gemv_tuning.describe(LLAMA[:2] + [UNSHIPPED], BF16) == "; ".join(
        [
            f"norm_linear 3072x2048 {'/'.join(map(str, fl._TUNED[('norm_linear', 3072, 2048, BF16)]))} shipped",
            f"linear 2048x2048 {'/'.join(map(str, fl._TUNED[('linear', 2048, 2048, BF16)]))} shipped",
            f"linear 4096x4096 {'/'.join(map(str, gemv_blocks.gemv_config(4096, 4096, 2)))} heuristic",
        ]
    )
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "0")  # the launches ignore the choices then: so does the record
    assert gemv_tuning.describe(LLAMA[:1], BF16) == (
        f"norm_linear 3072x2048 {'/'.join(map(str, gemv_blocks.gemv_config(3072, 2048, 2, 3)))} heuristic"
    )


def test_a_tuning_files_blocks_as_a_block_override(tmp_path):
    """block_overrides: every bf16 choice of a file as one RUNTIME_GEMV_BLOCKS value, which the
    launches' parser reads back to the same blocks (profile_step --blocks-from); another dtype's
    choices are left out; a missing file is refused by name."""
    path = next(tuning_store.SHIPPED_DIR.glob("*.json"))
    doc = json.loads(path.read_text())
    doc["choices"].append({**doc["choices"][0], "dtype": "float16", "config": [1, 2048, 4]})
    copy = tmp_path / "card.json"
    copy.write_text(json.dumps(doc))
    parsed = gemv_blocks.parse_blocks(tuning_store.block_overrides(copy), "RUNTIME_GEMV_BLOCKS")
    want = {(e["op"], e["N"], e["K"]): tuple(e["config"]) for e in doc["choices"] if e["dtype"] == "bfloat16"}
    assert parsed == want and len(parsed) == len(doc["choices"]) - 1
    with pytest.raises(ValueError, match="no readable tuning file"):
        tuning_store.block_overrides(tmp_path / "missing.json")


def test_a_tuning_files_role_lists_as_the_switches_that_force_them(tmp_path, monkeypatch):
    """role_switches: a file's lists as RUNTIME_RESIDUAL_ADD and RUNTIME_GEMV_EARLY values naming its
    shapes (the o add, on at every shape by default, first), which the launches read back as the
    file's choices: Llama's down adds and releases, Qwen3's does neither; a file without lists names
    no role beyond the default (profile_step --blocks-from)."""
    doc = {"format": tuning_store.FORMAT, "card": A100.as_json(), "choices": [],
           "residual_add": ["down:2048x8192"], "early_release": ["down:2048x8192", "gate_up:16384x2048"]}  # fmt: skip
    path = tmp_path / "card.json"
    path.write_text(json.dumps(doc))
    switches = tuning_store.role_switches(path)
    assert switches == {
        "RUNTIME_RESIDUAL_ADD": "o,down:2048x8192",
        "RUNTIME_GEMV_EARLY": "down:2048x8192,gate_up:16384x2048",
    }
    for variable, value in switches.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setattr(ops, "_gemv_row", lambda x, weight: True)
    x, o = torch.empty(1, 8), torch.empty(2048, 2048)
    llama_down, qwen3_down = torch.empty(2048, 8192), torch.empty(2048, 6144)
    assert ops.residual_epilogue(x, o, "o") and ops.residual_epilogue(x, llama_down, "down")
    assert not ops.residual_epilogue(x, qwen3_down, "down")
    assert ops.early_release(llama_down, "down") and ops.early_release(torch.empty(16384, 2048), "gate_up")
    assert not ops.early_release(qwen3_down, "down") and not ops.early_release(o, "o")
    path.write_text(json.dumps({k: v for k, v in doc.items() if k not in gemv_blocks.ROLE_LISTS}))
    assert tuning_store.role_switches(path) == {"RUNTIME_RESIDUAL_ADD": "o", "RUNTIME_GEMV_EARLY": "none"}
    with pytest.raises(ValueError, match="no readable tuning file"):
        tuning_store.role_switches(tmp_path / "missing.json")
