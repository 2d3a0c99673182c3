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
