"""End to end: a tiny generator recipe trains on a tiny phantom cache (pixel space), then
`unicxr generate` writes PNGs + metadata.csv that `unicxr eval images` reads; same seed ⇒ same bytes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import run_cli
from unicxr.labels import FINDINGS

TINY = {
    "ldm_unet_phantom": ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.num_head_channels=8",
                         "model.norm_num_groups=4", "model.schedule.num_train_timesteps=100"],
    "rf_dit_phantom": ["model.dim=32", "model.depth=1", "model.heads=2", "model.patch=4"],
    "crossflow_phantom": ["model.dim=32", "model.depth=1", "model.heads=2", "model.patch=4", "model.ve_depth=1",
                          "model.nce_dim=16"],
}
COND = ["model.condition.dim=16", "model.condition.text_layers=1", "model.condition.text_heads=2",
        "model.condition.max_tokens=32", "model.condition.max_chunks=2"]


def _train_args(recipe: str, out, sets: list[str]) -> list:
    """`unicxr train RECIPE --out OUT --no-progress` with one --set per override."""
    return ["train", recipe, "--out", out, "--no-progress", *(a for s in sets for a in ("--set", s))]


def _tiny_encoder(cache, out, steps: int):
    """A tiny evaluation-encoder run (16 features) on the test cache."""
    sets = [f"data.cache={cache / 'c'}", "model.image_size=null", "model.resnet_widths=[4,8,8,16]",
            f"train.max_steps={steps}", "train.batch_size=8", "train.eval_every=0", "train.tensorboard=false",
            "data.eval_min_count=2"]
    run_cli("train", "eval_encoder_phantom", "--out", out, "--no-progress", *(a for s in sets for a in ("--set", s)),
            check=True)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    run_cli("phantom", "--n", "60", "--size", "32", "--seed", "3", "--out", root / "ph", "--workers", "1", check=True)
    run_cli("prepare", "--format", "phantom", "--root", root / "ph", "--out", root / "c", "--size", "32", check=True)
    return root


@pytest.mark.parametrize("recipe", ["ldm_unet_phantom", "rf_dit_phantom", "crossflow_phantom"])
def test_train_then_generate(cache, recipe, tmp_path):
    run = tmp_path / "run"
    sets = [f"data.cache={cache / 'c'}", "model.autoencoder=null", "train.max_steps=6", "train.batch_size=8",
            "train.ckpt_every=6", "train.eval_every=0", "data.media_n=2", "data.media_steps=2",
            "data.tokenizer_vocab=300", "train.tensorboard=false", *TINY[recipe], *COND]
    run_cli(*_train_args(recipe, run, sets), check=True)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in log)  # finite
    cfg = json.loads((run / "model" / "config.json").read_text())["config"]
    assert cfg["image_size"] == 32 and cfg["latent_size"] == 32  # from the cache, pixel space
    assert cfg.get("side_map", False) is (recipe == "ldm_unet_phantom")  # the LDM recipe draws sides as planes
    # the LDM recipe reads sides and sizes from the reports into the findings path
    assert cfg["condition"].get("report_severity", False) is (recipe == "ldm_unet_phantom")
    assert (run / "model" / "tokenizer" / "tokenizer.json").is_file()  # the tokenizer travels with the model
    media = run / "media" / "step_000006"
    assert Image.open(media / "samples.png").text.get("synthetic") == "true"

    out1, out2 = tmp_path / "g1", tmp_path / "g2"
    for out in (out1, out2):
        run_cli("generate", "--model", run, "--findings", "Cardiomegaly, left Pleural Effusion, no Pneumothorax",
                "--n", "3", "--steps", "2", "--seed", "11", "--out", out, "--no-progress", check=True)
    meta = pd.read_csv(out1 / "metadata.csv", dtype=str, keep_default_na=False)
    assert list(meta.columns[:2]) == ["image_path", "prompt"] and set(FINDINGS) <= set(meta.columns)
    assert len(meta) == 3 and meta["Cardiomegaly"].tolist() == ["1"] * 3 and meta["Pneumothorax"].tolist() == ["0"] * 3
    assert meta["seed"].tolist() == ["11", "12", "13"]
    for rel in meta["image_path"]:
        assert (out1 / rel).read_bytes() == (out2 / rel).read_bytes()  # same seed, same bytes
        im = Image.open(out1 / rel)
        assert im.size == (32, 32)
        assert im.text["synthetic"] == "true" and im.text["seed"] and im.text["sampler"] and im.text["model"]
    # left/right guidance: recorded, one more network pass per step; CrossFlow refuses it in one line
    res = run_cli("generate", "--model", run, "--findings", "Cardiomegaly, left Pleural Effusion", "--steps", "2",
                  "--side-guidance", "2", "--out", tmp_path / "gs", "--no-progress")
    if recipe == "crossflow_phantom":
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "side-guidance" in res.stderr
        res = run_cli("generate", "--model", run, "--findings", "Cardiomegaly", "--steps", "2", "--apg", "0",
                      "--out", tmp_path / "ga", "--no-progress")
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "--apg" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
        gs = json.loads((tmp_path / "gs" / "generate.json").read_text())
        assert gs["side_guidance"] == 2.0 and gs["network_passes_per_image"] == gs["nfe_per_image"] * (
            3 if gs["guidance"] != 1.0 else 2)
        assert Image.open(tmp_path / "gs" / "images" / "000000.png").text["side_guidance"] == "2.0"
        # finding guidance and negative findings: recorded in the summary and each PNG; one more pass per step
        run_cli("generate", "--model", run, "--findings", "Cardiomegaly, Support Devices", "--steps", "2",
                "--finding-guidance", "3", "--negative", "Pneumothorax", "--out", tmp_path / "gf", "--no-progress",
                check=True)
        gf = json.loads((tmp_path / "gf" / "generate.json").read_text())
        assert gf["finding_guidance"] == 3.0 and gf["negative"] == "Pneumothorax"
        assert gf["network_passes_per_image"] == gf["nfe_per_image"] * (3 if gf["guidance"] != 1.0 else 2)
        png = Image.open(tmp_path / "gf" / "images" / "000000.png").text
        assert png["finding_guidance"] == "3.0" and png["negative"] == "Pneumothorax"
        bad = run_cli("generate", "--model", run, "--findings", "Cardiomegaly", "--steps", "2", "--negative",
                      "Cardiomegally", "--out", tmp_path / "gb", "--no-progress")
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "Cardiomegally" in bad.stderr
        assert not (tmp_path / "gb" / "metadata.csv").exists()
        # guidance rescale and interval: recorded; a partial interval takes fewer passes than plain guidance
        run_cli("generate", "--model", run, "--findings", "Cardiomegaly", "--steps", "4", "--guidance", "4",
                "--guidance-rescale", "0.7", "--guidance-interval", "0,0.5", "--apg", "0,5", "--out", tmp_path / "gr",
                "--no-progress", check=True)
        gr = json.loads((tmp_path / "gr" / "generate.json").read_text())
        assert gr["guidance_rescale"] == 0.7 and gr["guidance_interval"] == "0,0.5" and gr["apg"] == "0,5"
        assert gr["nfe_per_image"] <= gr["network_passes_per_image"] < 2 * gr["nfe_per_image"]
        png = Image.open(tmp_path / "gr" / "images" / "000000.png").text
        assert png["guidance_rescale"] == "0.7" and png["guidance_interval"] == "0,0.5" and png["apg"] == "0,5"
        bad = run_cli("generate", "--model", run, "--findings", "Cardiomegaly", "--steps", "2", "--apg", "0,x",
                      "--out", tmp_path / "ga", "--no-progress")
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "--apg" in bad.stderr
        assert not (tmp_path / "ga").exists()
        # a model's default_apg (config.json) applies without --apg and is recorded; --apg off is plain guidance
        from unicxr.models import resolve_model_dir

        cfg_path = resolve_model_dir(run) / "config.json"
        saved = cfg_path.read_text()
        doc = json.loads(saved)
        cfg_path.write_text(json.dumps({**doc, "config": {**doc["config"], "default_apg": [0, 5]}}))
        try:
            for name, extra in (("gd", []), ("go", ["--apg", "off"]), ("ge", ["--apg", "0,5"])):
                run_cli("generate", "--model", run, "--findings", "Cardiomegaly", "--steps", "4", "--guidance", "4",
                        *extra, "--out", tmp_path / name, "--no-progress", check=True)
        finally:
            cfg_path.write_text(saved)
        gd = json.loads((tmp_path / "gd" / "generate.json").read_text())
        assert gd["apg"] == "0,5" and Image.open(tmp_path / "gd" / "images" / "000000.png").text["apg"] == "0,5"
        assert "apg" not in json.loads((tmp_path / "go" / "generate.json").read_text())
        assert "apg" not in Image.open(tmp_path / "go" / "images" / "000000.png").text
        same = (tmp_path / "gd" / "images" / "000000.png").read_bytes() == (tmp_path / "ge" / "images" / "000000.png").read_bytes()
        assert same and (tmp_path / "go" / "images" / "000000.png").read_bytes() != (tmp_path / "gd" / "images" / "000000.png").read_bytes()
        bad = run_cli("generate", "--model", run, "--findings", "Cardiomegaly", "--steps", "2",
                      "--guidance-interval", "0.8,0.2", "--out", tmp_path / "gi", "--no-progress")
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "guidance-interval" in bad.stderr
        assert not (tmp_path / "gi").exists()
    # one image per test report of a cache; the folder opens as an evaluation image set
    out3 = tmp_path / "g3"
    res = run_cli("generate", "--model", run, "--prompts", cache / "c", "--split", "test", "--steps", "2",
                  "--out", out3, "--no-progress", check=True)
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    from unicxr.data.cache import CXRCache
    from unicxr.data.image_sets import open_image_set

    assert summary["images"] == len(CXRCache(cache / "c", split="test")) and summary["synthetic"] is True
    fake = open_image_set(out3)
    assert len(fake) == summary["images"] and fake.labels is not None and fake.prompts is not None
    # does it use its condition? paired losses with true / shuffled / null conditions on real images
    res = run_cli("eval", "conditioning", "--model", run, "--cache", cache / "c", "--split", "all",
                  "--max-images", "16", "--batch-size", "8", "--repeats", "2", "--out", tmp_path / "cu",
                  "--no-progress", check=True)
    cu = json.loads((tmp_path / "cu" / "conditioning.json").read_text())
    assert cu["n_items"] == 16 and cu["n_units"] == 4 and cu["model_type"] == json.loads(
        (run / "model" / "config.json").read_text())["model_type"]
    assert all(v == v and v > 0 for v in cu["loss"].values())
    assert "Verdict" in res.stdout and (tmp_path / "cu" / "conditioning.md").is_file()


def test_crossflow_infonce_on_a_frozen_networks_image_features(cache, tmp_path):
    """data.nce_features: a frozen classifier's pooled features of each training image (computed once, in
    the order of the latents encoded once) are the image side of CrossFlow's InfoNCE; the model's head
    takes their width; a bad spec is a one-line error."""
    import torch

    from unicxr.data.cache import CXRCache
    from unicxr.data.latent_cache import LatentCache
    from unicxr.models.autoencoder import AutoencoderConfig, build_autoencoder

    enc = _tiny_encoder(cache, tmp_path / "enc", steps=2)
    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(kind="kl", image_size=32, channels=[8, 8, 8], latent_channels=2,
                                        norm_num_groups=4, scale_factor=0.5)).save_pretrained(tmp_path / "ae")
    run = tmp_path / "run"
    sets = [f"data.cache={cache / 'c'}", f"model.autoencoder={tmp_path / 'ae'}", f"data.nce_features=own:{enc}",
            "train.max_steps=3", "train.batch_size=8", "train.ckpt_every=3", "train.eval_every=0", "data.media_n=0",
            "data.tokenizer_vocab=300", "train.tensorboard=false", *TINY["crossflow_phantom"], "model.patch=2", *COND]
    res = run_cli(*_train_args("crossflow_phantom", run, sets), check=True)
    assert "image features for InfoNCE" in res.stdout
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["nce"] == r["nce"] and r["nce"] > 0 for r in log)
    cfg = json.loads((run / "model" / "config.json").read_text())["config"]
    assert cfg["nce_feature_dim"] == 16  # the encoder's feature width (resnet_widths[-1])
    # the features are indexed like the latents encoded once: the same images in the same order
    lat = LatentCache(run / "latents" / "train_32px", split="train")
    img = CXRCache(cache / "c", split="train")
    assert [lat[i]["path"] for i in range(len(lat))] == [img[i]["path"] for i in range(len(img))]
    # stored in the run under the network's fingerprint: a resumed run reads them back instead of recomputing
    stored = run / "latents" / "nce_features_train.safetensors"
    assert stored.is_file()
    again = run_cli(*_train_args("crossflow_phantom", run, [*sets, "train.max_steps=4"]), check=True)
    assert "image features for InfoNCE read from" in again.stdout and "training images" not in again.stdout
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 4
    bad = run_cli(*_train_args("crossflow_phantom", tmp_path / "bad",
                               [s if not s.startswith("data.nce_features") else "data.nce_features=own:/nowhere"
                                for s in sets]))
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "data.nce_features" in bad.stderr


def test_generate_errors_are_one_line(cache, tmp_path):
    res = run_cli("generate", "--model", tmp_path, "--findings", "Cardiomegaly", "--out", tmp_path / "o")
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "not a model directory" in res.stderr
    res = run_cli("generate", "--model", tmp_path, "--out", tmp_path / "o")
    assert res.returncode != 0 and "exactly one of" in res.stderr


def test_latent_generator_with_autoencoder_and_latent_cache(cache, tmp_path):
    """A generator on autoencoder latents: trains from a `unicxr encode` latent cache (checked against
    model.autoencoder), carries the autoencoder as a component, and generates images of the cache size."""
    import torch

    from unicxr.models.autoencoder import AutoencoderConfig, build_autoencoder

    torch.manual_seed(0)
    ae = build_autoencoder(AutoencoderConfig(kind="kl", image_size=32, channels=[8, 8, 8], latent_channels=2,
                                             norm_num_groups=4, scale_factor=0.5))
    ae.save_pretrained(tmp_path / "ae")
    run_cli("encode", "--model", tmp_path / "ae", "--cache", cache / "c", "--out", tmp_path / "lat", "--no-progress",
            check=True)
    run = tmp_path / "run"
    sets = [f"data.cache={cache / 'c'}", f"model.autoencoder={tmp_path / 'ae'}", f"data.latents={tmp_path / 'lat'}",
            "train.max_steps=3", "train.batch_size=8", "train.ckpt_every=3", "train.eval_every=0", "data.media_n=2",
            "data.media_steps=2", "data.tokenizer_vocab=300", "train.tensorboard=false", *TINY["rf_dit_phantom"],
            "model.patch=2", *COND]
    run_cli(*_train_args("rf_dit_phantom", run, sets), check=True)
    cfg = json.loads((run / "model" / "config.json").read_text())["config"]
    assert (cfg["latent_channels"], cfg["latent_size"]) == (2, 8)
    comps = json.loads((run / "model" / "components.json").read_text())
    assert comps["autoencoder"]["path"] == "autoencoder" and comps["autoencoder"]["frozen"]
    out = tmp_path / "g"
    run_cli("generate", "--model", run, "--prompt", "Large right pleural effusion.", "--n", "2", "--steps", "2",
            "--out", out, "--no-progress", check=True)
    meta = pd.read_csv(out / "metadata.csv", dtype=str, keep_default_na=False)
    assert meta["Pleural Effusion"].tolist() == ["1", "1"]  # the labeler's reading of the prompt
    assert Image.open(out / meta["image_path"][0]).size == (32, 32)
    # a latent cache from another autoencoder is refused with one line
    torch.manual_seed(1)
    build_autoencoder(AutoencoderConfig(kind="kl", image_size=32, channels=[8, 8, 8], latent_channels=2,
                                        norm_num_groups=4)).save_pretrained(tmp_path / "ae2")
    other = [s.replace(str(tmp_path / "ae"), str(tmp_path / "ae2")) if s.startswith("model.autoencoder") else s
             for s in sets]
    res = run_cli(*_train_args("rf_dit_phantom", tmp_path / "run2", other))
    assert res.returncode != 0 and "not the autoencoder of latent cache" in res.stderr


def test_bench_generators_side_by_side(cache, tmp_path):
    """`unicxr bench generators`: same cache, same budget, same prompts, same encoder; JSON + table
    with FD (CI), alignment, NFE and ratios to the baseline."""
    enc = _tiny_encoder(cache, tmp_path / "enc", steps=4)
    out = tmp_path / "bench"
    sets = ["model.autoencoder=null", "train.max_steps=3", "train.batch_size=8", "train.eval_every=0",
            "data.media_n=0", "data.tokenizer_vocab=300", "train.tensorboard=false", "model.dim=32", "model.depth=1",
            "model.heads=2", "model.patch=4", "model.default_steps=2", *COND]
    cmd = ["bench", "generators", "--cache", cache / "c", "--features", f"own:{enc}", "--out", out,
           "--recipe", "rf_dit_phantom", "--recipe", "crossflow_phantom", "--baseline", "rf_dit_phantom",
           "--max-minutes", "5", "--n-boot", "10", "--snapshots", "0.00001", "--diversity-prompts", "2",
           "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    res = run_cli(*cmd, check=True)
    bench = json.loads((out / "bench.json").read_text())
    fam = bench["families"]
    assert set(fam) == {"rf_dit_phantom", "crossflow_phantom"}
    for r in fam.values():
        assert r["train_steps"] == 3 and r["nfe_per_image"] == 2 and r["fd"] is not None and r["fd"] >= 0
        assert r["n_images"] == len(pd.read_csv(out / "rf_dit_phantom" / "images" / "metadata.csv"))
    # diversity (not for the baseline): 8 samples per prompt vs 8 real training images of the same findings
    d = fam["crossflow_phantom"]["diversity"]
    assert d["n_groups"] >= 1 and 0 < d["ms_ssim"] <= 1 and 0 < d["real_ms_ssim"] <= 1
    assert "diversity" not in fam["rf_dit_phantom"]
    div = pd.read_csv(out / "crossflow_phantom" / "diversity" / "images" / "metadata.csv")
    assert div.groupby("prompt").size().eq(8).all()
    assert fam["rf_dit_phantom"]["fd_ratio_to_baseline"] == 1.0
    from unicxr.pipelines.generate import network_passes

    assert network_passes(1000, 1.0) == 1000  # the DDPM baseline samples without guidance: one pass a call
    for r in fam.values():  # the recipes guide (scale > 1): the null branch doubles the passes
        assert r["guidance"] > 1.0 and r["network_passes_per_image"] == 2 * r["nfe_per_image"]
    # the baseline has no snapshots; the other family has one early snapshot, scored like the final model
    assert len(fam["rf_dit_phantom"]["curve"]) == 1
    curve = fam["crossflow_phantom"]["curve"]
    assert len(curve) == 2 and curve[0]["step"] < 3 and curve[0]["fd"] >= 0 and curve[-1]["fd"] == fam["crossflow_phantom"]["fd"]
    t = fam["crossflow_phantom"]["time_to_baseline_fd_ratio"]
    assert t is None or t > 0
    md = (out / "bench.md").read_text()
    assert "| crossflow_phantom |" in md and "FD ratio" in res.stdout and "FD against training time" in md
    assert "MS-SSIM fakes" in md
    # resumable: a family with row.json is not run again; every call tabulates all families in OUT
    stamp = (out / "crossflow_phantom" / "row.json").stat().st_mtime_ns
    run_cli(*cmd, check=True)
    assert (out / "crossflow_phantom" / "row.json").stat().st_mtime_ns == stamp
    # a finished family asked for diversity later gets only that added; the rest of its row stays
    row = json.loads((out / "crossflow_phantom" / "row.json").read_text())
    (out / "crossflow_phantom" / "row.json").write_text(json.dumps({k: v for k, v in row.items() if k != "diversity"}))
    run_cli(*cmd, check=True)
    again = json.loads((out / "crossflow_phantom" / "row.json").read_text())
    assert again == row
    bad = run_cli("bench", "generators", "--cache", cache / "c", "--features", f"own:{enc}", "--out", tmp_path / "b2",
                  "--snapshots", "0.5")
    assert bad.returncode != 0 and "--max-minutes" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    # guidance sweep on the two trained runs: same prompts and seeds per point, one curve per model
    sweep = tmp_path / "sweep"
    res = run_cli("bench", "guidance", "--model", out / "rf_dit_phantom" / "run", "--model",
                  out / "crossflow_phantom" / "run", "--cache", cache / "c", "--features", f"own:{enc}",
                  "--out", sweep, "--guidance", "1,3", "--max-prompts", "6", "--n-boot", "5", "--no-progress",
                  check=True)
    sw = json.loads((sweep / "sweep.json").read_text())
    assert sw["n_prompts"] == 6 and sw["guidance"] == [1.0, 3.0]
    for c in sw["models"].values():
        assert [p["guidance"] for p in c["points"]] == [1.0, 3.0]
        assert all(p["fd"] is not None and p["fd"] >= 0 and p["n_images"] == 6 for p in c["points"])
        assert "alignment_macro_auroc" in c["points"][0]
    g1 = sorted((sweep / "rf_dit_phantom" / "g1" / "images").glob("*.png"))
    g3 = sorted((sweep / "rf_dit_phantom" / "g3" / "images").glob("*.png"))
    assert len(g1) == len(g3) == 6 and any(a.read_bytes() != b.read_bytes() for a, b in zip(g1, g3, strict=True))
    # named by the run's family folder (past the generic run/), unique within a sweep
    assert set(sw["models"]) == {"rf_dit_phantom", "crossflow_phantom"}
    assert (sweep / "pareto.png").stat().st_size > 1000 and "| crossflow_phantom | 3 |" in res.stdout
    # resumable: the same points are reused (no image rewritten); the same model twice gets a second name
    stamp = g1[0].stat().st_mtime_ns
    res = run_cli("bench", "guidance", "--model", out / "rf_dit_phantom" / "run", "--model",
                  out / "rf_dit_phantom" / "run" / "model_ema", "--cache", cache / "c", "--features", f"own:{enc}",
                  "--out", sweep, "--guidance", "1,3", "--max-prompts", "6", "--n-boot", "5", "--no-progress",
                  check=True)
    assert g1[0].stat().st_mtime_ns == stamp
    assert set(json.loads((sweep / "sweep.json").read_text())["models"]) == {"rf_dit_phantom", "rf_dit_phantom_2"}
    bad = run_cli("bench", "guidance", "--model", out / "rf_dit_phantom" / "run", "--cache", cache / "c",
                  "--features", f"own:{enc}", "--out", tmp_path / "bad", "--guidance", "1,x")
    assert bad.returncode != 0 and "--guidance" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_low_resolution_phase_in_one_run(cache, tmp_path):
    """data.lowres_size/lowres_steps: the first steps train on images at half the side, the rest at the
    cache's size, in one run; the saved model is the full-size one. Misconfigurations are one line."""
    run = tmp_path / "run"
    sets = [f"data.cache={cache / 'c'}", "model.autoencoder=null", "train.max_steps=4", "train.batch_size=8",
            "train.log_every=1", "train.ckpt_every=4", "train.eval_every=0", "data.media_n=0",
            "data.tokenizer_vocab=300", "train.tensorboard=false", *TINY["rf_dit_phantom"], *COND,
            "model.positions=sincos", "data.lowres_size=16", "data.lowres_steps=2"]
    run_cli(*_train_args("rf_dit_phantom", run, sets), check=True)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["image_side"] for r in log] == [16.0, 16.0, 32.0, 32.0]
    assert all(r["loss"] == r["loss"] for r in log)
    cfg = json.loads((run / "model" / "config.json").read_text())["config"]
    assert cfg["latent_size"] == 32 and cfg["positions"] == "sincos"
    # the EMA restarts from the live weights at the first full-size step (data.lowres_ema_restart), so it
    # tracks the full-size weights instead of averaging in the low-resolution phase's.
    from safetensors.torch import load_file

    def ema_gap(r):
        m, e = load_file(str(r / "model" / "model.safetensors")), load_file(str(r / "model_ema" / "model.safetensors"))
        return sum(float((m[k].float() - e[k].float()).pow(2).sum()) for k in m if k in e) ** 0.5

    # a low-res phase of 3 of the 4 steps: the EMA restarts after the last step, so it equals the weights
    ema = ["train.ema_decay=0.999", "data.lowres_steps=3"]
    run_cli(*_train_args("rf_dit_phantom", tmp_path / "ema_on", [*sets, *ema]), check=True)
    run_cli(*_train_args("rf_dit_phantom", tmp_path / "ema_off", [*sets, *ema, "data.lowres_ema_restart=false"]),
            check=True)
    assert ema_gap(tmp_path / "ema_on") == 0.0 < ema_gap(tmp_path / "ema_off")
    # a run shortened below the low-res phase (a recipe with --set train.max_steps=N) keeps a full-size half
    res = run_cli(*_train_args("rf_dit_phantom", tmp_path / "short", [*sets, "data.lowres_steps=10"]), check=True)
    assert "the low-resolution phase takes the first 2 steps" in res.stdout
    log = [json.loads(x) for x in (tmp_path / "short" / "log.jsonl").read_text().splitlines()]
    assert [r["image_side"] for r in log] == [16.0, 16.0, 32.0, 32.0]
    # a recipe's low-res side at or above a small cache's size: no low-res phase, said once
    res = run_cli(*_train_args("rf_dit_phantom", tmp_path / "full", [*sets, "data.lowres_size=32"]), check=True)
    assert "no low-resolution phase" in res.stdout
    log = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["image_side"] for r in log] == [32.0] * 4
    for bad, msg in [("model.positions=learned", "model.positions=sincos"),
                     ("data.lowres_size=null", "data.lowres_steps needs data.lowres_size"),
                     ("data.lowres_size=18", "not divisible by 4")]:
        res = run_cli(*_train_args("rf_dit_phantom", tmp_path / "bad", [*sets, bad]))
        assert res.returncode != 0 and msg in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_read_prompts_split_all_is_every_row(cache):
    """``--split all`` means the whole cache, as in the eval commands (the guidance sweep passes it on)."""
    from unicxr.pipelines.generate import read_prompts

    every, _ = read_prompts(prompts=cache / "c")
    test, _ = read_prompts(prompts=cache / "c", split="test")
    assert len(read_prompts(prompts=cache / "c", split="all")[0]) == len(every) > len(test) > 0


