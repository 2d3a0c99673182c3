"""Tiny-config tests of every generator family: shapes, finite loss that decreases, guidance 1 equals
the conditional output, sampler determinism, save/load equality, swapping samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unicxr.labels import FINDINGS
from unicxr.models import load_model
from unicxr.models.conditioning import (
    ConditionConfig,
    parse_findings_prompt,
    tokenize_reports,
    trim_token_ids,
)
from unicxr.models.crossflow import CrossFlow, CrossFlowConfig
from unicxr.models.latent_dit import LatentDiT, LatentDiTConfig
from unicxr.models.ldm_unet import LDMUNet, LDMUNetConfig
from unicxr.text.tokenizer import train_tokenizer

REPORTS = [
    "FINDINGS: The heart is enlarged. Small left pleural effusion. IMPRESSION: Cardiomegaly.",
    "FINDINGS: Lungs are clear. No pneumothorax. IMPRESSION: No acute process.",
    "FINDINGS: Right pneumothorax. Endotracheal tube in place. IMPRESSION: Pneumothorax.",
    "FINDINGS: Mild pulmonary edema with bilateral effusions. IMPRESSION: Edema.",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(REPORTS * 10, vocab_size=300)


def _labels(b):
    lab = np.full((b, 14), np.nan, np.float32)
    lab[:, FINDINGS.index("Cardiomegaly")] = [1, 0, np.nan, -1][:b] if b <= 4 else 1
    return lab


def _cond(tok, kind="both"):
    return ConditionConfig(kind=kind, dim=16, text_layers=1, text_heads=2, max_tokens=16, max_chunks=2,
                           vocab_size=tok.vocab_size, cond_drop=0.2)


def _perturb(model):
    """Zero-initialised output layers (MONAI UNet, adaLN-Zero) make an untrained model output 0;
    small random weights make the sampling tests meaningful."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _make(family, tok, kind="both", sincos=False):
    common = dict(image_size=16, latent_channels=1, latent_size=16, condition=_cond(tok, kind))
    if sincos and family != "ldm_unet":
        common["positions"] = "sincos"
    comps = {"tokenizer": tok} if kind != "findings" else None
    torch.manual_seed(0)
    if family == "ldm_unet":
        cfg = LDMUNetConfig(**common, channels=(8, 16), attention_levels=(False, True), num_head_channels=8,
                            norm_num_groups=4, schedule={"num_train_timesteps": 100})
        return _perturb(LDMUNet(cfg, components=comps))
    if family == "latent_dit":
        return _perturb(LatentDiT(LatentDiTConfig(**common, patch=4, dim=32, depth=2, heads=2), components=comps))
    return _perturb(CrossFlow(CrossFlowConfig(**common, patch=4, dim=32, depth=2, heads=2, ve_depth=1, nce_dim=16),
                              components=comps))


FAMILIES = ["ldm_unet", "latent_dit", "crossflow"]
SAMPLERS = {"ldm_unet": ("ddim", 10), "latent_dit": ("heun", 4), "crossflow": ("euler", 4)}


def test_tokenize_long_reports_in_windows(tok):
    long = " ".join(REPORTS * 3)
    ids, overflow = tokenize_reports(tok, [long, "No effusion."], max_tokens=16, max_chunks=2)
    assert ids.shape == (2, 2, 16) and overflow == 1
    assert (ids[0, 1] != tok.pad_id).sum() > 2  # the second window carries the continuation
    assert ids[1, 0, 0] == tok.bos_id


def test_padding_shared_by_the_batch_is_trimmed_only_where_attention_masks_it(tok):
    ids, _ = tokenize_reports(tok, ["No effusion.", "Clear lungs."], max_tokens=16, max_chunks=2)
    short = trim_token_ids(ids, tok.pad_id)
    longest = int((ids != tok.pad_id).sum(-1).max())
    assert short.shape == (2, 1, longest)  # the empty second window and the shared padding go
    assert torch.equal(short, ids[:, :1, :longest])
    full = torch.full((1, 2, 4), 5)
    assert trim_token_ids(full, tok.pad_id) is full
    lab = _labels(2)
    reports = ["No effusion.", "Clear lungs."]
    for family, n_text in (("latent_dit", longest), ("crossflow", longest), ("ldm_unet", 2 * 16)):
        model = _make(family, tok)
        tokens, mask, _ = model.encode_condition(model.condition_batch(lab, reports), None)
        assert tokens.shape[1] == 14 + n_text and mask.shape[1] == 14 + n_text, family
        # the MONAI UNet cannot mask keys: its zeroed padding keeps the full width


def test_text_resampler_gives_the_unet_a_fixed_width_condition_free_of_padding(tok):
    """With ``condition.text_queries`` the LDM-UNet's report tokens are N learned queries that read the
    report through masked attention: no padding reaches MONAI's unmasked cross-attention, the width
    does not follow the batch, and an item's condition does not depend on the rest of its batch."""
    cond = _cond(tok).model_copy(update={"text_queries": 4})
    torch.manual_seed(0)
    cfg = LDMUNetConfig(image_size=16, latent_channels=1, latent_size=16, condition=cond, channels=(8, 16),
                        attention_levels=(False, True), num_head_channels=8, norm_num_groups=4,
                        schedule={"num_train_timesteps": 100})
    model = _perturb(LDMUNet(cfg, components={"tokenizer": tok})).eval()
    assert model.trims_padding
    lab = _labels(2)
    alone = model.encode_condition(model.condition_batch(lab[:1], REPORTS[:1]), None)
    pair = model.encode_condition(model.condition_batch(lab, [REPORTS[0], " ".join(REPORTS * 2)]), None)
    assert alone[0].shape == (1, 14 + 4, 16) and pair[0].shape == (2, 14 + 4, 16)
    assert bool(pair[1].all())
    torch.testing.assert_close(pair[0][:1], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pair[2][:1], alone[2], atol=1e-5, rtol=1e-5)
    # a dropped (null) report is the null token at every query, and the report no longer matters
    drop = torch.tensor([True, True])
    nulls = model.encode_condition(model.condition_batch(lab, REPORTS[:2]), drop)[0]
    torch.testing.assert_close(nulls[0], nulls[1])
    # findings only (no report at all): the null report, as wide as a resampled one
    bare = model.encode_condition(model.condition_batch(lab, None), None)[0]
    assert bare.shape == (2, 14 + 4, 16)
    torch.testing.assert_close(bare[:, 14:], nulls[:, 14:])


