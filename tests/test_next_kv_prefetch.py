"""The decode attention's L2 prefetch of the next layer's cache (RUNTIME_ATTN_NEXT_KV): the switch,
which caches each layer hands its kernel (the next layer's; the last layer the first's), and on a
GPU that the prefetch changes no bit of the output or the cache. Where the PTX puts the prefetches
is checked in test_kernels_compile.py."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import BF16, F32, assert_same_bits, rand
from tiny_configs import hf_and_ours

from runtime.engine.state import KVCache
from runtime.kernels import attention_plan, ops
from runtime.kernels.qkv_attention import _next_layer


def test_the_switch_is_off_by_default_and_refuses_a_bad_value(monkeypatch):
    monkeypatch.delenv("RUNTIME_ATTN_NEXT_KV", raising=False)
    assert attention_plan.next_kv_prefetch() == "off"
    monkeypatch.setenv("RUNTIME_ATTN_NEXT_KV", "end")
    assert attention_plan.next_kv_prefetch() == "end"
    monkeypatch.setenv("RUNTIME_ATTN_NEXT_KV", "later")
    with pytest.raises(ValueError, match="RUNTIME_ATTN_NEXT_KV='later': choose one of off, start, end"):
        attention_plan.next_kv_prefetch()


@pytest.mark.parametrize("family,rows", [("llama", 1), ("qwen3", 3), ("gemma3", 1), ("gemma3", 2)])
def test_each_layer_hands_its_kernel_the_next_layers_cache(monkeypatch, family, rows):
    """Layer i's attention gets layer i + 1's k and v (rows [0, B) of them), the last layer the
    first's: the cache it reads next. Gemma's sliding layers (rings of 8 slots) hand over a global
    layer's full-length cache and back; three rows take the folded-norm path."""
    _, spec, model = hf_and_ours(family)
    cache = KVCache(spec, 4, 24, "cpu", torch.float32)
    layer_of = {t.data_ptr(): i for i, t in enumerate(cache.k)}
    v_layer_of = {t.data_ptr(): i for i, t in enumerate(cache.v)}
    handed = []
    attend = ops.qkv_decode_attention

    def recording(qkv, *args, next_kv=None, **kwargs):
        k_cache = args[8]
        k, v = next_kv
        handed.append(
            (
                layer_of[k_cache.data_ptr()],
                (layer_of.get(k.data_ptr()), v_layer_of.get(v.data_ptr())),
                next_kv,
            )
        )
        return attend(qkv, *args, next_kv=next_kv, **kwargs)

    monkeypatch.setattr(ops, "qkv_decode_attention", recording)
    model.decode(torch.full((rows,), 5), torch.arange(rows) + 3, cache)
    n = len(cache.k)
    assert [layer for layer, _, _ in handed] == list(range(n))
    for layer, (k_layer, v_layer), (k, v) in handed:
        after = (layer + 1) % n
        assert k_layer == after and v_layer == after
        assert k.shape == (rows, *cache.k[after].shape[1:]) and v.shape == k.shape
    if family == "gemma3":
        assert {k.shape[2] for _, _, (k, _) in handed} == {8, 24}


def test_a_next_cache_of_other_heads_is_refused(monkeypatch):
    monkeypatch.setenv("RUNTIME_ATTN_NEXT_KV", "start")
    k, v = torch.zeros(2, 4, 16, 8), torch.zeros(2, 4, 16, 8)
    assert _next_layer(None, k, v)[2] == 0
    assert _next_layer((k[:, :, :8], v[:, :, :8]), k, v)[2] == 1  # a ring of another length is fine
    with pytest.raises(ValueError, match="does not match"):
        _next_layer((torch.zeros(2, 2, 16, 8), v), k, v)
    monkeypatch.setenv("RUNTIME_ATTN_NEXT_KV", "off")
    assert _next_layer((k, v), k, v) == (k, v, 0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the prefetch is inline PTX: a GPU build")
@pytest.mark.parametrize(
    "B,H,Hkv,D,S,next_S,dtype,splits",
    [(1, 16, 8, 128, 2048, 2048, BF16, None), (1, 4, 1, 256, 512, 2048, BF16, None),
     (1, 4, 1, 256, 2048, 512, BF16, None), (16, 32, 8, 64, 700, 700, BF16, None),
     (3, 10, 5, 40, 77, 130, F32, 2), (2, 16, 8, 128, 333, 333, BF16, 1)],
)  # fmt: skip
def test_the_prefetch_changes_no_bit(monkeypatch, B, H, Hkv, D, S, next_S, dtype, splits):
    """Each mode's output and cache against "off", bit for bit (prefetches write no register; the
    kept zero joins l_i as + 0.0), over rows near the end of a long cache and at its start, with a
    next layer's cache of another length (Gemma's rings and global layers), and the next layer's
    cache untouched."""
    from runtime.kernels.qkv_attention import qkv_decode_attention_triton

    qkv = rand(B, 1, (H + 2 * Hkv) * D, dtype=dtype).cuda()
    positions = torch.randint(0, S, (B,), device="cuda")
    positions[0] = S - 2
    half = D // 2
    freqs = positions[:, None, None].float() * torch.rand(half, device="cuda")
    cos = torch.cat([freqs.cos(), freqs.cos()], -1).to(dtype)
    sin = torch.cat([freqs.sin(), freqs.sin()], -1).to(dtype)
    k, v = rand(B, Hkv, S, D, dtype=dtype).cuda(), rand(B, Hkv, S, D, dtype=dtype).cuda()
    nk, nv = rand(B, Hkv, next_S, D, dtype=dtype).cuda(), rand(B, Hkv, next_S, D, dtype=dtype).cuda()
    nk0, nv0 = nk.clone(), nv.clone()
    args = (qkv, H, Hkv, cos, sin, None, None, 1e-6, 0.0)
    got = {}
    for mode in ("off", "start", "end"):
        monkeypatch.setenv("RUNTIME_ATTN_NEXT_KV", mode)
        kc, vc = k.clone(), v.clone()
        out = qkv_decode_attention_triton(
            *args, kc, vc, positions, D**-0.5, next_kv=(nk, nv), num_splits=splits
        )
        got[mode] = (out, kc, vc)
    for mode in ("start", "end"):
        for a, b in zip(got[mode], got["off"]):
            assert_same_bits(a, b)
    assert_same_bits(nk, nk0)
    assert_same_bits(nv, nv0)
