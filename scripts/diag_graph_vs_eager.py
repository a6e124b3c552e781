"""GPU diagnostic: which op gives different bits under CUDA-graph replay than eagerly?
Runs each decode-path op eagerly and inside a captured graph on the same inputs and prints the
max difference (0 means bit-identical)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runtime.kernels import ops


def compare(name, fn, *args):
    eager = fn(*args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn(*args)
    g.replay()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        on_side = fn(*args)
    torch.cuda.synchronize()
    print(f"{name:40s} graph-vs-eager {float((out.float() - eager.float()).abs().max()):.3e}   "
          f"side-stream-vs-eager {float((on_side.float() - eager.float()).abs().max()):.3e}")  # fmt: skip


def main():
    torch.manual_seed(0)
    dev, bf = "cuda", torch.bfloat16
    for m, k, n in [
        (1, 2048, 4096),
        (1, 2048, 16384),
        (1, 8192, 2048),
        (1, 2048, 151936),
        (4, 2048, 4096),
        (8, 6144, 2048),
    ]:
        x = torch.randn(m, k, device=dev, dtype=bf)
        w = torch.randn(n, k, device=dev, dtype=bf) * 0.02
        compare(f"linear {m}x{k} @ {k}x{n}", F.linear, x, w)
    for B, H, Hkv, S, D in [(1, 16, 8, 700, 128), (4, 32, 8, 700, 64), (1, 4, 1, 512, 256)]:
        q = torch.randn(B, H, D, device=dev, dtype=bf)
        kc = torch.randn(B, Hkv, S, D, device=dev, dtype=bf)
        vc = torch.randn(B, Hkv, S, D, device=dev, dtype=bf)
        lengths = torch.randint(1, S, (B,), device=dev)
        compare(
            f"decode_attention B{B} H{H}/{Hkv} S{S} D{D}", ops.decode_attention, q, kc, vc, lengths, D**-0.5
        )
    x = torch.randn(1, 1, 2048, device=dev, dtype=bf)
    w = torch.randn(2048, device=dev, dtype=bf)
    compare("rms_norm", ops.rms_norm, x, w, 1e-6, 0.0)
    logits = torch.randn(4, 151936, device=dev)
    compare("argmax", lambda t: t.argmax(-1), logits)
    print("sdpa backends:", torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
          torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())  # fmt: skip


if __name__ == "__main__":
    main()