def test_findings_pooled_vector_moves_at_full_strength_and_has_a_null(tok):
    """``condition.pooled: findings``: the pooled vector is a linear map of the one-hot finding states
    (+ the mean report token): flipping one finding moves it by exactly one weight column (which the
    optimiser moves at full rate, not through a token averaged with N others); a dropped item gets the
    learned null vector whatever its findings."""
    from unicxr.models.conditioning import ConditionEncoder

    torch.manual_seed(0)
    for kind in ("findings", "both"):
        enc = ConditionEncoder(_cond(tok, kind).model_copy(update={"pooled": "findings"}), tok.pad_id).eval()
        mean_enc = ConditionEncoder(_cond(tok, kind), tok.pad_id).eval()
        lab = np.full((2, 14), np.nan, np.float32)
        lab[0, FINDINGS.index("Cardiomegaly")] = 1
        lab[1, FINDINGS.index("Cardiomegaly")] = 0
        cond = {"labels": torch.from_numpy(lab)}
        if kind == "both":
            cond["input_ids"] = tokenize_reports(tok, [REPORTS[0]] * 2, 16, 2)[0]
        _, _, pooled = enc(cond)
        j = FINDINGS.index("Cardiomegaly") * 4
        col = enc.findings_vec.weight[:, j + 1] - enc.findings_vec.weight[:, j]  # present - absent
        torch.testing.assert_close(pooled[0] - pooled[1], col, atol=1e-5, rtol=1e-5)
        _, _, mean_pooled = mean_enc(cond)
        assert not hasattr(mean_enc, "findings_vec") and mean_pooled.shape == pooled.shape
        _, _, dropped = enc(cond, torch.tensor([True, True]))
        torch.testing.assert_close(dropped[0], dropped[1])
        torch.testing.assert_close(dropped[0], enc.null_pooled[0])
    # laterality and severity reach it too
    lat = torch.zeros(2, 14, dtype=torch.long)
    lat[1, FINDINGS.index("Pleural Effusion")] = 1
    sev = torch.full((2, 14), float("nan"))
    sev[0, 0] = 0.5
    onehot = enc._findings_onehot({"labels": torch.from_numpy(lab), "laterality": lat, "severity": sev}, 2, "cpu")
    assert onehot.shape == (2, 14 * (4 + 4 + 2)) and not torch.equal(onehot[0], onehot[1])


def test_ldm_unet_global_condition_reaches_every_resblock(tok):
    """The pooled condition enters the UNet through MONAI's class-embedding slot (added to the timestep
    embedding); zero-initialised, it starts neutral, and once trained it changes the output."""
    base = _make("ldm_unet", tok)
    assert base.unet.num_class_embeds is None  # off by default: models saved before it load unchanged
    torch.manual_seed(0)
    model = _perturb(LDMUNet(base.config.model_copy(update={"global_condition": True}),
                             components={"tokenizer": tok})).eval()
    assert isinstance(model.unet.class_embedding, torch.nn.Linear)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 50])
    tokens, mask, pooled = model.encode_condition(model.condition_batch(_labels(2), REPORTS[:2]), None)
    with torch.no_grad():
        a = model.net(x, t, tokens, mask, pooled)
        b = model.net(x, t, tokens, mask, pooled + 1.0)
    assert not torch.allclose(a, b)
    fresh = LDMUNet(model.config, components={"tokenizer": tok})
    assert not fresh.unet.class_embedding.weight.detach().any()


def test_ldm_unet_position_map_tells_left_from_right_and_starts_neutral(tok, tmp_path):
    """``position_channels``: a fixed sin/cos code of the latent grid enters the UNet input through a
    zero-initialised 1x1 convolution. The code differs between mirrored columns (the side of a finding
    has something to attach to), a half-size grid gets the codes of the same places, a model gaining it
    from an older run's weights (train.init_from) starts with that run's outputs, and it round-trips."""
    from unicxr.train.init_from import load_init_weights

    base = _make("ldm_unet", tok).eval()
    model = LDMUNet(base.config.model_copy(update={"position_channels": 8}), components={"tokenizer": tok}).eval()
    pos = model.position_map(16, 16)
    assert pos.shape == (1, 8, 16, 16)
    assert torch.equal(pos[:, :4], pos[:, :4, :, :1].expand(-1, -1, -1, 16))  # rows: constant along a row
    assert not torch.allclose(pos[:, 4:], pos[:, 4:].flip(-1), atol=1e-3)  # columns: left != mirrored right
    half = model.position_map(8, 8)  # cell i of 8 sits between cells 2i and 2i+1 of 16
    assert torch.all((half[0, 7, 0, :] - pos[0, 7, 0, ::2]).abs() <= (pos[0, 7, 0, 1::2] - pos[0, 7, 0, ::2]).abs() + 1e-6)
    base.save_pretrained(tmp_path / "old")
    report = load_init_weights(model, tmp_path / "old")
    assert sorted(report["missing"]) == ["position_proj.bias", "position_proj.weight"]
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 50])
    tokens, mask, pooled = base.encode_condition(base.condition_batch(_labels(2), REPORTS[:2]), None)
    with torch.no_grad():
        assert torch.equal(model.net(x, t, tokens, mask, pooled), base.net(x, t, tokens, mask, pooled))
        model.position_proj.weight.normal_(0, 0.5)
        moved = model.net(x, t, tokens, mask, pooled)
        assert not torch.allclose(moved, base.net(x, t, tokens, mask, pooled))
        assert torch.isfinite(model.net(x[..., :8, :8], t, tokens, mask, pooled)).all()  # low-res phase grid
    model.save_pretrained(tmp_path / "new")
    back = load_model(tmp_path / "new").eval()
    with torch.no_grad():
        assert torch.equal(back.net(x, t, tokens, mask, pooled), moved)
    with pytest.raises(ValueError, match="multiple of 4"):
        LDMUNetConfig(**base.config.model_dump(exclude={"position_channels"}), position_channels=6)