def test_latents_are_encoded_once_and_equal_on_the_fly_encoding(cache, tmp_path):
    """With model.autoencoder and no data.latents the task encodes the training split once into
    RUN/latents/ (one latent cache per side: full size and the low-resolution phase's) and trains from
    it; the losses equal those of encoding every batch on the fly (data.encode_once=false)."""
    import numpy as np
    import torch

    from unicxr.data.latent_cache import LatentCache
    from unicxr.models.autoencoder import AutoencoderConfig, build_autoencoder

    torch.manual_seed(0)
    build_autoencoder(AutoencoderConfig(kind="kl", image_size=32, channels=[8, 8, 8], latent_channels=2,
                                        norm_num_groups=4, scale_factor=0.5)).save_pretrained(tmp_path / "ae")
    sets = [f"data.cache={cache / 'c'}", f"model.autoencoder={tmp_path / 'ae'}", "train.max_steps=4",
            "train.batch_size=8", "train.log_every=1", "train.ckpt_every=4", "train.eval_every=0", "data.media_n=0",
            "data.tokenizer_vocab=300", "train.tensorboard=false", *TINY["rf_dit_phantom"], "model.patch=1", *COND,
            "model.positions=sincos", "data.lowres_size=16", "data.lowres_steps=2"]
    once, fly = tmp_path / "once", tmp_path / "fly"
    res = run_cli(*_train_args("rf_dit_phantom", once, sets), check=True)
    assert "encoding the train split once at 32 px" in res.stdout and "at 16 px" in res.stdout
    assert "img/s]" not in res.stderr  # --no-progress reaches the encoder's progress bar
    full, low = LatentCache(once / "latents" / "train_32px"), LatentCache(once / "latents" / "train_16px")
    assert (full.image_size, full.latent_shape, low.image_size, low.latent_shape) == (32, (2, 8, 8), 16, (2, 4, 4))
    assert len(full) == len(low) == int((pd.read_parquet(cache / "c" / "index.parquet")["split"] == "train").sum())
    run_cli(*_train_args("rf_dit_phantom", fly, [*sets, "data.encode_once=false"]), check=True)
    assert not (fly / "latents").exists()

    def losses(run):
        return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]

    assert len(losses(once)) == 4
    np.testing.assert_allclose(losses(once), losses(fly), rtol=1e-4)


