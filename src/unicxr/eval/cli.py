"""``unicxr eval images`` (image metrics), ``eval classifier`` (per-finding AUROC), ``eval sanity``."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "images_command", "classifier_command", "sanity_command"]


def images_command(
    real: Path = typer.Option(
        ..., "--real", help="Real images: a `unicxr prepare` cache or an image folder."
    ),
    fake: Path = typer.Option(
        ...,
        "--fake",
        help="Fake (generated) images: a cache, or a folder of PNGs with an optional metadata.csv "
        "(image_path + the 14 prompted label columns or a 'findings' column, optional 'prompt').",
    ),
    features: str = typer.Option(
        ...,
        "--features",
        help="Feature space: own:RUN_OR_MODEL_DIR (our evaluation encoder), xrv:FILE (torchxrayvision "
        "DenseNet weights), hf:DIR (local HF vision model), inception:FILE[?range=255] (TorchScript).",
    ),
    out: Path = typer.Option(
        Path("eval_images"), "--out", "-o", help="Output folder (metrics.json, report.md/html)."
    ),
    real_split: str = typer.Option(
        "test", "--real-split", help="Split of --real to use ('all' for everything)."
    ),
    fake_split: str = typer.Option(
        "all", "--fake-split", help="Split of --fake to use ('all' for everything)."
    ),
    n_boot: int = typer.Option(
        200, "--n-boot", min=0, help="Bootstrap replicates for the 95% CIs (0: none)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for bootstrap, KID subsets and subsampling."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per feature-extraction batch."),
    max_images: int = typer.Option(
        None, "--max-images", min=2, help="Use a seeded random subset of each set."
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device for feature extraction (cpu, cuda)."),
    min_per_finding: int = typer.Option(
        20, "--min-per-finding", min=2, help="Positives needed for per-finding FD."
    ),
    kid_subset_size: int = typer.Option(1000, "--kid-subset-size", min=2, help="KID subset size."),
    diversity: bool = typer.Option(
        True, "--diversity/--no-diversity", help="MS-SSIM among same-prompt fakes."
    ),
    save_features: bool = typer.Option(
        False, "--save-features", help="Also write features.npz (real, fake)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Compare generated images with real ones in one named feature space.

    FD, KID, MMD, PRDC and per-finding FD over the full sets with 95% bootstrap CIs; prompt alignment
    (encoder AUROC on fakes with their prompted labels vs on real images) and MS-SSIM diversity among
    same-prompt fakes when the fake set has labels/prompts.

    Writes OUT/metrics.json, OUT/report.md, OUT/report.html and plots (PCA, per-finding FD, alignment).
    """
    import json

    from unicxr.eval.image_eval import evaluate_images
    from unicxr.utils.errors import UnicxrError

    try:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UnicxrError(f"--device {device}: CUDA is not available")
        torch.device(device)
    except RuntimeError as exc:
        raise UnicxrError(f"--device {device!r}: {exc}") from None
    import warnings

    from unicxr.eval.image_metrics import SmallSampleWarning

    warnings.simplefilter("ignore", SmallSampleWarning)  # recorded in metrics.json and echoed below
    res = evaluate_images(
        real,
        fake,
        features,
        out=out,
        real_split=real_split,
        fake_split=fake_split,
        n_boot=n_boot,
        seed=seed,
        batch_size=batch_size,
        max_images=max_images,
        device=device,
        diversity=diversity,
        min_per_finding=min_per_finding,
        kid_subset_size=kid_subset_size,
        save_features=save_features,
        progress=progress,
    )
    m = res["metrics"]
    summary = {
        "features": res["features"]["name"],
        "n_real": m["n_real"],
        "n_fake": m["n_fake"],
        "fd": round(m["fd"]["value"], 6),
        "kid": round(m["kid"]["mean"], 6),
    }
    if "prdc" in m:
        summary.update(
            {k: round(m["prdc"][k]["value"], 4) for k in ("precision", "recall", "density", "coverage")}
        )
    typer.echo(json.dumps(summary))
    for w in m.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'report.html'}", err=True)


def classifier_command(
    model: Path = typer.Option(
        ..., "--model", help="Classifier run folder (uses model_ema/ or model/) or model dir."
    ),
    cache: Path = typer.Option(..., "--cache", help="A `unicxr prepare` cache."),
    split: str = typer.Option("test", "--split", help="Split to evaluate ('all' for everything)."),
    min_count: int = typer.Option(
        20, "--min-count", min=1, help="Macro AUROC over findings with this many pos/neg."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Write the JSON here too."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Per-finding AUROC and macro AUROC of a CXRClassifier (e.g. the evaluation encoder) on a cache split."""
    import json
    import math

    from unicxr.eval.features import OwnEncoderExtractor
    from unicxr.train.tasks.classifier import classifier_metrics, load_split, predict
    from unicxr.utils.io import atomic_write_text

    ext = OwnEncoderExtractor(model)
    ds = load_split(
        cache, None if split == "all" else split, size=ext.model.config.image_size, progress=progress
    )
    probs, targets = predict(ext.model, ds)
    metrics = classifier_metrics(probs, targets, min_count=min_count)
    res = {
        "model": str(ext.model_dir),
        "cache": str(cache),
        "split": split,
        "n": len(ds),
        "positives": {k: int((targets[:, j] == 1).sum()) for j, k in enumerate(ext.model.config.label_names)},
        **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()},
    }
    text = json.dumps(res, indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo(text)


def sanity_command(
    data: Path = typer.Option(
        ..., "--data", help="A cache (or labelled image folder) with train and test splits."
    ),
    features: str = typer.Option(
        ..., "--features", help="Feature space: own:RUN, xrv:FILE, hf:DIR, inception:FILE."
    ),
    train_split: str = typer.Option("train", "--train-split", help="First real sample."),
    test_split: str = typer.Option("test", "--test-split", help="Second real sample (also blurred)."),
    n_boot: int = typer.Option(100, "--n-boot", min=0, help="Bootstrap replicates for the CIs."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for halves, bootstrap and subsampling."),
    max_images: int = typer.Option(None, "--max-images", min=10, help="Seeded subset of each split."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the JSON here too."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Check that a feature space behaves: FD(train, test) < FD(test, blurred σ=1) < FD(test, σ=2),
    KID of two halves of one set ≈ 0 (CI contains 0), PRDC of a set with itself = 1. Exit 1 if one fails."""
    import json

    from unicxr.eval.image_eval import json_safe
    from unicxr.eval.sanity import sanity_checks
    from unicxr.utils.io import atomic_write_text

    res = sanity_checks(
        data,
        features,
        train_split=train_split,
        test_split=test_split,
        n_boot=n_boot,
        seed=seed,
        max_images=max_images,
        progress=progress,
    )
    text = json.dumps(json_safe(res), indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo(text)
    if not all(res["passed"].values()):
        failed = ", ".join(k for k, v in res["passed"].items() if not v)
        typer.echo(f"sanity check failed: {failed}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``eval images``, ``eval classifier`` and ``eval sanity`` to the ``eval`` group."""
    groups["eval"].command("images")(images_command)
    groups["eval"].command("classifier")(classifier_command)
    groups["eval"].command("sanity")(sanity_command)
    from unicxr.eval.realism_cli import realism_command

    groups["eval"].command("realism")(realism_command)
    return {"eval"}
