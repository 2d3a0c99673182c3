"""Autoencoder task and recipes: losses, delayed discriminator, scale factor in config.json,
perceptual term from an evaluation encoder, and bit-identical SIGKILL-resume with the discriminator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import assert_same_optimizer_states, run_cli
from unicxr.train.checkpoint import list_checkpoints

TINY = ["model.channels=[8,16,16]", "model.norm_num_groups=8", "model.num_embeddings=32", "data.disc_channels=8",
        "train.batch_size=4", "train.log_every=1", "train.eval_every=0", "train.tensorboard=false",
        "data.spectral_weight=0.1", "data.val_items=8", "data.scale_batches=2", "data.media_n=2"]


def _args(recipe: str, run: Path, cache: Path, extra: list[str] = ()) -> list[str]:
    args = ["train", recipe, "--out", str(run), "--no-progress", "--set", f"data.cache={cache}"]
    for s in [*TINY, *extra]:
        args += ["--set", s]
    return args


STEM = ["model.patch_size=2", "model.channels=[8,16]", "model.norm=none"]  # folded 2x2 input, no GroupNorm: f = 4


@pytest.mark.parametrize("recipe,codebooks,stem", [("ae_kl_phantom", 0, False), ("vq_phantom", 1, False),
                                                   ("vq_phantom", 2, False), ("ae_kl_phantom", 0, True)])
def test_recipe_trains_with_delayed_discriminator(recipe, codebooks, stem, tiny_phantom_cache, tmp_path):
    from unicxr.cli import main
    from unicxr.models import load_model

    run = tmp_path / "run"
    extra = ([f"model.num_quantizers={codebooks}"] if codebooks else []) + (STEM if stem else [])
    assert main(_args(recipe, run, tiny_phantom_cache, ["train.max_steps=12", "train.ckpt_every=12",
                                                         "train.lr=1e-3", "train.warmup_steps=0",
                                                         "data.disc_start_frac=0.5", *extra])) == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    # disc_start_frac 0.5 of max_steps: no discriminator before step 6, both losses after
    assert all("loss_disc" not in r and "adv" not in r for r in log if r["step"] <= 6)
    assert all("loss_disc" in r and "adv" in r for r in log if r["step"] > 6)
    # learning: the reconstruction error falls below its start (VQ, whose codebook moves by EMA,
    # falls slower than KL in 12 tiny steps, so compare the best late step with the first)
    assert min(r["l1"] for r in log[-4:]) < log[0]["l1"]
    assert ("kl" in log[0]) == (recipe == "ae_kl_phantom") and ("vq" in log[0]) == (recipe == "vq_phantom")
    # a VQ run logs each codebook's perplexity (codes in use); a residual book is in use too
    ppl = [k for k in log[-1] if k.startswith("code_ppl_")]
    assert sorted(ppl) == [f"code_ppl_{k + 1}" for k in range(codebooks)]
    assert all(log[-1][k] > 1.5 for k in ppl)
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["config"]["image_size"] == 32  # from the cache
    assert cfg["config"]["scale_factor"] > 0
    ae = load_model(run / "model")
    assert ae.latent_shape() == (4, 8, 8)
    assert (ae.config.patch_size, ae.config.norm) == ((2, "none") if stem else (1, "group"))
    # the discriminator is checkpointed, not saved with the model
    assert (run / "checkpoints" / "step_000012" / "disc.safetensors").is_file()
    assert not any("disc" in k for k in load_file(str(run / "model" / "model.safetensors")))
    assert (run / "media" / "step_000012" / "reconstructions.png").is_file()


def test_perceptual_term_from_evaluation_encoder(tiny_phantom_cache, tmp_path):
    from unicxr.cli import main
    from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig

    torch.manual_seed(0)
    enc = CXRClassifier(CXRClassifierConfig(image_size=32, resnet_widths=[4, 8, 8, 16]))
    enc.save_pretrained(tmp_path / "enc")
    run = tmp_path / "run"
    assert main(_args("ae_kl_phantom", run, tiny_phantom_cache, [
        "train.max_steps=2", "train.ckpt_every=2", f"data.perceptual.features=own:{tmp_path / 'enc'}",
        "data.perceptual.weight=0.5"])) == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["perceptual"] > 0 for r in log)
    # a training-only loss network: not a component of the saved autoencoder
    assert not (run / "model" / "components.json").exists()
    assert not any(k.startswith("trunk") for k in load_file(str(run / "model" / "model.safetensors")))


@pytest.mark.parametrize("arch", ["resnet", "densenet"])
def test_finding_consistency_term(arch):
    """FeaturePerceptualLoss(findings=True): the binary KL of the network's probabilities, by hand;
    zero on identical images; the feature distance is the same with or without it; gradient flows."""
    from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig
    from unicxr.train.tasks.autoencoder import FeaturePerceptualLoss

    torch.manual_seed(0)
    net = CXRClassifier(CXRClassifierConfig(arch=arch, image_size=32, resnet_widths=[4, 8, 8, 16], init_features=8,
                                            growth_rate=4, block_config=(2, 2), bn_size=2)).eval()
    x = torch.rand(3, 1, 32, 32)
    r = (x + 0.2 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    with_f, without = FeaturePerceptualLoss(net, findings=True), FeaturePerceptualLoss(net)
    feat, kl = with_f(r, x)
    feat0, none = without(r, x)
    assert none is None
    torch.testing.assert_close(feat, feat0)
    with torch.no_grad():
        p, q = torch.sigmoid(net(x)), torch.sigmoid(net(r))
    by_hand = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()
    torch.testing.assert_close(kl, by_hand, rtol=1e-4, atol=1e-6)
    assert kl > 0
    kl.backward()
    assert r.grad is not None and r.grad.abs().sum() > 0
    assert float(with_f(x, x)[1]) == pytest.approx(0.0, abs=1e-6)
    # the logit distance: the mean squared logit difference, by hand
    _, sq = FeaturePerceptualLoss(net, findings=True, distance="logit")(r, x)
    with torch.no_grad():
        torch.testing.assert_close(sq, (net(r) - net(x)).pow(2).mean())
    with pytest.raises(ValueError, match="'kl' or 'logit'"):
        FeaturePerceptualLoss(net, findings=True, distance="l2")


def test_finding_term_alone_in_a_run(tiny_phantom_cache, tmp_path):
    """data.perceptual.finding_weight with the feature weight at 0: the run logs `finding` and adds
    exactly the weighted term to the loss (same seed and first batch as a run without it)."""
    from unicxr.cli import main
    from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig

    torch.manual_seed(0)
    CXRClassifier(CXRClassifierConfig(image_size=32, resnet_widths=[4, 8, 8, 16])).save_pretrained(tmp_path / "enc")
    first = {}
    for w in (0.0, 2.0):
        run = tmp_path / f"run{w}"
        assert main(_args("ae_kl_phantom", run, tiny_phantom_cache, [
            "train.max_steps=1", "train.ckpt_every=1", f"data.perceptual.features=own:{tmp_path / 'enc'}",
            "data.perceptual.weight=0", f"data.perceptual.finding_weight={w}", "data.perceptual.finding_distance=logit"])) == 0
        first[w] = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert "finding" not in first[0.0] and first[2.0]["finding"] > 0
    assert first[2.0]["loss"] == pytest.approx(first[0.0]["loss"] + 2.0 * first[2.0]["finding"], rel=1e-5)


@pytest.mark.parametrize("term", ["ssim", "ms_ssim"])
def test_structural_similarity_terms(term, tiny_phantom_cache, tmp_path):
    """data.ssim_weight (MONAI's SSIMLoss) and data.ms_ssim_weight (1 - the MS-SSIM `eval recon`
    scores) add their term to the loss: logged, in (0, 1], and exactly part of the total."""
    from unicxr.cli import main

    runs = {}
    for w in (0.0, 0.5):
        run = tmp_path / f"run{w}"
        assert main(_args("ae_kl_phantom", run, tiny_phantom_cache, [
            "train.max_steps=1", "train.ckpt_every=1", "data.ssim_weight=0", "data.ms_ssim_weight=0",
            f"data.{term}_weight={w}"])) == 0
        runs[w] = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()][0]
    key = f"{term}_loss"
    assert key not in runs[0.0] and 0 < runs[0.5][key] <= 1
    # same seed, same first batch and weights: the totals differ by exactly the weighted term
    assert runs[0.5]["l1"] == runs[0.0]["l1"]
    assert runs[0.5]["loss"] == pytest.approx(runs[0.0]["loss"] + 0.5 * runs[0.5][key], rel=1e-5)


def test_random_crops_seeded_per_image_and_in_place():
    """Each image gets its own seeded offset; the crop is a true window of that image."""
    from unicxr.train.tasks.autoencoder import random_crops
    from unicxr.utils.errors import UnicxrError

    x = torch.arange(3 * 16 * 16, dtype=torch.float32).view(3, 1, 16, 16)
    a = random_crops(x, 8, torch.Generator().manual_seed(5))
    b = random_crops(x, 8, torch.Generator().manual_seed(5))
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    offsets = []
    for i in range(3):
        r0, c0 = divmod(int(a[i, 0, 0, 0]) - i * 256, 16)
        assert torch.equal(a[i, 0], x[i, 0, r0 : r0 + 8, c0 : c0 + 8])
        offsets.append((r0, c0))
    assert len(set(offsets)) > 1  # not one offset for the whole batch
    assert random_crops(x, 16, torch.Generator()) is x
    with pytest.raises(UnicxrError, match="crop_size 32"):
        random_crops(x, 32, torch.Generator())


def test_paste_crops_puts_each_crop_back_differentiably():
    from unicxr.train.tasks.autoencoder import crop_at, paste_crops, random_crop_offsets, random_crops

    x = torch.rand(3, 1, 16, 16)
    offs = random_crop_offsets(x, 8, torch.Generator().manual_seed(1))
    crops = crop_at(x, 8, offs)
    assert torch.equal(crops, random_crops(x, 8, torch.Generator().manual_seed(1)))  # the same draws
    assert torch.equal(paste_crops(x, crops, torch.tensor(offs)), x)  # its own crops: the image itself
    c = torch.zeros_like(crops, requires_grad=True)
    out = paste_crops(x, c, torch.tensor(offs))
    for i, (r0, c0) in enumerate(offs):
        inside = torch.zeros(16, 16, dtype=torch.bool)
        inside[r0:r0 + 8, c0:c0 + 8] = True
        assert torch.all(out[i, 0][inside] == 0) and torch.equal(out[i, 0][~inside], x[i, 0][~inside])
    out.sum().backward()
    assert torch.equal(c.grad, torch.ones_like(c))
    assert random_crop_offsets(x, 16, torch.Generator()) is None


def test_finding_term_with_crops_reads_whole_images(tiny_phantom_cache, tmp_path):
    """With data.crop_size the finding term classifies the whole image with the reconstructed crop put
    back, so it is small (most of the image is the original) but present; the crop itself trains the model."""
    from unicxr.cli import main
    from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig

    torch.manual_seed(0)
    CXRClassifier(CXRClassifierConfig(image_size=32, resnet_widths=[4, 8, 8, 16])).save_pretrained(tmp_path / "enc")
    run = tmp_path / "run"
    assert main(_args("ae_kl_phantom", run, tiny_phantom_cache, [
        "train.max_steps=2", "train.ckpt_every=2", "data.crop_size=16", f"data.perceptual.features=own:{tmp_path / 'enc'}",
        "data.perceptual.weight=0.5", "data.perceptual.finding_weight=1"])) == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["finding"] > 0 and r["perceptual"] > 0 for r in log)


def test_crop_training_keeps_full_size_model_and_validation(tiny_phantom_cache, tmp_path):
    """data.crop_size trains on crops; the saved model, its scale factor and validation use whole images."""
    from unicxr.cli import main
    from unicxr.models import load_model

    run = tmp_path / "run"
    assert main(_args("ae_kl_phantom", run, tiny_phantom_cache, [
        "train.max_steps=4", "train.ckpt_every=4", "train.eval_every=4", "data.crop_size=16",
        "data.disc_start_frac=0.5"])) == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log) and "loss_disc" in log[-1]
    ae = load_model(run / "model")
    assert ae.config.image_size == 32 and ae.config.scale_factor > 0
    assert ae.reconstruct(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    ev = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert ev and ev[-1]["val_psnr"] > 0

@pytest.mark.slow
@pytest.mark.parametrize("recipe,finding", [("ae_kl_phantom", False), ("vq_phantom", False), ("ae_kl_phantom", True)])
def test_sigkill_resume_with_discriminator_bit_identical(recipe, finding, tiny_phantom_cache, tmp_path):
    extra = ["train.max_steps=24", "train.ckpt_every=4", "train.keep_last=10", "data.disc_start=6",
             "train.grad_accum=2"]
    if finding:  # the loss network is built lazily after the resume; crops carry the whole image along
        from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig

        torch.manual_seed(0)
        CXRClassifier(CXRClassifierConfig(image_size=32, resnet_widths=[4, 8, 8, 16])).save_pretrained(tmp_path / "enc")
        extra += [f"data.perceptual.features=own:{tmp_path / 'enc'}", "data.perceptual.weight=0.5",
                  "data.perceptual.finding_weight=2", "data.crop_size=16"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    run_cli(*_args(recipe, ref, tiny_phantom_cache, extra), check=True)
    args = _args(recipe, run, tiny_phantom_cache, extra)
    proc = subprocess.Popen([sys.executable, "-m", "unicxr.cli", *args], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints" / "step_000012").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model").exists(), "run finished before it could be killed"
    assert 8 <= max(s for s, _ in list_checkpoints(run)) < 24  # killed with the discriminator active
    out = run_cli(*args, check=True)
    assert "resuming from" in out.stdout + out.stderr
    for name in ("model.safetensors", "disc.safetensors"):
        a = load_file(str(run / "checkpoints" / "step_000024" / name))
        b = load_file(str(ref / "checkpoints" / "step_000024" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a = load_file(str(run / "model" / "model.safetensors"))
    b = load_file(str(ref / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "model" / "config.json").read_text()) == json.loads((ref / "model" / "config.json").read_text())
    assert_same_optimizer_states(run / "checkpoints" / "step_000024" / "optimizer.pt",
                                 ref / "checkpoints" / "step_000024" / "optimizer.pt", ("main", "disc"))  # fmt: skip


def test_spectral_loss_matches_monai_and_has_a_finite_gradient_on_a_flat_image():
    """The spectral term equals MONAI's JukeboxLoss on ordinary images; on a flat reconstruction (FFT
    amplitudes exactly 0 but for DC) MONAI's gradient is nan and ours is finite."""
    from monai.losses import JukeboxLoss

    from unicxr.train.tasks.autoencoder import SpectralLoss

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    torch.testing.assert_close(SpectralLoss(spatial_dims=2)(a, b), JukeboxLoss(spatial_dims=2)(a, b))
    flat = torch.full((1, 1, 32, 32), 0.5, requires_grad=True)
    JukeboxLoss(spatial_dims=2)(flat, b[:1]).backward()
    assert torch.isnan(flat.grad).any()  # the failure this class exists for
    flat.grad = None
    SpectralLoss(spatial_dims=2)(flat, b[:1]).backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0
