"""What the decode attention's split kernel (qkv_attention_kernel.py) loads, and how: a cache block
with its live slots, the q/k-norm weights and rope tables, the new token's query group, key and
value from the packed qkv row, and the opaque move that holds a tile loaded before the PDL wait out
of the dot's layout until it is needed.
"""

from __future__ import annotations

from runtime.kernels._triton import jit, tl
from runtime.kernels.qkv_rope import norm_weight_halves, rope_halves


@jit
def cache_block(
    k_base, v_base, blk, BLOCK_N: tl.constexpr, n, c, c_ok, d, d_ok, length, new_slot, half, k_ss, v_ss
):
    """Cache block blk: K's two halves (BLOCK_N, HALF_BLOCK), V (BLOCK_N, BLOCK_D) and which of its
    slots are live (below the length, and not the new token's slot, which may still hold an older one)."""
    slots = blk * BLOCK_N + n
    live = (slots < length) & (slots != new_slot)
    at = slots.to(tl.int64)[:, None]
    k_ok = live[:, None] & c_ok[None, :]
    k1 = tl.load(k_base + at * k_ss + c[None, :], mask=k_ok, other=0.0)
    k2 = tl.load(k_base + at * k_ss + half + c[None, :], mask=k_ok, other=0.0)
    v = tl.load(v_base + at * v_ss + d[None, :], mask=live[:, None] & d_ok[None, :], other=0.0)
    return k1, k2, v, live


@jit
def tables(
    q_w_ptr, k_w_ptr, cs, sn, c, c_ok, g, D: tl.constexpr, QK_NORM: tl.constexpr, GROUPED: tl.constexpr
):
    """The q/k-norm weights and the token's rope tables as halves: qw1, qw2, kw1, kw2, then cos1,
    cos2, sin1, sin2 for q and for the new key. Without GROUPED, (1, HALF_BLOCK) tiles that q's
    (BLOCK_G, HALF_BLOCK) tiles broadcast; each such broadcast moves its table between layouts
    through shared memory, and that barrier holds back the loads after it. GROUPED loads q's
    tables in q's shape (no move), the key's in its (1, HALF_BLOCK) shape."""
    one = tl.arange(0, 1)
    qw1, qw2 = norm_weight_halves(q_w_ptr, c, c_ok, g, D, QK_NORM, GROUPED)
    kw1, kw2 = norm_weight_halves(k_w_ptr, c, c_ok, one, D, QK_NORM, GROUPED)
    qcos1, qcos2, qsin1, qsin2 = rope_halves(cs, sn, c, c_ok, g, D, GROUPED)
    if GROUPED:
        kcos1, kcos2, ksin1, ksin2 = rope_halves(cs, sn, c, c_ok, one, D, GROUPED)
    else:
        kcos1, kcos2, ksin1, ksin2 = qcos1, qcos2, qsin1, qsin2
    return qw1, qw2, kw1, kw2, qcos1, qcos2, qsin1, qsin2, kcos1, kcos2, ksin1, ksin2


@jit
def query_rows(row, h, g, c, g_ok, c_ok, half, G: tl.constexpr, D: tl.constexpr):
    """Kv head h's query group from the qkv row: two (BLOCK_G, HALF_BLOCK) halves, as stored."""
    q_src = row + (h * G + g)[:, None] * D
    q_ok = g_ok[:, None] & c_ok[None, :]
    return tl.load(q_src + c[None, :], mask=q_ok, other=0.0), tl.load(
        q_src + half + c[None, :], mask=q_ok, other=0.0
    )


@jit
def key_value_rows(row, h, c, c_ok, d, d_ok, half, n_heads, n_kv_heads, D: tl.constexpr):
    """The new token's key (two (1, HALF_BLOCK) halves) and value (1, BLOCK_D) from the qkv row."""
    k_src = row + (n_heads + h) * D + c[None, :]
    kn1 = tl.load(k_src, mask=c_ok[None, :], other=0.0)
    kn2 = tl.load(k_src + half, mask=c_ok[None, :], other=0.0)
    vn = tl.load(row + (n_heads + n_kv_heads + h) * D + d[None, :], mask=d_ok[None, :], other=0.0)
    return kn1, kn2, vn


@jit
def pinned(x):
    """x unchanged, through an opaque move: a tile loaded before the PDL wait for a later tl.dot is
    otherwise moved to the dot's layout (through shared memory, behind a barrier) right after its
    load, which waits for its data there and holds back every load after it. The move now happens
    where this is called. Inline PTX: never under the CPU interpreter (the launch passes GROUPED
    False there)."""
    pack: tl.constexpr = 2 if x.dtype.primitive_bitwidth == 16 else 1  # two 16-bit values per register
    return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=x.dtype, is_pure=False, pack=pack)
