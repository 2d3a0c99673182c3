"""Shared sampling code: flow schedule and samplers, MONAI diffusion wrappers, guidance, timestep embedding."""

from __future__ import annotations

import pytest
import torch

from unicxr.sampling import (
    TimestepEmbedder,
    apg_combine,
    cfg_combine,
    cfg_rescale,
    flow_interpolate,
    flow_sample,
    flow_target,
    guided,
    in_interval,
    parse_apg,
    parse_interval,
    sample_flow_t,
    shift_t,
    time_grid,
    timestep_embedding,
)
from unicxr.sampling.diffusion import (
    DiffusionScheduleConfig,
    diffusion_sample,
    diffusion_target,
    make_scheduler,
    snr_loss_weights,
)


def test_timestep_embedding_shapes_and_distinct():
    e = timestep_embedding(torch.tensor([0.0, 1.0, 500.0]), 33)
    assert e.shape == (3, 33) and torch.isfinite(e).all()
    assert not torch.allclose(e[1], e[2])
    emb = TimestepEmbedder(16)
    assert emb(torch.rand(4)).shape == (4, 16)


def test_flow_interpolation_and_target():
    x0, x1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([0.0, 1.0])
    xt = flow_interpolate(x0, x1, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], x1[1])
    # the target is the time derivative of the interpolation
    t2 = torch.tensor([0.3, 0.3])
    num = (flow_interpolate(x0, x1, t2 + 1e-3) - flow_interpolate(x0, x1, t2)) / 1e-3
    torch.testing.assert_close(num, flow_target(x0, x1), atol=1e-2, rtol=1e-2)


def test_time_sampling_and_shift():
    g = torch.Generator().manual_seed(0)
    t = sample_flow_t(10000, generator=g)
    assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(t.mean()) - 0.5) < 0.02
    ts = sample_flow_t(10000, generator=torch.Generator().manual_seed(0), shift=3.0)
    assert float(ts.mean()) > float(t.mean()) + 0.1  # shift moves mass toward noise
    grid = time_grid(4, shift=2.0)
    assert grid[0] == 1 and grid[-1] == 0 and (grid[:-1] > grid[1:]).all()
    assert torch.equal(shift_t(t, 1.0), t)


@pytest.mark.parametrize("sampler", ["euler", "heun", "monai_rflow"])
def test_flow_samplers_reach_a_point_mass(sampler):
    """For data = one point c the exact velocity is (x − c)/t; every sampler must land on c."""
    c = torch.full((2, 1, 3, 3), 0.7)

    def v(x, t):
        return (x - c) / t.view(-1, 1, 1, 1).clamp_min(1e-6)

    x1 = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    out, nfe = flow_sample(v, x1, steps=10, sampler=sampler)
    torch.testing.assert_close(out, c, atol=2e-3, rtol=0)
    assert nfe == (19 if sampler == "heun" else 10)


def test_flow_sampler_deterministic_and_heun_beats_euler_on_a_curved_field():
    def v(x, t):
        return torch.sin(3 * x) + t.view(-1, 1)

    x1 = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    a, _ = flow_sample(v, x1, steps=8)
    b, _ = flow_sample(v, x1, steps=8)
    assert torch.equal(a, b)
    ref, _ = flow_sample(v, x1, steps=2000)
    e8, _ = flow_sample(v, x1, steps=8)
    h8, _ = flow_sample(v, x1, steps=8, sampler="heun")
    assert (h8 - ref).abs().max() < (e8 - ref).abs().max() / 3


def test_guidance_scale_one_is_the_conditional_output():
    calls = []

    def fn(x, t, cond):
        calls.append(x.shape[0])
        return x * cond.view(-1, 1)

    x, t = torch.randn(3, 2), torch.rand(3)
    cond, null = torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3)
    assert torch.equal(guided(fn, x, t, cond, null, 1.0), fn(x, t, cond))
    assert calls == [3, 3]
    g = guided(fn, x, t, cond, null, 4.0)
    torch.testing.assert_close(g, cfg_combine(x * cond.view(-1, 1), x * 0, 4.0))
    assert calls[-1] == 6  # one doubled batch
    d = guided(lambda x, t, c: x + c["a"], x, t, {"a": torch.ones(3, 1)}, {"a": torch.zeros(3, 1)}, 2.0)
    torch.testing.assert_close(d, x + 2)


