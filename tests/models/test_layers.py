"""Shared transformer layers: masks, KV-cache equivalence, cross-attention, norms."""

from __future__ import annotations

import torch

from unicxr.models.layers import (
    Attention,
    KVCache,
    RMSNorm,
    TransformerBlock,
    causal_mask,
    prefix_lm_mask,
    reorder_cache,
)


def test_masks():
    m = causal_mask(3, 5)
    assert m.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    p = prefix_lm_mask(2, 4)
    assert p[0].tolist() == [True, True, False, False] and p[3].tolist() == [True] * 4


def test_incremental_self_attention_matches_full_causal():
    torch.manual_seed(0)
    blk = TransformerBlock(16, 2, cross_dim=8).eval()
    x, ctx = torch.randn(2, 6, 16), torch.randn(2, 5, 8)
    full, _ = blk(x, ctx, causal=True)
    out, cache = blk(x[:, :3], ctx, causal=True, use_cache=True)
    outs = [out]
    for t in range(3, 6):
        o, cache = blk(x[:, t : t + 1], None, causal=True, cache=cache, use_cache=True)
        outs.append(o)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
    assert isinstance(cache[1], KVCache) and cache[1].static and cache[0].length == 6


def test_attention_bool_and_float_masks_agree_and_reorder():
    torch.manual_seed(1)
    att = Attention(8, 2).eval()
    x = torch.randn(3, 4, 8)
    m = causal_mask(4, 4)
    a, _ = att(x, mask=m)
    b, _ = att(x, mask=torch.zeros(4, 4).masked_fill(~m, float("-inf")))
    c, _ = att(x, causal=True)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)
    _, cache = att(x, causal=True, use_cache=True)
    r = reorder_cache({"layers": [(cache, None)], "pos": 4}, torch.tensor([2, 2, 0]))
    assert torch.equal(r["layers"][0][0].k[0], cache.k[2]) and r["pos"] == 4


def test_rmsnorm_unit_rms():
    y = RMSNorm(32)(torch.randn(4, 32) * 5)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4), atol=1e-3)


def test_sincos_positions_of_a_coarser_grid_keep_their_place_on_the_reference_grid():
    from unicxr.models.dit import PatchEmbed
    from unicxr.models.layers import sinusoidal_positions, sinusoidal_positions_2d

    full = sinusoidal_positions_2d(8, 8, 16)
    assert torch.equal(sinusoidal_positions_2d(8, 8, 16, ref=(8, 8)), full)  # the model's own grid: unchanged
    assert torch.equal(sinusoidal_positions(5, 6, scale=1.0), sinusoidal_positions(5, 6))
    # a 4x4 grid over the same image: cell i covers fine cells 2i and 2i+1, so its centre is 2i + 0.5
    half = sinusoidal_positions_2d(4, 4, 16, ref=(8, 8)).view(4, 4, 16)
    pos = 2 * torch.arange(4, dtype=torch.float32)[:, None] + 0.5
    freq = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4, dtype=torch.float32) / 4)
    rows = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], -1).flatten(1)
    torch.testing.assert_close(half[:, 0, :8], rows)
    torch.testing.assert_close(half[0, :, 8:], rows)
    # so a coarse cell's code is nearest to those of the fine cells it covers
    fine = full.view(8, 8, 16)
    d = (fine[:, 0, :8] - half[1, 0, :8]).norm(dim=-1)
    assert set(d.argsort()[:2].tolist()) == {2, 3}
    # PatchEmbed uses its own size as the reference grid
    emb = PatchEmbed(channels=1, size=16, patch=2, dim=16, positions="sincos")
    torch.nn.init.zeros_(emb.proj.weight)
    torch.nn.init.zeros_(emb.proj.bias)
    torch.testing.assert_close(emb(torch.zeros(1, 1, 8, 8))[0], sinusoidal_positions_2d(4, 4, 16, ref=(8, 8)))
    torch.testing.assert_close(emb(torch.zeros(1, 1, 16, 16))[0], full)