def _side_map_trains_samples_and_round_trips(model, cond, lab, reports, tmp_path, side_grad) -> None:
    """A side-map model: the side weights (``side_grad(model)``) get gradient from the loss; guided and
    side-guided sampling gives finite images; save/load gives the same images."""
    model.train()
    loss, _ = model(torch.randn(3, 1, 16, 16), cond)
    loss.backward()
    assert side_grad(model).abs().sum() > 0
    model.eval()
    img, _ = model.generate(lab, reports, steps=3, guidance=3.0, seed=2, side_guidance=2.0)
    assert img.shape == (3, 1, 16, 16) and torch.isfinite(img).all()
    model.save_pretrained(tmp_path / "m")
    back = load_model(tmp_path / "m").eval()
    img2, _ = back.generate(lab, reports, steps=3, guidance=3.0, seed=2, side_guidance=2.0)
    assert torch.equal(img, img2)


def test_ldm_unet_side_map_puts_each_finding_on_its_half(tok, tmp_path):
    """``side_map``: two input planes per finding, the patient's right over the image's left half and the
    left over its right half; present 1, uncertain 0.5, absent/unsided/dropped 0. The side reaches the
    output, the mirrored prompt gets the mirrored planes, the loss trains, sampling with guidance and side
    guidance runs (the sides batch with the tokens) and the model round-trips."""
    base = _make("ldm_unet", tok)
    torch.manual_seed(0)
    ccfg = base.config.condition.model_copy(update={"report_laterality": True})  # sides read from the reports
    model = _perturb(LDMUNet(base.config.model_copy(update={"side_map": True, "condition": ccfg}),
                             components={"tokenizer": tok})).eval()
    assert model.unet.conv_in.conv.in_channels == 1 + 28
    eff, ptx = FINDINGS.index("Pleural Effusion"), FINDINGS.index("Pneumothorax")
    lab = np.full((3, 14), np.nan, np.float32)
    lab[:, eff] = [1, -1, 0]
    lab[0, ptx] = 1
    reports = ["Small left pleural effusion. Right pneumothorax.", "Possible bilateral effusions.",
               "No left effusion."]
    cond = model.condition_batch(lab, reports)
    sides = model.finding_sides(cond, None)
    assert sides.shape == (3, 2, 14)
    assert sides[0, 1, eff] == 1 and sides[0, 0, eff] == 0  # left effusion: patient's left row only
    assert sides[0, 0, ptx] == 1 and sides[0, 1, ptx] == 0
    assert torch.equal(sides[1, :, eff], torch.tensor([0.5, 0.5]))  # uncertain, bilateral
    assert not sides[2].any()  # absent: nothing
    dev = FINDINGS.index("Support Devices")
    lab_dev = lab.copy()
    lab_dev[:, dev] = [1, -1, 0]
    cond_dev = model.condition_batch(lab_dev, reports)
    assert not model.finding_sides(cond_dev, None)[:, :, dev].any()  # no side: no plane by default
    both = model.finding_sides(cond_dev, None, unsided=True)  # side_map_unsided: no side = both halves
    assert torch.equal(both[:, :, dev], torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.0, 0.0]]))
    assert torch.equal(both[:, :, [eff, ptx]], model.finding_sides(cond_dev, None)[:, :, [eff, ptx]])  # sided: same
    assert not model.finding_sides(cond_dev, torch.tensor([True, True, True]), unsided=True).any()
    no_lat = {"labels": cond_dev["labels"]}  # a findings-only condition (a negative prompt): all unsided
    assert not model.finding_sides(no_lat, None).any()
    assert torch.equal(model.finding_sides(no_lat, None, unsided=True)[:, :, dev], both[:, :, dev])
    assert not model.finding_sides(cond, torch.tensor([True, False, False]))[0].any()  # the null condition
    planes = model.side_planes(sides, 4, 6)
    assert planes.shape == (3, 28, 4, 6)
    assert planes[0, 14 + eff, :, 3:].eq(1).all() and not planes[0, 14 + eff, :, :3].any()  # left → image right
    assert planes[0, ptx, :, :3].eq(1).all() and not planes[0, ptx, :, 3:].any()  # right → image left
    mirrored = model.finding_sides(model.condition_batch(lab, reports, mirrored=True), None)
    assert torch.equal(mirrored, sides.flip(1))
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([10, 50, 90])
    enc = model.encode_condition(cond, None)
    assert len(enc) == 4
    with torch.no_grad():
        a = model.net(x, t, *enc)
        b = model.net(x, t, *enc[:3], enc[3].flip(1))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[2], b[2])  # the third item has no side
    _side_map_trains_samples_and_round_trips(model, cond, lab, reports, tmp_path,
                                             lambda m: m.unet.conv_in.conv.weight.grad[:, 1:])
    with pytest.raises(ValueError, match="side_map needs findings"):
        LDMUNet(base.config.model_copy(update={"side_map": True, "condition": _cond(tok, "text")}),
                components={"tokenizer": tok})
    with pytest.raises(ValueError, match="side_map_unsided needs side_map"):
        LDMUNet(base.config.model_copy(update={"side_map_unsided": True}), components={"tokenizer": tok})
    unsided = LDMUNet(base.config.model_copy(update={"side_map": True, "side_map_unsided": True, "condition": ccfg}),
                      components={"tokenizer": tok}).eval()
    assert torch.equal(unsided.encode_condition(cond_dev, None)[3], both)  # the config reaches the network