def test_guidance_with_contrast_branches():
    """``contrasts``: more branches of the same batch; each (c', s) adds s · (cond − c'), also at scale 1
    (then no null branch), and a contrast of scale 0 runs no branch."""
    calls = []

    def fn(x, t, cond):
        calls.append(x.shape[0])
        return x * cond.view(-1, 1)

    x, t = torch.randn(3, 2), torch.rand(3)
    cond, null = torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3)
    mirror, off = torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0.5, 0.5, 0.5])
    c, u, m, o = (x * v.view(-1, 1) for v in (cond, null, mirror, off))
    torch.testing.assert_close(guided(fn, x, t, cond, null, 4.0, contrasts=[(mirror, 2.0)]),
                               cfg_combine(c, u, 4.0) + 2.0 * (c - m))
    assert calls[-1] == 9  # one tripled batch
    torch.testing.assert_close(guided(fn, x, t, cond, null, 1.0, contrasts=[(mirror, 2.0)]), c + 2.0 * (c - m))
    assert calls[-1] == 6
    torch.testing.assert_close(guided(fn, x, t, cond, null, 4.0, contrasts=[(mirror, 2.0), (off, 3.0)]),
                               cfg_combine(c, u, 4.0) + 2.0 * (c - m) + 3.0 * (c - o))
    assert calls[-1] == 12
    torch.testing.assert_close(guided(fn, x, t, cond, null, 4.0, contrasts=[(mirror, 0.0), (off, 3.0)]),
                               cfg_combine(c, u, 4.0) + 3.0 * (c - o))
    assert calls[-1] == 9  # the zero-scale branch is not run
    assert torch.equal(guided(fn, x, t, cond, null, 4.0, contrasts=[(mirror, 0.0)]), guided(fn, x, t, cond, null, 4.0))


def test_guidance_rescale_matches_the_conditional_spread():
    """``cfg_rescale``: phi 0 is the identity; phi 1 gives each item the conditional output's standard
    deviation and keeps the guided direction (a positive multiple); phi in between mixes linearly."""
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(3, 2, 4, 4, generator=g)
    out = cond * 9.0 + torch.randn(3, 2, 4, 4, generator=g)
    assert torch.equal(cfg_rescale(out, cond, 0.0), out)
    full = cfg_rescale(out, cond, 1.0)
    torch.testing.assert_close(full.flatten(1).std(1), cond.flatten(1).std(1))
    ratio = full / out
    torch.testing.assert_close(ratio, ratio.flatten(1)[:, :1].view(3, 1, 1, 1).expand_as(ratio))
    assert (ratio > 0).all() and (ratio < 1).all()
    torch.testing.assert_close(cfg_rescale(out, cond, 0.7), 0.7 * full + 0.3 * out)
    # through ``guided``: the rescaled combination of the branches
    x, t = torch.randn(3, 8, generator=g), torch.rand(3)
    c = torch.tensor([1.0, 2.0, 3.0])

    def fn(x, t, cond):
        return x * cond.view(-1, 1) + cond.view(-1, 1)

    combined = cfg_combine(fn(x, t, c), fn(x, t, c * 0), 6.0)
    torch.testing.assert_close(guided(fn, x, t, c, c * 0, 6.0, rescale=0.5),
                               cfg_rescale(combined, fn(x, t, c), 0.5))
    assert torch.equal(guided(fn, x, t, c, c * 0, 1.0, rescale=0.5), fn(x, t, c))  # scale 1: nothing to rescale


def test_apg_projects_the_guidance_term_in_the_denoised_space():
    """``apg_combine``: eta 1 without a cut is plain guidance; eta 0 leaves a guidance term orthogonal to
    the conditional denoised estimate; a cut bounds its norm; items with no noise left (b = 0) take plain
    guidance; through ``guided`` with ``to_x0``."""
    g = torch.Generator().manual_seed(0)
    x, cond, unc = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(3))
    a = torch.tensor([0.9, 1.0, 0.5]).view(3, 1, 1, 1)
    b = torch.tensor([-0.4, -0.7, -1.2]).view(3, 1, 1, 1)
    plain = cfg_combine(cond, unc, 5.0)
    torch.testing.assert_close(apg_combine(cond, unc, 5.0, x, a, b, 1.0), plain)
    d_cond = a * x + b * cond
    for eta in (0.0, 0.5):
        term = (a * x + b * apg_combine(cond, unc, 5.0, x, a, b, eta)) - d_cond  # (scale - 1)·(Δ⊥ + eta·Δ∥)
        delta = b * (cond - unc)
        par = (delta * d_cond).sum((1, 2, 3), keepdim=True) / (d_cond**2).sum((1, 2, 3), keepdim=True) * d_cond
        torch.testing.assert_close(term, 4.0 * (delta - par + eta * par), atol=1e-5, rtol=1e-5)
        if eta == 0:
            assert (term * d_cond).sum((1, 2, 3)).abs().max() < 1e-3
    cut = (a * x + b * apg_combine(cond, unc, 5.0, x, a, b, 1.0, threshold=0.5)) - d_cond
    assert torch.all(cut.flatten(1).norm(dim=1) <= 4.0 * 0.5 + 1e-4)
    b0 = b.clone()
    b0[1] = 0.0
    torch.testing.assert_close(apg_combine(cond, unc, 5.0, x, a, b0, 0.0)[1], plain[1])

    def fn(xx, tt, c):
        return xx * c.view(-1, 1, 1, 1) + c.view(-1, 1, 1, 1)

    c = torch.tensor([1.0, 2.0, 3.0])
    t = torch.rand(3)
    want = apg_combine(fn(x, t, c), fn(x, t, c * 0), 6.0, x, a, b, 0.0, 2.0)
    torch.testing.assert_close(guided(fn, x, t, c, c * 0, 6.0, apg=(0.0, 2.0), to_x0=(a, b)), want)
    assert torch.equal(guided(fn, x, t, c, c * 0, 1.0, apg=(0.0, 2.0)), fn(x, t, c))  # scale 1: one branch
    with pytest.raises(ValueError, match="to_x0"):
        guided(fn, x, t, c, c * 0, 6.0, apg=(0.0, 0.0))
    assert parse_apg(None) is None and parse_apg("") is None
    assert parse_apg("0") == (0.0, 0.0) and parse_apg(" 0.2, 15 ") == (0.2, 15.0)
    assert parse_apg("off") == parse_apg("None") == (1.0, 0.0)  # plain guidance, overriding a model default
    for bad in ("x", "1,2,3", "-1", "0,-2", "nan"):
        with pytest.raises(ValueError, match="APG"):
            parse_apg(bad)