def test_repeat_factor_sampling_oversamples_rare_findings(cache, tmp_path):
    """`train.repeat_threshold`: the steps draw the items the repeat-factor sampler over the cache's labels
    gives (rare-finding images more often), and the run says so."""
    import numpy as np

    from unicxr.data.cache import CXRCache
    from unicxr.train.sampler import StepBatchSampler, repeat_factors

    run = tmp_path / "rep"
    sets = [f"data.cache={cache / 'c'}", "model.autoencoder=null", "train.max_steps=12", "train.batch_size=8",
            "train.ckpt_every=12", "train.eval_every=0", "data.media_n=0", "data.tokenizer_vocab=300",
            "train.tensorboard=false", "train.record_indices=true", "train.repeat_threshold=0.3",
            *TINY["rf_dit_phantom"], *COND]
    res = run_cli(*_train_args("rf_dit_phantom", run, sets), check=True)
    assert "repeat-factor sampling" in res.stdout + res.stderr
    labels = CXRCache(cache / "c", split="train").labels
    factors = repeat_factors(labels, 0.3)
    assert factors.max() > 1.0  # the tiny cache has rare findings
    want = StepBatchSampler(len(labels), batch_size=8, grad_accum=1, world_size=1, rank=0, seed=0, start_step=0,
                            max_steps=12, repeat=factors)
    got = [json.loads(x)["indices"] for x in (run / "indices_rank0.jsonl").read_text().splitlines()]
    assert got == [want.indices_for(s, 0) for s in range(12)]
    drawn = np.bincount(np.concatenate(got), minlength=len(labels))
    assert drawn[factors > 1.5].mean() > drawn[factors == 1.0].mean()
    # explicit per-finding factors go through the same path: Cardiomegaly images x3
    run2 = tmp_path / "rep2"
    sets2 = [s for s in sets if not s.startswith("train.repeat_threshold")] + ["train.repeat_findings.Cardiomegaly=3"]
    res = run_cli(*_train_args("rf_dit_phantom", run2, sets2), check=True)
    assert "repeat-factor sampling (Cardiomegaly x3)" in res.stdout + res.stderr
    factors = repeat_factors(labels, None, {FINDINGS.index("Cardiomegaly"): 3.0})
    assert set(factors.tolist()) == {1.0, 3.0}
    want = StepBatchSampler(len(labels), batch_size=8, grad_accum=1, world_size=1, rank=0, seed=0, start_step=0,
                            max_steps=12, repeat=factors)
    got = [json.loads(x)["indices"] for x in (run2 / "indices_rank0.jsonl").read_text().splitlines()]
    assert got == [want.indices_for(s, 0) for s in range(12)]