def test_latent_dit_side_map_embeds_each_finding_side_per_patch(tok, tmp_path):
    """The latent DiT takes the same side map as the LDM-UNet (shared :meth:`finding_sides`), through a
    zero-initialised per-patch embedding: at init the output is the map-free model's; trained (perturbed),
    the side changes the output only for items that have one, the embedding gets gradient, guided and
    side-guided sampling runs and the model round-trips bit-equal."""
    base = _make("latent_dit", tok)
    ccfg = base.config.condition.model_copy(update={"report_laterality": True})
    cfg = base.config.model_copy(update={"side_map": True, "side_map_unsided": True, "condition": ccfg})
    torch.manual_seed(0)
    fresh = LatentDiT(cfg, components={"tokenizer": tok}).eval()
    torch.manual_seed(0)
    plain = LatentDiT(base.config.model_copy(update={"condition": ccfg}), components={"tokenizer": tok}).eval()
    plain.load_state_dict({k: v for k, v in fresh.state_dict().items() if not k.startswith("side_embed")})
    eff, dev = FINDINGS.index("Pleural Effusion"), FINDINGS.index("Support Devices")
    lab = np.full((3, 14), np.nan, np.float32)
    lab[:, eff] = [1, 1, 0]
    lab[1, dev] = 1
    reports = ["Left pleural effusion.", "Right pleural effusion. Support devices.", "No effusion."]
    cond = fresh.condition_batch(lab, reports)
    enc = fresh.encode_condition(cond, None)
    assert len(enc) == 4 and enc[3][1, :, dev].eq(1).all()  # unsided devices: both halves
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        assert torch.equal(fresh.net(x, t, *enc), plain.net(x, t, *enc[:3]))  # zero-initialised embedding
    model = _perturb(fresh)
    with torch.no_grad():
        a = model.net(x, t, *enc)
        b = model.net(x, t, *enc[:3], enc[3].flip(1))
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[2], b[2])  # the third item has no side
    with pytest.raises(ValueError, match="needs the condition's sides"):
        model.net(x, t, *enc[:3])
    _side_map_trains_samples_and_round_trips(model, cond, lab, reports, tmp_path, lambda m: m.side_embed.weight.grad)


def test_weights_that_do_not_fit_the_config_are_a_one_line_error(tok, tmp_path):
    """A model saved without the global condition, its config edited to ask for it: the load names
    the missing tensors instead of failing inside the message."""
    import json

    from unicxr.utils.errors import UnicxrError

    model = _make("ldm_unet", tok)
    model.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["global_condition"] = True
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UnicxrError, match="missing 2 tensors"):
        load_model(tmp_path / "m")