def test_guidance_interval_parsing_and_membership():
    assert parse_interval(None) is None and parse_interval(" ") is None
    assert parse_interval("0.1, 0.8") == (0.1, 0.8)
    for bad in ("0.8,0.1", "0.1", "a,b", "0,1.5", "0.1,0.2,0.3"):
        with pytest.raises(ValueError, match="guidance interval"):
            parse_interval(bad)
    assert in_interval(0.99, None) and in_interval(0.8, (0.1, 0.8)) and in_interval(0.1, (0.1, 0.8))
    assert in_interval(0.0, (0.0, 1.0)) and not in_interval(0.05, (0.1, 0.8))
    assert not in_interval(0.9, (0.1, 0.8))


@pytest.mark.parametrize("sampler,steps", [("ddim", 50), ("pndm", 50), ("ddpm", 250)])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_monai_samplers_recover_a_point_mass(sampler, steps, prediction):
    """With the exact prediction for data = one point c, MONAI's samplers (wrapped) recover c."""
    cfg = DiffusionScheduleConfig(beta_schedule="scaled_linear", prediction_type=prediction)
    sched = make_scheduler(cfg, "ddpm")
    ab = sched.alphas_cumprod
    c = torch.full((2, 1, 2, 2), 0.5)

    def model(x, t):
        a = ab[t].view(-1, 1, 1, 1).sqrt()
        s = (1 - ab[t]).view(-1, 1, 1, 1).sqrt()
        eps = (x - a * c) / s
        return eps if prediction == "epsilon" else a * eps - s * c

    g = torch.Generator().manual_seed(0)
    out, nfe = diffusion_sample(model, cfg, torch.randn(2, 1, 2, 2, generator=g), steps=steps, sampler=sampler,
                                generator=torch.Generator().manual_seed(1))
    assert nfe == steps
    torch.testing.assert_close(out, c, atol=0.05, rtol=0)


def test_diffusion_targets_and_bad_sampler():
    cfg = DiffusionScheduleConfig(beta_schedule="cosine", prediction_type="v_prediction")
    sched = make_scheduler(cfg, "ddim")
    x0, n = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t = torch.tensor([10, 900])
    v = diffusion_target(sched, x0, n, t, "v_prediction")
    assert v.shape == x0.shape and not torch.equal(v, n)
    assert torch.equal(diffusion_target(sched, x0, n, t, "epsilon"), n)
    with pytest.raises(ValueError, match="unknown diffusion sampler"):
        make_scheduler(cfg, "euler")


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_equal_the_clipped_x0_weight(prediction):
    """Min-SNR-gamma: in every target space the weighted error equals min(SNR, γ)·|x0_hat − x0|²,
    i.e. the clipped x0-space weight; without gamma every weight is 1."""
    cfg = DiffusionScheduleConfig(prediction_type=prediction)
    sched = make_scheduler(cfg)
    t = torch.tensor([0, 50, 300, 700, 999])
    assert torch.equal(snr_loss_weights(sched, t, prediction, None), torch.ones(5))
    w = snr_loss_weights(sched, t, prediction, 5.0)
    ac = sched.alphas_cumprod[t].float()
    snr = ac / (1 - ac)
    # error e in x0 space: eps error = e·sqrt(SNR), v error = e / sigma = e·sqrt(SNR + 1)
    scale = {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones(5)}[prediction]
    torch.testing.assert_close(w * scale, snr.clamp(max=5.0), rtol=1e-4, atol=1e-6)
    assert bool((w > 0).all())