def test_generate_resume_keeps_whole_written_batches(cache, tmp_path):
    """`generate --resume`: batches whose PNGs an earlier run into the same folder wrote (same text) are kept,
    the others sampled again, with the bytes and metadata of one uninterrupted run."""
    import shutil

    import numpy as np

    from unicxr.utils.media import save_png

    run = tmp_path / "run"
    sets = [f"data.cache={cache / 'c'}", "model.autoencoder=null", "train.max_steps=2", "train.batch_size=8",
            "train.ckpt_every=2", "train.eval_every=0", "data.media_n=0", "data.tokenizer_vocab=300",
            "train.tensorboard=false", *TINY["rf_dit_phantom"], *COND]
    run_cli(*_train_args("rf_dit_phantom", run, sets), check=True)
    args = ["generate", "--model", run, "--findings", "Cardiomegaly, right Pneumothorax", "--n", "5", "--steps", "2",
            "--batch-size", "2", "--seed", "4", "--no-progress"]
    full, part = tmp_path / "full", tmp_path / "part"
    run_cli(*args, "--out", full, check=True)
    shutil.copytree(full, part)
    (part / "images" / "000003.png").unlink()  # batch [2, 3] incomplete: sampled again
    kept = part / "images" / "000000.png"
    save_png(kept, np.zeros((32, 32), np.uint8), Image.open(kept).text)  # same text: batch [0, 1] is kept as is
    res = run_cli(*args, "--out", part, "--resume", check=True)
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["images"] == 5 and summary["images_sampled"] == 3  # batch [2, 3] and the last batch [4]
    assert np.asarray(Image.open(kept)).max() == 0
    for i in range(1, 5):
        name = f"images/{i:06d}.png"
        assert (part / name).read_bytes() == (full / name).read_bytes()
    assert (part / "metadata.csv").read_text() == (full / "metadata.csv").read_text()
    # other sampling options (here the seed) do not match the PNG text: everything is sampled
    res = run_cli(*[a if a != "4" else "5" for a in args], "--out", part, "--resume", check=True)
    assert json.loads(res.stdout[res.stdout.index("{"):])["images_sampled"] == 5
    assert np.asarray(Image.open(kept)).max() > 0
    # without --resume nothing is kept
    res = run_cli(*args, "--out", part, check=True)
    assert json.loads(res.stdout[res.stdout.index("{"):])["images_sampled"] == 5