def test_parse_findings_prompt():
    lab, lat = parse_findings_prompt("Cardiomegaly, left Pleural Effusion, no Pneumothorax, possible Edema")
    assert lab[FINDINGS.index("Cardiomegaly")] == 1 and lab[FINDINGS.index("Pneumothorax")] == 0
    assert lab[FINDINGS.index("Edema")] == -1 and lat[FINDINGS.index("Pleural Effusion")] == 1
    assert np.isnan(lab[FINDINGS.index("Fracture")])
    from unicxr.utils.errors import UnicxrError

    with pytest.raises(UnicxrError, match="unknown finding"):
        parse_findings_prompt("Cardiomegally")


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_finite_and_decreases(family, tok):
    model = _make(family, tok)
    x = torch.rand(4, 1, 16, 16)
    z0 = model.to_latent(x)
    assert z0.shape == (4, *model.latent_shape)
    cond = model.condition_batch(_labels(4), REPORTS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(25):
        torch.manual_seed(step % 3)  # a few fixed noise draws, so the loss can only fall by learning
        loss, logs = model(z0, cond)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.parametrize("family", FAMILIES)
def test_low_resolution_phase_at_half_size_then_full_size_sampling(family, tok):
    """A low-res training phase: the model takes latents at half the side (gradients reach every
    trained weight of the velocity/denoising net) and still draws full-size images."""
    model = _make(family, tok, sincos=True)
    x = torch.rand(4, 1, 16, 16)
    z_lo = model.to_latent(x, size=8)
    assert z_lo.shape == (4, 1, 8, 8)
    from unicxr.utils.tensor_image import resize_square

    assert torch.equal(z_lo, resize_square(x, 8) * 2 - 1)  # pixel space: the downsampled image
    cond = model.condition_batch(_labels(4), REPORTS)
    torch.manual_seed(0)
    loss, _ = model(z_lo, cond)
    assert torch.isfinite(loss)
    loss.backward()
    net = model.unet if family == "ldm_unet" else model.blocks
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    if family == "latent_dit":
        assert model.shift_for(z_lo[0].numel()) <= model.shift
    images, _ = model.eval().generate(_labels(2), REPORTS[:2], steps=2, seed=0)
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_guidance_one_is_conditional_and_sampling_is_deterministic(family, tok):
    model = _make(family, tok).eval()
    sampler, steps = SAMPLERS[family]
    lab = _labels(2)
    a, nfe = model.generate(lab, REPORTS[:2], steps=steps, sampler=sampler, guidance=3.0, seed=7)
    b, _ = model.generate(lab, REPORTS[:2], steps=steps, sampler=sampler, guidance=3.0, seed=7)
    c, _ = model.generate(lab, REPORTS[:2], steps=steps, sampler=sampler, guidance=3.0, seed=8)
    assert a.shape == (2, 1, 16, 16) and torch.isfinite(a).all() and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert nfe == (2 * steps - 1 if sampler == "heun" else steps)
    # per-item seeds: an item's image does not depend on its batch neighbours
    solo, _ = model.generate(lab[1:], REPORTS[1:2], steps=steps, sampler=sampler, guidance=3.0, seed=[8])
    torch.testing.assert_close(solo[0], a[1], atol=1e-5, rtol=0)
    # guidance scale 1 equals the conditional output (one branch only)
    cond = model.condition_batch(lab, REPORTS[:2])
    x = torch.randn(2, *model.latent_shape)
    t = torch.tensor([0.5, 0.25]) if family != "ldm_unet" else torch.tensor([50, 20])
    if family == "crossflow":
        on = torch.ones(2, dtype=torch.long)
        from unicxr.sampling import guided

        assert torch.equal(guided(lambda xx, tt, ii: model.net(xx, tt, ii), x, t, on, on * 0, 1.0), model.net(x, t, on))
    else:
        fn = model.guided_fn(model.net, cond, None, 1.0)
        assert torch.equal(fn(x, t), model.net(x, t, *model.encode_condition(cond, None)))
        g = model.guided_fn(model.net, cond, None, 2.0)(x, t)
        assert not torch.equal(g, fn(x, t))


def test_crossflow_refuses_contrast_guidance(tok):
    """CrossFlow's text is the flow's source, not a guidance branch: side and finding guidance are refused
    in one line."""
    model = _make("crossflow", tok).eval()
    sampler, steps = SAMPLERS["crossflow"]
    for kw in ({"side_guidance": 2.0}, {"finding_guidance": 2.0}, {"guidance_rescale": 0.7},
               {"guidance_interval": (0.1, 0.8)}):
        with pytest.raises(ValueError, match="no guidance branches"):
            model.generate(_labels(2), REPORTS[:2], steps=steps, sampler=sampler, **kw)


@pytest.mark.parametrize("family", ["ldm_unet", "latent_dit"])
def test_side_guidance_contrasts_the_prompt_with_its_mirror(family, tok):
    """``side_guidance`` adds s · (cond − mirrored cond): a prompt without a side mirrors to itself and
    samples as plain guidance; a sided one moves; the mirror swaps the laterality codes too."""
    model = _make(family, tok).eval()
    sampler, steps = SAMPLERS[family]
    lab = _labels(2)
    unsided = [REPORTS[1], REPORTS[1]]  # "Lungs are clear. No pneumothorax."
    plain, nfe = model.generate(lab, unsided, steps=steps, sampler=sampler, guidance=3.0, seed=1)
    side, nfe2 = model.generate(lab, unsided, steps=steps, sampler=sampler, guidance=3.0, seed=1, side_guidance=4.0)
    torch.testing.assert_close(side, plain, atol=1e-5, rtol=0)
    assert nfe2 == nfe
    sided = [REPORTS[0], REPORTS[2]]  # left effusion; right pneumothorax
    plain, _ = model.generate(lab, sided, steps=steps, sampler=sampler, guidance=3.0, seed=1)
    side, _ = model.generate(lab, sided, steps=steps, sampler=sampler, guidance=3.0, seed=1, side_guidance=4.0)
    assert (side - plain).abs().max() > 1e-3
    lat = np.zeros((2, 14), np.int64)
    lat[0, FINDINGS.index("Pleural Effusion")] = 1  # left
    lat[1, FINDINGS.index("Pneumothorax")] = 3  # bilateral stays
    mir = model.condition_batch(lab, ["Left effusion.", "Bilateral pneumothorax."], lat, mirrored=True)
    assert mir["laterality"][0, FINDINGS.index("Pleural Effusion")] == 2 and mir["laterality"][1, FINDINGS.index("Pneumothorax")] == 3
    assert torch.equal(mir["input_ids"], model.condition_batch(lab, ["Right effusion.", "Bilateral pneumothorax."])["input_ids"])


@pytest.mark.parametrize("family", ["ldm_unet", "latent_dit"])
def test_finding_guidance_and_negative_findings(family, tok):
    """``finding_guidance`` adds s · (cond − the cond with its present/uncertain findings set absent): a
    prompt with no present finding contrasts with itself and samples as plain guidance; one with findings
    moves, and equals guidance whose contrast branch is given by hand. ``negative_labels`` replaces the
    null branch."""
    from unicxr.models.generator_base import findings_off

    model = _make(family, tok).eval()
    sampler, steps = SAMPLERS[family]
    lab = _labels(2)
    off = findings_off(lab)
    assert not ((off == 1) | (off == -1)).any() and np.array_equal(np.isnan(off), np.isnan(lab))
    kw = dict(steps=steps, sampler=sampler, guidance=3.0, seed=1)
    plain, nfe = model.generate(off, REPORTS[:2], **kw)
    fg, nfe2 = model.generate(off, REPORTS[:2], finding_guidance=4.0, **kw)
    torch.testing.assert_close(fg, plain, atol=1e-5, rtol=0)  # nothing to switch off
    assert nfe2 == nfe
    assert ((lab == 1) | (lab == -1)).any()
    plain, _ = model.generate(lab, REPORTS[:2], **kw)
    fg, _ = model.generate(lab, REPORTS[:2], finding_guidance=4.0, **kw)
    assert (fg - plain).abs().max() > 1e-3
    cond = model.condition_batch(lab, REPORTS[:2])
    by_hand, _ = model.sample_latents(cond, steps=steps, sampler=sampler, guidance=3.0,
                                      generator=torch.Generator().manual_seed(1), seeds=[1, 2],
                                      contrasts=[(model.condition_batch(off, REPORTS[:2]), 4.0)])
    torch.testing.assert_close(model.from_latent(by_hand), fg)
    neg, _ = model.generate(lab, REPORTS[:2], negative_labels=off, **kw)
    assert (neg - plain).abs().max() > 1e-3  # the other branch is the negative, not the null condition


@pytest.mark.parametrize("family", ["ldm_unet", "latent_dit"])
def test_guidance_rescale_and_interval(family, tok):
    """``guidance_rescale`` changes a guided sample (not one at scale 1) and is seeded like the rest; a
    guidance interval covering every step ("0,1") equals plain guidance, and a partial one runs the null
    branch only on its steps (counted in ``network_passes``) and changes the sample."""
    model = _make(family, tok).eval()
    sampler, steps = SAMPLERS[family]
    kw = dict(steps=steps, sampler=sampler, seed=1)
    lab = _labels(2)
    plain, nfe = model.generate(lab, REPORTS[:2], guidance=4.0, **kw)
    assert model.network_passes == 2 * nfe
    resc, _ = model.generate(lab, REPORTS[:2], guidance=4.0, guidance_rescale=0.7, **kw)
    assert (resc - plain).abs().max() > 1e-4 and torch.isfinite(resc).all()
    assert torch.equal(resc, model.generate(lab, REPORTS[:2], guidance=4.0, guidance_rescale=0.7, **kw)[0])
    one, _ = model.generate(lab, REPORTS[:2], guidance=1.0, **kw)
    assert torch.equal(model.generate(lab, REPORTS[:2], guidance=1.0, guidance_rescale=0.7, **kw)[0], one)
    full, _ = model.generate(lab, REPORTS[:2], guidance=4.0, guidance_interval=(0.0, 1.0), **kw)
    torch.testing.assert_close(full, plain)
    assert model.network_passes == 2 * nfe
    part, nfe3 = model.generate(lab, REPORTS[:2], guidance=4.0, guidance_interval=(0.0, 0.5), **kw)
    assert nfe3 == nfe and nfe < model.network_passes < 2 * nfe
    assert (part - plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match="rescale"):
        model.generate(lab, REPORTS[:2], guidance=4.0, guidance_rescale=1.5, **kw)


@pytest.mark.parametrize("family", ["ldm_unet", "latent_dit"])
def test_apg_in_the_denoised_space(family, tok):
    """The family's ``x0_coefficients`` recover x0 from a noised latent and the training target; APG with
    eta 1 and no cut matches plain guidance, eta 0 changes the sample at the same passes, same seed same
    output; CrossFlow refuses it."""
    model = _make(family, tok).eval()
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(2, *model.latent_shape, generator=g), torch.randn(2, *model.latent_shape, generator=g)
    if family == "ldm_unet":
        from unicxr.sampling.diffusion import diffusion_target

        t = torch.tensor([3, model.config.schedule.num_train_timesteps * 7 // 10])
        model.scheduler.alphas_cumprod = model.scheduler.alphas_cumprod.to(x0.device)
        xt = model.scheduler.add_noise(x0, noise, t)
        target = diffusion_target(model.scheduler, x0, noise, t, model.config.schedule.prediction_type)
    else:
        from unicxr.sampling import flow_interpolate, flow_target

        t = torch.tensor([0.1, 0.8])
        xt, target = flow_interpolate(x0, noise, t), flow_target(x0, noise)
    a, b = model.x0_coefficients(t)
    torch.testing.assert_close(a * xt + b * target, x0, atol=1e-4, rtol=1e-4)
    sampler, steps = SAMPLERS[family]
    kw = dict(steps=steps, sampler=sampler, seed=1)
    lab = _labels(2)
    plain, nfe = model.generate(lab, REPORTS[:2], guidance=4.0, **kw)
    torch.testing.assert_close(model.generate(lab, REPORTS[:2], guidance=4.0, guidance_apg=(1.0, 0.0), **kw)[0],
                               plain, atol=1e-4, rtol=1e-4)
    apg, _ = model.generate(lab, REPORTS[:2], guidance=4.0, guidance_apg=(0.0, 0.0), **kw)
    assert model.network_passes == 2 * nfe and (apg - plain).abs().max() > 1e-4 and torch.isfinite(apg).all()
    assert torch.equal(apg, model.generate(lab, REPORTS[:2], guidance=4.0, guidance_apg=(0.0, 0.0), **kw)[0])
    cross = _make("crossflow", tok).eval()
    with pytest.raises(ValueError, match="APG"):
        cross.generate(lab, REPORTS[:2], guidance=4.0, guidance_apg=(0.0, 0.0), **{**kw, "sampler": "euler"})
    # a model's default_apg applies when the call gives none; APG_OFF overrides it with plain guidance
    from unicxr.sampling import APG_OFF

    model.config.default_apg = (0.0, 0.0)
    assert torch.equal(model.generate(lab, REPORTS[:2], guidance=4.0, **kw)[0], apg)
    torch.testing.assert_close(model.generate(lab, REPORTS[:2], guidance=4.0, guidance_apg=APG_OFF, **kw)[0], plain,
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="default_apg"):
        type(cross)(cross.config.model_copy(update={"default_apg": (0.0, 1.0)}), {"tokenizer": tok})
    with pytest.raises(ValueError, match="default_apg"):
        type(model.config).model_validate({**model.config.model_dump(), "default_apg": [0.0, -1.0]})


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_equality(family, tok, tmp_path):
    model = _make(family, tok).eval()
    model.save_pretrained(tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert type(back) is type(model)
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    sampler, steps = SAMPLERS[family]
    a, _ = model.generate(_labels(2), REPORTS[:2], steps=steps, sampler=sampler, seed=3)
    b, _ = back.generate(_labels(2), REPORTS[:2], steps=steps, sampler=sampler, seed=3)
    assert torch.equal(a, b)


def test_ldm_unet_swaps_samplers_and_findings_only(tok):
    model = _make("ldm_unet", tok, kind="findings").eval()
    outs = {s: model.generate(_labels(1), None, steps=5, sampler=s, seed=1)[0] for s in ("ddim", "pndm", "ddpm")}
    assert all(o.shape == (1, 1, 16, 16) for o in outs.values())
    with pytest.raises(ValueError, match="samples with"):
        model.generate(_labels(1), None, steps=5, sampler="euler")


def test_negative_findings_change_the_guided_branch(tok):
    model = _make("latent_dit", tok, kind="findings").eval()
    neg = np.full((1, 14), np.nan, np.float32)
    neg[0, FINDINGS.index("Pneumothorax")] = 1
    a, _ = model.generate(_labels(1), None, steps=3, guidance=3.0, seed=0)
    b, _ = model.generate(_labels(1), None, steps=3, guidance=3.0, seed=0, negative_labels=neg)
    assert not torch.equal(a, b)


def test_ldm_unet_min_snr_weighting(tok):
    """schedule.snr_gamma weights each sample's squared error; the logged 'mse' stays unweighted, so
    `eval conditioning` compares the same quantity either way."""
    base = _make("ldm_unet", tok, kind="findings")
    cfg = base.config.model_copy(update={"schedule": base.config.schedule.model_copy(update={"snr_gamma": 5.0})})
    torch.manual_seed(0)
    model = _perturb(LDMUNet(cfg)).eval()
    z0 = torch.randn(3, 1, 16, 16)
    cond = model.condition_batch(_labels(3), None)
    with model.forced_drop(False):
        torch.manual_seed(1)
        loss, logs = model(z0, cond)
        torch.manual_seed(1)
        _, plain = base(z0, cond)
    assert set(logs) == {"mse", "weighted"} and "weighted" not in plain
    assert torch.isfinite(loss) and logs["weighted"] == pytest.approx(float(loss.detach()))
    assert logs["weighted"] != pytest.approx(logs["mse"])


def test_report_laterality_fills_the_sides_a_condition_lacks(tok):
    """condition.report_laterality reads each finding's side from the report (patient's side, as
    written), keeps a side the caller gives, and changes the condition (so the model can learn it)."""
    from unicxr.models.conditioning import LATERALITY, report_laterality

    eff, ptx = FINDINGS.index("Pleural Effusion"), FINDINGS.index("Pneumothorax")
    lat = report_laterality(REPORTS)
    assert lat.shape == (4, 14) and lat.dtype == np.int64
    assert LATERALITY[lat[0, eff]] == "left" and LATERALITY[lat[2, ptx]] == "right"
    assert LATERALITY[lat[3, eff]] == "bilateral" and lat[1].sum() == 0  # "No pneumothorax" says no side
    given = np.zeros((4, 14), np.int64)
    given[0, eff] = LATERALITY.index("right")
    assert report_laterality(REPORTS, given)[0, eff] == LATERALITY.index("right")
    model = _make("latent_dit", tok)
    assert "laterality" not in model.condition_batch(_labels(4), REPORTS)  # off by default (saved models)
    model.config.condition.report_laterality = True
    cond = model.condition_batch(_labels(4), REPORTS)
    assert torch.equal(cond["laterality"], torch.from_numpy(lat))
    model.eval()
    with torch.no_grad():
        a = model.cond(cond)[2]
        b = model.cond({k: v for k, v in cond.items() if k != "laterality"})[2]
    assert not torch.allclose(a, b)


def test_report_severity_fills_the_sizes_a_condition_lacks(tok):
    """condition.report_severity reads each finding's size from the report (NaN where none is said),
    keeps a size the caller gives, and changes the condition (so the model can learn it)."""
    from unicxr.models.conditioning import report_severity

    eff = FINDINGS.index("Pleural Effusion")
    sev = report_severity(REPORTS)
    assert sev.shape == (4, 14) and sev.dtype == np.float32
    assert sev[0, eff] == pytest.approx(1 / 3)  # "Small left pleural effusion"
    assert np.isnan(sev[1]).all() and np.isnan(sev[2, FINDINGS.index("Pneumothorax")])  # no size said
    given = np.full((4, 14), np.nan, np.float32)
    given[0, eff] = 1.0
    assert report_severity(REPORTS, given)[0, eff] == 1.0
    model = _make("latent_dit", tok)
    assert "severity" not in model.condition_batch(_labels(4), REPORTS)  # off by default (saved models)
    model.config.condition.report_severity = True
    cond = model.condition_batch(_labels(4), REPORTS)
    torch.testing.assert_close(cond["severity"], torch.from_numpy(sev), equal_nan=True)
    model.eval()
    with torch.no_grad():
        a = model.cond(cond)[2]
        b = model.cond({k: v for k, v in cond.items() if k != "severity"})[2]
    assert not torch.allclose(a, b)


def test_crossflow_source_keeps_its_noise_floor(tok):
    """CrossFlow's text latent σ never drops below ``min_std`` (a source collapsed to a point lets x_t give
    the velocity exactly for t < 1, so the flow loss vanishes while every prompt samples one mean image);
    with a σ far below the floor the samples of one prompt still differ by their seed."""
    model = _make("crossflow", tok).eval()
    with torch.no_grad():  # push the variational encoder's log σ² far down, as a collapsed run had it
        model.ve_out.bias[model.ve_out.bias.shape[0] // 2:] = -40.0
    cond = model.condition_batch(_labels(2), REPORTS[:2])
    _, logvar = model.text_latent(cond)
    assert torch.allclose((0.5 * logvar).exp(), torch.full_like(logvar, model.config.min_std))
    a, _ = model.generate(_labels(2), REPORTS[:2], steps=2, sampler="euler", guidance=1.0, seed=[1, 2])
    b, _ = model.generate(_labels(2), REPORTS[:2], steps=2, sampler="euler", guidance=1.0, seed=[3, 4])
    assert (a - b).abs().mean() > 1e-3
    model.config.min_std = 0.0  # without the floor the bias keeps σ at e^-5
    _, logvar = model.text_latent(cond)
    assert (0.5 * logvar).exp().max() < 0.01


def test_crossflow_null_indicator_rows_flow_to_another_items_image(tok):
    """null_target='shuffled' (the default, as in the paper): rows trained with the null indicator flow to
    another item's image latent, so v(·, 0) is the unpaired flow; 'paired' keeps their own image. The
    contrastive term always pairs each text with its own image, and a forced drop keeps the pairs."""
    model = _make("crossflow", tok).train()
    model.config.indicator_drop = 0.9  # most rows null
    cond = model.condition_batch(_labels(4), REPORTS[:4])
    z_same = torch.randn(1, *model.latent_shape).expand(4, -1, -1, -1).contiguous()
    z_diff = torch.randn(4, *model.latent_shape)

    def loss(z0, target):
        model.config.null_target = target
        torch.manual_seed(5)
        return model(z0, cond)

    (a, la), (b, lb) = loss(z_diff, "shuffled"), loss(z_diff, "paired")
    assert not torch.allclose(a, b) and la["flow"] != lb["flow"] and la["nce"] == lb["nce"]
    # identical images: shuffling them changes nothing, so the targets are all that moves
    assert torch.equal(loss(z_same, "shuffled")[0], loss(z_same, "paired")[0])
    with model.forced_drop(True):
        assert torch.equal(loss(z_diff, "shuffled")[0], loss(z_diff, "paired")[0])


def test_crossflow_contrasts_the_text_latent_with_frozen_image_features(tok):
    """With ``nce_feature_dim`` the image side of InfoNCE is a linear map of the given (B, F) image
    features, not of the latent: the term depends on the features, its gradient reaches both heads, and
    without features (validation) it is left out."""
    common = dict(image_size=16, latent_channels=1, latent_size=16, condition=_cond(tok))
    torch.manual_seed(0)
    model = CrossFlow(CrossFlowConfig(**common, patch=4, dim=32, depth=1, heads=2, ve_depth=1, nce_dim=16,
                                      nce_feature_dim=6), components={"tokenizer": tok})
    assert model.nce_image.in_features == 6
    cond = model.condition_batch(_labels(4), REPORTS[:4])
    z0 = torch.randn(4, *model.latent_shape)
    f = torch.randn(4, 6)

    def run(feats):
        torch.manual_seed(3)
        return model(z0, cond, image_features=feats)

    (loss, logs), (_, logs2) = run(f), run(torch.randn(4, 6))
    assert "nce" in logs and logs["nce"] != logs2["nce"]
    loss.backward()
    assert model.nce_image.weight.grad.abs().sum() > 0 and model.nce_text.weight.grad.abs().sum() > 0
    _, logs3 = run(None)
    assert "nce" not in logs3 and logs3["flow"] == logs["flow"]


def test_crossflow_contrast_on_the_sampled_text_latent_sees_its_noise(tok):
    """``nce_source='sample'`` contrasts the drawn z_text (what the flow starts from), so σ enters the term
    and its gradient reaches the log σ² half of the encoder's output; on μ (default) neither happens."""
    model = _make("crossflow", tok).train()
    cond = model.condition_batch(_labels(4), REPORTS[:4])
    z0 = torch.randn(4, *model.latent_shape)
    half = model.ve_out.weight.shape[0] // 2  # rows of ve_out that give log σ²

    def loss(source, min_std, lambda_nce):
        model.config.nce_source, model.config.min_std, model.config.lambda_nce = source, min_std, lambda_nce
        torch.manual_seed(3)
        return model(z0, cond)

    for source in ("mean", "sample"):
        a, b = loss(source, 0.5, 1.0)[1]["nce"], loss(source, 3.0, 1.0)[1]["nce"]
        assert (a == b) == (source == "mean")
        model.zero_grad()
        (loss(source, 0.0, 1.0)[0] - loss(source, 0.0, 0.0)[0]).backward()  # the InfoNCE term's own gradient
        grad = model.ve_out.weight.grad[half:].abs().sum().item()
        assert (grad == 0.0) == (source == "mean")


def test_crossflow_time_shift_moves_training_and_sampling_times_toward_the_text_latent(tok):
    """``shift`` > 1 draws training times nearer t = 1 (the text latent, where the source alone must tell
    the image) and samples on the shifted grid; shift 1 with uniform times is the plain schedule."""
    from unicxr.sampling import time_grid

    model = _make("crossflow", tok)
    seen: list[torch.Tensor] = []
    net = model.net

    def spy(x, t, ind):
        seen.append(t.detach().clone())
        return net(x, t, ind)

    model.net = spy
    cond = model.condition_batch(_labels(4).repeat(64, 0), REPORTS[:4] * 64)
    z0 = torch.randn(256, *model.latent_shape)
    means = {}
    for shift in (1.0, 3.0):
        model.config.shift = shift
        seen.clear()
        torch.manual_seed(0)
        model(z0, cond)
        means[shift] = float(seen[0].mean())
    assert abs(means[1.0] - 0.5) < 0.06 and means[3.0] > 0.64  # E[3t / (1 + 2t)] = 0.676 for uniform t
    seen.clear()
    model.generate(_labels(1), REPORTS[:1], steps=4, sampler="euler", guidance=1.0, seed=0)
    torch.testing.assert_close(torch.stack([t[0] for t in seen]), time_grid(4, 3.0)[:-1])
