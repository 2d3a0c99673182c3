"""The ``unified`` task end to end on a tiny phantom cache: the three staged recipes chained with
``train.init_from`` (weights and components carried over, understanding side frozen and unchanged,
resolution changed between stages), report-cleaning counts, a clear error on shape mismatch, then
``unicxr generate --model`` and ``unicxr report --model`` on the final model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from unicxr.cli import main
from unicxr.labels import FINDINGS
from unicxr.models import load_model, resolve_model_dir

TINY_ARCH = [
    "model.dim=32", "model.depth=2", "model.heads=2", "model.patch=4", "model.max_len=64", "model.repa_hidden=16",
    "model.encoder.init_features=8", "model.encoder.growth_rate=4", "model.encoder.block_config=[2,2]",
    "model.encoder.bn_size=2",
]  # fmt: skip
TINY_RUN = [
    "data.max_tokens=64", "data.tokenizer_vocab=300", "data.eval_reports=2",
    "data.media_n=1", "data.media_steps=2", "data.val_items=8", "train.max_steps=2", "train.batch_size=8",
    "train.warmup_steps=1", "train.ckpt_every=2", "train.tensorboard=false", "train.num_threads=1",
]  # fmt: skip
TINY = TINY_ARCH + TINY_RUN


def _train(recipe: str, out: Path, cache: Path, extra: list[str], arch: bool = True) -> None:
    args = ["train", recipe, "--out", str(out), "--no-progress", "--set", f"data.cache={cache}"]
    for o in [*(TINY if arch else TINY_RUN), *extra]:
        args += ["--set", o]
    assert main(args) == 0


@pytest.fixture(scope="module")
def stages(tiny_phantom_cache, tmp_path_factory):
    """Stage 1 sets the tiny architecture; stages 2 and 3 set none and take it from train.init_from."""
    root = tmp_path_factory.mktemp("uni")
    cache = tiny_phantom_cache
    _train("unified_phantom_und", root / "s1", cache, ["model.autoencoder=null"])
    _train("unified_phantom_gen", root / "s2", cache, [f"train.init_from={root / 's1'}", "model.image_size=16"],
           arch=False)
    _train("unified_phantom_ft", root / "s3", cache, [f"train.init_from={root / 's2'}"], arch=False)
    return root


def _und_state(model) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v for i, m in enumerate(model.und_modules()) for k, v in m.state_dict().items()}


def test_stage_chaining(stages):
    # each stage starts from the previous stage's evaluated weights: its EMA (stages 1 and 2 keep one)
    assert all((stages / s / "model_ema").is_dir() for s in ("s1", "s2", "s3"))
    s1, s2, s3 = (load_model(resolve_model_dir(stages / s)) for s in ("s1", "s2", "s3"))
    info = json.loads((stages / "s2" / "init_from.json").read_text())
    assert info["source"] == str(stages / "s1" / "model_ema" / "model.safetensors")
    # stage 1 learned text only: its log has a text loss and no flow loss
    log1 = [json.loads(x) for x in (stages / "s1" / "log.jsonl").read_text().splitlines()]
    assert "text_loss" in log1[-1] and "flow_loss" not in log1[-1]
    log2 = [json.loads(x) for x in (stages / "s2" / "log.jsonl").read_text().splitlines()]
    assert "flow_loss" in log2[-1] and "repa_loss" in log2[-1] and "text_loss" not in log2[-1]
    # weights loaded: the (frozen) understanding side of stages 2 and 3 is stage 1's, bit for bit
    u1 = _und_state(s1)
    for later in (s2, s3):
        u = _und_state(later)
        assert u.keys() == u1.keys() and all(torch.equal(u[k], v) for k, v in u1.items())
    # the generation side trained on: stage 2 differs from stage 1, stage 3 from stage 2
    g = "layers.0.gen.ada.1.weight"
    assert not s1.state_dict()[g].any()  # stage 1 left the (zero-initialised) generation side alone
    assert not torch.equal(s1.state_dict()[g], s2.state_dict()[g])
    assert not torch.equal(s2.state_dict()[g], s3.state_dict()[g])
    assert info["loaded"] > 0 and info["missing"] == [] and info["unexpected"] == []
    # components come from the init model; the resolution changes between stages
    assert s2.tokenizer.vocab_size == s1.tokenizer.vocab_size == s3.tokenizer.vocab_size
    assert (s1.config.image_size, s2.config.image_size, s3.config.image_size) == (32, 16, 32)
    assert s2.latent_shape == (1, 16, 16) and s3.latent_shape == (1, 32, 32)
    assert s2.config.freeze_und and not s1.config.freeze_und
    # the architecture the later recipes leave out is stage 1's, not the recipes' defaults
    for later in (s2, s3):
        assert (later.config.dim, later.config.depth, later.config.patch, later.config.max_len) == (32, 2, 4, 64)
        assert later.config.encoder == s1.config.encoder and later.config.repa_hidden == 16
    # report cleaning counts are logged with the validation metrics
    ev = [json.loads(x) for x in (stages / "s1" / "eval.jsonl").read_text().splitlines()][-1]
    assert {"clean_train_cleaned", "clean_train_dropped", "clean_train_truncated"} <= set(ev)
    assert "ce_micro_f1_14" in ev and "val_text_loss" in ev
    # the aux finding head: trained in stage 1 (BCE logged), evaluated, thresholds chosen on validation
    # and saved; the frozen later stages keep stage 1's thresholds
    assert "aux_loss" in log1[-1] and "aux_loss" not in log2[-1]
    assert {"aux_macro_auroc", "val_aux_loss"} <= set(ev)
    thr = json.loads((stages / "s1" / "model" / "config.json").read_text())["config"]["thresholds"]
    assert len(thr) == 14 and all(0.0 <= x <= 1.0 for x in thr)
    assert s1.config.thresholds == s2.config.thresholds == s3.config.thresholds == tuple(thr)
    assert s1.config.label_input == "hard" and s1.label_emb is not None


def test_init_from_shape_mismatch_is_one_clear_error(stages, tiny_phantom_cache, tmp_path, capsys):
    args = ["train", "unified_phantom_gen", "--out", str(tmp_path / "bad"), "--no-progress",
            "--set", f"data.cache={tiny_phantom_cache}", "--set", f"train.init_from={stages / 's1'}"]
    for o in [*TINY, "model.dim=48"]:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.init_from" in err[0] and "shapes differ" in err[0]


def test_low_resolution_phase_is_refused_with_one_line(tiny_phantom_cache, tmp_path, capsys):
    args = ["train", "unified_phantom_und", "--out", str(tmp_path / "x"), "--no-progress",
            "--set", f"data.cache={tiny_phantom_cache}", "--set", "data.lowres_size=16", "--set", "data.lowres_steps=1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.lowres_size" in err[0] and "between stages" in err[0]


def test_init_from_applies_only_to_a_fresh_start(stages, tiny_phantom_cache, tmp_path, capsys):
    import shutil

    run = tmp_path / "s2"
    shutil.copytree(stages / "s2", run)
    (run / "init_from.json").unlink()
    capsys.readouterr()
    args = ["train", "unified_phantom_gen", "--out", str(run), "--no-progress", "--set", f"data.cache={tiny_phantom_cache}",
            "--set", f"train.init_from={stages / 's1'}", "--set", "model.image_size=16"]
    for o in [*TINY, "train.max_steps=3"]:
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "tensors; missing" not in out and not (run / "init_from.json").exists()


def test_generate_and_report_from_the_unified_model(stages, tiny_phantom_cache, tmp_path, capsys):
    run = stages / "s3"
    out = tmp_path / "g"
    assert main(["generate", "--model", str(run), "--findings", "Cardiomegaly, left Pleural Effusion", "--n", "2",
                 "--steps", "2", "--seed", "3", "--out", str(out), "--no-progress"]) == 0
    meta = pd.read_csv(out / "metadata.csv", dtype=str, keep_default_na=False)
    assert len(meta) == 2 and meta["Cardiomegaly"].tolist() == ["1", "1"] and meta["seed"].tolist() == ["3", "4"]
    from PIL import Image

    im = Image.open(out / meta["image_path"][0])
    assert im.size == (32, 32) and im.text["synthetic"] == "true"
    rep = tmp_path / "r.csv"
    assert main(["report", "--model", str(run), "--cache", str(tiny_phantom_cache), "--split", "test",
                 "--max-items", "3", "--max-tokens", "16", "--out", str(rep)]) == 0
    df = pd.read_csv(rep, dtype=str, keep_default_na=False)
    assert len(df) == 3 and set(FINDINGS) <= set(df.columns) and list(df.columns[:3]) == ["path", "study_id", "report"]
    assert {f"p_{f}" for f in FINDINGS} <= set(df.columns)  # the aux head's probabilities
    capsys.readouterr()


def test_flow_stage_reads_the_latents_encoded_once(tiny_phantom_cache, tmp_path):
    """With an autoencoder the flow/REPA stage encodes the training split once into RUN/latents, and its
    training items carry those latents beside the images (equal to encoding the item's image), so the
    autoencoder's encoder does not run at every step; an understanding-only stage encodes nothing."""
    from unicxr.data.latent_cache import LatentCache
    from unicxr.models.autoencoder import AutoencoderConfig, build_autoencoder
    from unicxr.train.config import load_recipe
    from unicxr.train.tasks import get_task

    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(kind="kl", image_size=32, channels=[8, 8, 8], latent_channels=2,
                                        norm_num_groups=4, scale_factor=0.5)).save_pretrained(tmp_path / "ae")
    run = tmp_path / "gen"
    sets = [*TINY, f"data.cache={tiny_phantom_cache}", f"model.autoencoder={tmp_path / 'ae'}", "model.image_size=32",
            "train.init_from=null", "model.repa_layer=1"]
    _train("unified_phantom_gen", run, tiny_phantom_cache, sets[len(TINY):])
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert log and all(r["flow_loss"] == r["flow_loss"] for r in log)
    lc = LatentCache(run / "latents" / "train_32px", split="train")
    loaded = load_recipe("unified_phantom_gen", sets)
    task = get_task(loaded.recipe.task)(loaded.model_cfg, loaded.data_cfg)
    task.run_dir, task.progress = run, False
    model = task.build_model()
    train, _ = task.build_datasets(0)
    for j in (0, len(train) - 1):
        item = train[j]
        assert item["image"].shape == (1, 32, 32) and item["latent"].shape == (2, 8, 8)
        torch.testing.assert_close(item["latent"], lc.latent(task_index := train.keep[j]))
        with torch.no_grad():
            torch.testing.assert_close(item["latent"], model.to_latent(item["image"][None])[0], rtol=1e-4, atol=1e-5)
        assert task_index == item["index"]
    _train("unified_phantom_und", tmp_path / "und", tiny_phantom_cache, [f"model.autoencoder={tmp_path / 'ae'}"])
    assert not (tmp_path / "und" / "latents").exists()


def test_report_cleaning_counts():
    from unicxr.text.tokenizer import train_tokenizer
    from unicxr.train.tasks.unified import clean_reports

    raw = ["FINDINGS: Heart size ___ normal.  IMPRESSION: No acute process.", "", "INDICATION: cough.",
           "FINDINGS: Clear lungs. IMPRESSION: Normal."]
    tok = train_tokenizer([r for r in raw if r] * 10, vocab_size=300)
    texts, keep, counts = clean_reports(raw, tok, max_tokens=8)
    assert keep == [0, 3] and counts["dropped"] == 2 and counts["items"] == 4
    assert "___" not in texts[0] and counts["cleaned"] >= 1 and counts["truncated"] == 2
