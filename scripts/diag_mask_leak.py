"""GPU diagnostic: does garbage in masked (dead) cache slots change decode attention?
Per SDPA backend, compare the output with dead slots zeroed vs filled with large values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from runtime.kernels.attention import decode_attention_ref


def main():
    torch.manual_seed(0)
    dev, bf = "cuda", torch.bfloat16
    for B, H, Hkv, S, D in [
        (1, 16, 8, 700, 128),
        (4, 32, 8, 700, 64),
        (1, 4, 1, 512, 256),
        (1, 16, 8, 512, 128),
    ]:
        q = torch.randn(B, H, D, device=dev, dtype=bf)
        kc = torch.randn(B, Hkv, S, D, device=dev, dtype=bf)
        vc = torch.randn(B, Hkv, S, D, device=dev, dtype=bf)
        lengths = torch.randint(1, S // 2, (B,), device=dev)
        dead = torch.arange(S, device=dev)[None, :] >= lengths[:, None]  # (B, S)
        k0, v0 = kc.clone(), vc.clone()
        k0[dead[:, None, :, None].expand_as(k0)] = 0
        v0[dead[:, None, :, None].expand_as(v0)] = 0
        k1, v1 = k0.clone(), v0.clone()
        k1[dead[:, None, :, None].expand_as(k1)] = 100
        v1[dead[:, None, :, None].expand_as(v1)] = 100
        for name, backend in [("default", None), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)]:  # fmt: skip
            try:
                if backend is None:
                    a = decode_attention_ref(q, k0, v0, lengths, D**-0.5)
                    b = decode_attention_ref(q, k1, v1, lengths, D**-0.5)
                else:
                    with sdpa_kernel(backend):
                        a = decode_attention_ref(q, k0, v0, lengths, D**-0.5)
                        b = decode_attention_ref(q, k1, v1, lengths, D**-0.5)
                # exact reference: only live slots, fp32
                ref = torch.stack([
                    F.scaled_dot_product_attention(
                        q[i : i + 1, :, None].float(), k0[i : i + 1, :, : lengths[i]].float(),
                        v0[i : i + 1, :, : lengths[i]].float(), scale=D**-0.5, enable_gqa=True)[0, :, 0]
                    for i in range(B)])  # fmt: skip
                print(f"B{B} H{H}/{Hkv} S{S} D{D} {name:10s} zero-vs-garbage {float((a - b).abs().max()):.3e} "
                      f"vs-ref {float((a.float() - ref).abs().max()):.3e}")  # fmt: skip
            except RuntimeError as e:
                print(f"B{B} H{H}/{Hkv} S{S} D{D} {name:10s} unavailable: {str(e).splitlines()[0][:80]}")


if __name__ == "__main__":
    main()