def test_bench_time_to_baseline_fd_brackets():
    """The time a family first reached the baseline's FD is bracketed by its anytime curve: the first point at
    or below it (upper bound) and the point before (lower bound); not reached: the last point's time."""
    from unicxr.bench.generators import add_baseline_ratios, render_table

    def row(fd, secs, curve):
        return {"fd": fd, "fd_ci": [fd - 1, fd + 1], "nfe_per_image": 25, "network_passes_per_image": 50,
                "train_seconds": secs, "train_steps": 10, "sampler": "euler", "steps": 25, "guidance": 2.0,
                "sample_seconds_per_image": 0.1, "alignment_macro_auroc": 0.6,
                "curve": [{"seconds": s, "fd": f, "step": 1, "fd_ci": [f, f], "alignment_macro_auroc": 0.6}
                          for s, f in curve]}

    rows = {"base": row(200.0, 1000.0, [(1000.0, 200.0)]),
            "late": row(150.0, 900.0, [(300.0, 320.0), (600.0, 250.0), (900.0, 150.0)]),
            "early": row(100.0, 900.0, [(300.0, 190.0), (900.0, 100.0)]),
            "never": row(260.0, 900.0, [(300.0, 400.0), (900.0, 260.0)])}
    rows["base"]["nfe_per_image"] = rows["base"]["network_passes_per_image"] = 1000
    add_baseline_ratios(rows, "base")
    assert rows["late"]["time_to_baseline_fd_ratio"] == 0.9 and rows["late"]["time_to_baseline_fd_ratio_after"] == 0.6
    assert rows["early"]["time_to_baseline_fd_ratio"] == 0.3 and rows["early"]["time_to_baseline_fd_ratio_after"] == 0
    assert rows["never"]["time_to_baseline_fd_ratio"] is None and rows["never"]["time_to_baseline_fd_ratio_after"] == 0.9
    assert rows["late"]["nfe_ratio_to_baseline"] == 0.025 and rows["late"]["network_pass_ratio_to_baseline"] == 0.05
    md = render_table({"cache": "c", "split": "test", "features": "own:x", "max_minutes": 45, "baseline": "base",
                       "families": rows})
    assert "(0.6, 0.9] |" in md and "≤ 0.3 |" in md and "> 0.9 (not reached) |" in md
    no_base = {"late": row(150.0, 900.0, [(900.0, 150.0)])}
    add_baseline_ratios(no_base, "base")
    assert "fd_ratio_to_baseline" not in no_base["late"]
