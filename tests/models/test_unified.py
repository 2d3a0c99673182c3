"""Tiny-config tests of the unified model (mixture of transformers): no leakage from generation tokens
into the text branch, prompt padding invisible to latents, ``freeze_und``, KV-cached sampling equals
uncached sampling, guidance 1 = conditional, save/load equality, decoding cache = teacher forcing,
losses finite and decreasing, any latent grid (sin/cos positions), label tokens (teacher-forced
findings change the text logits; NaN = the aux head's decisions; soft inputs; none without the head)."""

from __future__ import annotations

import pytest
import torch

from unicxr.models import load_model
from unicxr.models.unified import UnifiedConfig, UnifiedModel
from unicxr.sampling import flow_sample
from unicxr.text.tokenizer import train_tokenizer

REPORTS = [
    "FINDINGS: The heart is enlarged. Small left pleural effusion. IMPRESSION: Cardiomegaly.",
    "FINDINGS: Lungs are clear. No pneumothorax. IMPRESSION: No acute process.",
    "FINDINGS: Right pneumothorax. Endotracheal tube in place. IMPRESSION: Pneumothorax.",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(REPORTS * 10, vocab_size=300)


def _make(tok, perturb: bool = True, **kw) -> UnifiedModel:
    cfg = dict(image_size=32, latent_size=16, latent_channels=1, vocab_size=tok.vocab_size, dim=32, depth=2, heads=2,
               patch=4, max_len=64, repa_layer=1, repa_hidden=16,
               encoder=dict(arch="vit", patch_size=8, dim=16, depth=1, num_heads=2, class_token=False))
    cfg.update(kw)
    torch.manual_seed(0)
    model = UnifiedModel(UnifiedConfig(**cfg), components={"tokenizer": tok})
    if perturb:  # adaLN-Zero makes an untrained generation branch output 0; small noise makes tests meaningful
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _batch(model, n=3):
    cond = model.condition_batch(reports=REPORTS[:n])
    g = torch.Generator().manual_seed(2)
    images = torch.rand(n, 1, 32, 32, generator=g)
    xt = torch.randn(n, *model.latent_shape, generator=g)
    t = torch.rand(n, generator=g)
    return cond, images, xt, t


def test_understanding_logits_unchanged_by_generation_tokens(tok):
    model = _make(tok)
    cond, images, xt, t = _batch(model)
    ids, lengths = cond["input_ids"], cond["lengths"]
    with torch.no_grad():
        und, vel0, _ = model.forward_packed(images, ids)
        assert vel0 is None
        packed, vel, _ = model.forward_packed(images, ids, lengths, xt, t)
        altered, vel2, _ = model.forward_packed(images, ids, lengths, torch.randn_like(xt) * 5, 1 - t)
    torch.testing.assert_close(packed, und, atol=1e-5, rtol=0)
    torch.testing.assert_close(altered, und, atol=1e-5, rtol=0)
    assert vel is not None and not torch.allclose(vel, vel2)  # the latents do matter to the generation branch
    # the text of the generation sequence is the same text branch without image tokens
    with torch.no_grad():
        gen_text, _, _ = model.forward_packed(None, ids, lengths, xt, t)
        text_only, _, _ = model.forward_packed(None, ids)
    torch.testing.assert_close(gen_text, text_only, atol=1e-5, rtol=0)


def test_latents_see_the_prompt_but_not_its_padding(tok):
    model = _make(tok)
    cond, _, xt, t = _batch(model)
    with torch.no_grad():
        v = model.forward_packed(None, cond["input_ids"], cond["lengths"], xt, t)[1]
        # item 1 alone, without the padding its batch gave it
        one = model.condition_batch(reports=REPORTS[1:2])
        assert one["input_ids"].shape[1] < cond["input_ids"].shape[1]
        v1 = model.forward_packed(None, one["input_ids"], one["lengths"], xt[1:2], t[1:2])[1]
        other = model.condition_batch(reports=REPORTS[2:3])
        v_other = model.forward_packed(None, other["input_ids"], other["lengths"], xt[1:2], t[1:2])[1]
    torch.testing.assert_close(v1[0], v[1], atol=1e-5, rtol=0)
    assert not torch.allclose(v_other, v1)  # another prompt, another velocity


def test_freeze_und_gives_no_gradients_and_unchanged_weights(tok):
    model = _make(tok, perturb=False, freeze_und=True).train()
    und_ids = {id(p) for p in model.und_parameters()}
    assert id(model.label_emb) in und_ids and all(id(p) in und_ids for p in model.aux_head.parameters())
    before_und = {k: v.clone() for m in model.und_modules() for k, v in m.state_dict().items()}
    before_und_tensors = [p.detach().clone() for p in model.und_parameters()]
    gen = [(n, p) for n, p in model.named_parameters() if id(p) not in und_ids]
    before_gen = {n: p.detach().clone() for n, p in gen}
    assert all(not p.requires_grad for p in model.und_parameters())
    assert all(p.requires_grad for _, p in gen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    cond, images, _, _ = _batch(model)
    z0 = model.to_latent(images)
    for _ in range(3):
        opt.zero_grad()
        parts = model(images, cond["input_ids"], cond["lengths"], z0, text=True, flow=True, repa=True, aux=True)
        aux = parts.pop("aux_logits")
        (sum(parts.values()) + aux.sum()).backward()
        for p in model.und_parameters():
            assert p.grad is None or not p.grad.any()
        opt.step()
    for p, b in zip(model.und_parameters(), before_und_tensors, strict=True):
        assert torch.equal(p, b)
    after_und = {k: v for m in model.und_modules() for k, v in m.state_dict().items()}
    assert all(torch.equal(after_und[k], v) for k, v in before_und.items())  # buffers too
    changed = [n for n, p in gen if not torch.equal(p, before_gen[n])]
    assert any(n.startswith("layers.0.gen.") for n in changed) and any(n.startswith("final.") for n in changed)


@pytest.mark.parametrize("sampler,guidance", [("euler", 2.5), ("heun", 1.0)])
def test_kv_cached_sampling_equals_uncached(tok, sampler, guidance):
    model = _make(tok)
    cond = model.condition_batch(reports=REPORTS[:3])
    kw = dict(steps=4, sampler=sampler, guidance=guidance, generator=torch.Generator(), seeds=[3, 4, 5])
    a, nfe_a = model.sample_latents(cond, kv_cache=True, **kw)
    b, nfe_b = model.sample_latents(cond, kv_cache=False, **kw)
    assert nfe_a == nfe_b and a.shape == (3, *model.latent_shape)
    assert (a - b).abs().max() < 1e-5
    assert (a - model.initial_noise([3, 4, 5])).abs().max() > 1e-2  # it did move


def test_guidance_one_is_the_conditional_output_and_sampling_is_deterministic(tok):
    model = _make(tok)
    cond, _, xt, t = _batch(model, 2)
    with torch.no_grad():
        fn = model.velocity_fn(cond, 1.0)
        cond_v = model.forward_packed(None, cond["input_ids"], cond["lengths"], xt, t)[1]
        torch.testing.assert_close(fn(xt, t), cond_v, atol=1e-5, rtol=0)
        assert not torch.allclose(model.velocity_fn(cond, 3.0)(xt, t), cond_v)
        ref, _ = flow_sample(lambda x, tt: model.forward_packed(None, cond["input_ids"], cond["lengths"], x, tt)[1],
                             model.initial_noise([7, 8]), steps=3, shift=model.shift)
    a, _ = model.generate(reports=REPORTS[:2], steps=3, guidance=1.0, seed=7)
    torch.testing.assert_close(a, model.from_latent(ref), atol=1e-5, rtol=0)
    b, _ = model.generate(reports=REPORTS[:2], steps=3, guidance=3.0, seed=7)
    c, _ = model.generate(reports=REPORTS[:2], steps=3, guidance=3.0, seed=7)
    assert torch.equal(b, c) and a.shape == (2, 1, 16, 16)
    solo, _ = model.generate(reports=REPORTS[1:2], steps=3, guidance=3.0, seed=[8])  # per-item seeds
    torch.testing.assert_close(solo[0], b[1], atol=1e-5, rtol=0)


def test_save_load_equal_and_decoding_cache_matches_teacher_forcing(tok, tmp_path):
    model = _make(tok)
    cond, images, xt, t = _batch(model)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, UnifiedModel) and loaded.tokenizer.vocab_size == tok.vocab_size
    with torch.no_grad():
        for a, b in zip(model.forward_packed(images, cond["input_ids"], cond["lengths"], xt, t)[:2],
                        loaded.forward_packed(images, cond["input_ids"], cond["lengths"], xt, t)[:2], strict=True):
            assert torch.equal(a, b)
    from unicxr.sampling.decoding import DecodeConfig

    out = loaded.generate_reports(images, DecodeConfig(max_new_tokens=12))
    assert len(out["reports"]) == 3 and out["probabilities"].shape == (3, 14)
    # the incremental KV-cached decoder gives the teacher-forced logits, token by token
    ids = cond["input_ids"][:, :10]
    with torch.no_grad():
        full = loaded.forward_packed(images, ids)[0]
        prefix, _ = loaded.und_prefix(images)
        assert prefix.shape[1] == loaded.image_tokens(images)[0].shape[1] + 14  # image + label tokens
        step, cache = loaded.step_fn(), {"prefix": prefix, "layers": None, "pos": 0}
        logits, cache = step(ids[:, :3], cache)
        torch.testing.assert_close(logits, full[:, 2], atol=1e-5, rtol=0)
        for j in range(3, 10):
            logits, cache = step(ids[:, j : j + 1], cache)
            torch.testing.assert_close(logits, full[:, j], atol=1e-5, rtol=0)
    ll = loaded.sequence_log_likelihood(images, out["ids"])
    assert ll.shape == (3,) and torch.isfinite(ll).all()
    beam = loaded.generate_reports(images, DecodeConfig(method="beam", num_beams=2, max_new_tokens=8))
    assert len(beam["ids"]) == 3


def test_losses_finite_and_decrease(tok):
    model = _make(tok, perturb=False).train()
    cond, images, _, _ = _batch(model)
    z0 = model.to_latent(images)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = last = None
    for step in range(12):
        torch.manual_seed(step % 2)  # the same two noise draws alternate: a fair comparison
        parts = model(images, cond["input_ids"], cond["lengths"], z0, repa=True)
        assert set(parts) == {"text", "flow", "repa"} and all(torch.isfinite(v) for v in parts.values())
        loss = parts["text"] + parts["flow"] + 0.1 * parts["repa"]
        if step == 0:
            first = {k: float(v.detach()) for k, v in parts.items()}
        last = {k: float(v.detach()) for k, v in parts.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert last["text"] < first["text"] and last["flow"] < first["flow"]


def test_any_latent_grid_and_null_prompt(tok):
    model = _make(tok)
    cond = model.condition_batch(reports=REPORTS[:1])
    with torch.no_grad():
        for side in (8, 16, 24):  # sin/cos positions: one set of weights, any grid
            x = torch.randn(1, 1, side, side)
            v = model.forward_packed(None, cond["input_ids"], cond["lengths"], x, torch.tensor([0.5]))[1]
            assert v.shape == x.shape
    ids, lens = model.null_prompt(cond["input_ids"], cond["lengths"], torch.tensor([True]))
    assert ids[0, 0] == tok.bos_id and int(lens[0]) == 1 and (ids[0, 1:] == max(tok.pad_id, 0)).all()
    null = model.condition_batch(labels=[[0.0] * 14])
    assert null["input_ids"].tolist() == [[tok.bos_id]]


def test_label_tokens_carry_the_findings(tok):
    model = _make(tok)
    cond, images, _, _ = _batch(model)
    ids = cond["input_ids"]
    g = torch.Generator().manual_seed(5)
    labels = (torch.rand(3, 14, generator=g) < 0.5).float()
    with torch.no_grad():
        a = model.forward_packed(images, ids, labels=labels)[0]
        same = model.forward_packed(images, ids, labels=labels.clone())[0]
        flipped = model.forward_packed(images, ids, labels=1 - labels)[0]
        # NaN = the head's own decisions: equal to passing those decisions explicitly
        _, aux = model.und_prefix(images)
        own = (torch.sigmoid(aux) >= model.threshold_tensor()).float()
        nan = model.forward_packed(images, ids, labels=torch.full((3, 14), float("nan")))[0]
        explicit = model.forward_packed(images, ids, labels=own)[0]
    assert torch.equal(a, same)
    assert not torch.allclose(a, flipped, atol=1e-4)
    torch.testing.assert_close(nan, explicit, atol=1e-6, rtol=0)
    # soft inputs: the probabilities; no label tokens: image tokens only
    soft = _make(tok, label_input="soft")
    with torch.no_grad():
        p = torch.sigmoid(soft.und_prefix(images)[1])
        torch.testing.assert_close(soft.forward_packed(images, ids)[0], soft.forward_packed(images, ids, labels=p)[0],
                                   atol=1e-5, rtol=0)
    plain = _make(tok, aux_classifier=False, label_tokens=False)
    assert plain.aux_head is None and plain.label_emb is None
    assert plain.und_prefix(images)[0].shape[1] == plain.image_tokens(images)[0].shape[1]
