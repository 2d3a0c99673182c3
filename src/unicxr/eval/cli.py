"""``unicxr eval images`` (image metrics), ``eval reports`` (NLG + clinical efficacy), ``eval classifier``
(per-finding AUROC), ``eval sanity``."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "images_command", "reports_command", "classifier_command", "sanity_command", "recon_command"]

_SECTIONS = "full | impression | findings_impression | raw"


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
    (encoder AUROC on fakes with their prompted labels vs on real images), also split by each finding
    prompted beside it (which co-occurring finding hides which: the report lists the largest drops, with
    the real images split the same way), and MS-SSIM diversity among same-prompt fakes when the fake set
    has labels/prompts.

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

    from unicxr.eval.features import FallbackWarning
    from unicxr.eval.image_metrics import SmallSampleWarning

    # both are recorded in metrics.json and echoed below
    warnings.simplefilter("ignore", SmallSampleWarning)
    warnings.simplefilter("ignore", FallbackWarning)
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

    from unicxr.data.dataset import CXRDataset
    from unicxr.eval.features import OwnEncoderExtractor
    from unicxr.labels import UncertainPolicy
    from unicxr.models.classifier import classifier_metrics, predict
    from unicxr.utils.io import atomic_write_text

    ext = OwnEncoderExtractor(model)
    ds = CXRDataset(
        cache,
        None if split == "all" else split,
        size=ext.model.config.image_size,
        policy=UncertainPolicy.IGNORE,
        fields=("image",),
    )
    probs, targets = predict(ext.model, ds, progress=progress)
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
        ..., "--data", help="A cache (or labelled image folder) with the two splits below."
    ),
    features: str = typer.Option(
        ..., "--features", help="Feature space: own:RUN, xrv:FILE, hf:DIR, inception:FILE."
    ),
    train_split: str = typer.Option("train", "--train-split", help="First real split (pooled with the second)."),
    test_split: str = typer.Option("test", "--test-split", help="Second real split (pooled with the first)."),
    sigma: list[float] = typer.Option(
        [1.0, 2.0], "--sigma", min=0.01, help="Blur σ in pixels of the stored images (repeat for a longer chain)."
    ),
    n_boot: int = typer.Option(100, "--n-boot", min=10, help="Bootstrap replicates for the 95% CIs."),
    n_perm: int = typer.Option(
        20, "--n-perm", min=5, help="Random same-size splits per finding (finding_separation)."
    ),
    min_count: int = typer.Option(
        20, "--min-count", min=2, help="Positives and negatives a finding needs to be tested."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for halves, bootstrap, splits and subsampling."),
    max_images: int = typer.Option(None, "--max-images", min=10, help="Seeded subset of each split."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per feature-extraction batch."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the JSON here too."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Check that a feature space measures images; passing = every check passed.

    The two splits are pooled and cut into seeded random halves A and B.

    \b
    features_vary: different images give different features (constant fails)
    deterministic: same images, same features twice (fresh noise fails)
    blur_chain: FD(A,B) < FD(A,blur σ1(B)) < FD(A,blur σ2(B)), each step
      with non-overlapping 95% bootstrap CIs (input-ignoring features fail)
    finding_separation: for >= half of the findings with --min-count
      positives and negatives, FD(positives, negatives) is above all
      --n-perm random same-size splits and >= 1.5x their mean
      (skipped when the images have no labels)
    kid_halves_ci_contains_0, prdc_self_is_1: KID(A,B) CI holds 0 and
      PRDC(B,B) = 1; necessary only (they hold for any features)

    Prints JSON with each check's values, CIs and rule. Exits 1 with one
    line naming each failed check and why; a skipped check does not fail.
    """
    import json
    import warnings

    from unicxr.eval.features import FallbackWarning
    from unicxr.eval.image_eval import json_safe
    from unicxr.eval.sanity import sanity_checks
    from unicxr.utils.io import atomic_write_text

    warnings.simplefilter("ignore", FallbackWarning)  # recorded in the JSON and echoed below
    res = sanity_checks(
        data,
        features,
        train_split=train_split,
        test_split=test_split,
        sigmas=tuple(sigma),
        n_boot=n_boot,
        n_perm=n_perm,
        min_count=min_count,
        seed=seed,
        max_images=max_images,
        batch_size=batch_size,
        progress=progress,
    )
    text = json.dumps(json_safe(res), indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo(text)
    for w in res["features"].get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    for name, c in res["checks"].items():
        if c.get("passed") is None:
            typer.echo(f"note: {name} {c['detail']}", err=True)
    if res["failure"] is not None:
        typer.echo(f"sanity check failed: {res['failure']}", err=True)
        raise typer.Exit(1)
    typer.echo("sanity checks passed: " + ", ".join(k for k, v in res["passed"].items() if v), err=True)


def _read(path: Path, what: str):
    import pandas as pd

    from unicxr.utils import UnicxrError

    if not path.is_file():
        raise UnicxrError(f"{what} {path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UnicxrError(f"{what} {path}: cannot read CSV: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def reports_command(
    pred: Path = typer.Option(..., "--pred", "-p", help="CSV of generated reports."),
    ref: Path = typer.Option(..., "--ref", "-r", help="CSV of reference reports."),
    id_column: str = typer.Option(
        "study_id", "--id-column", help="Column joining PRED and REF rows; when neither file has it, rows are "
        "matched by order (equal row counts required)."
    ),
    text_column: str = typer.Option("report", "--text-column", help="Report text column (both files)."),
    pred_text_column: str = typer.Option(None, "--pred-text-column", help="Text column of PRED if it differs."),
    out: Path = typer.Option(Path("report_metrics"), "--out", "-o", help="Output folder for metrics.json + metrics.md."),
    labels: str = typer.Option(
        "text", "--labels",
        help="text: label both report sets with the rule labeler (reproducible CE); columns: use the 14 label "
        "columns present in each CSV.",
    ),
    section: str = typer.Option("full", "--section", help=f"Section given to the labeler ({_SECTIONS})."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for 95% CIs (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Score generated reports against references: BLEU-1..4, ROUGE-L, CIDEr-D and clinical efficacy.

    CE precision/recall/F1 (micro and macro, 14 findings and the CE5 subset) are given with
    uncertain-as-negative and uncertain-as-positive, plus a per-finding table and bootstrap 95% CIs.
    Writes OUT/metrics.json and OUT/metrics.md.
    """
    import json

    import numpy as np

    from unicxr.eval.report_metrics import evaluate_reports, metrics_markdown
    from unicxr.labels import FINDINGS, labels_from_row
    from unicxr.text.cli import section_option
    from unicxr.utils import UnicxrError, atomic_write_text

    sec = section_option(section)
    if labels not in ("text", "columns"):
        raise UnicxrError(f"--labels: {labels!r} is not one of text, columns")
    pdf, rdf = _read(pred, "--pred"), _read(ref, "--ref")
    ptext = pred_text_column or text_column
    for df, col, path in ((pdf, ptext, pred), (rdf, text_column, ref)):
        if col not in df.columns:
            raise UnicxrError(f"{path}: text column {col!r} not found; columns are: {', '.join(df.columns)}")
    if id_column in pdf.columns and id_column in rdf.columns:
        for df, path in ((pdf, pred), (rdf, ref)):
            dup = df[id_column][df[id_column].duplicated()]
            if len(dup):
                raise UnicxrError(f"{path}: {id_column} {dup.iloc[0]!r} appears more than once")
        merged = pdf.merge(rdf, on=id_column, how="inner", suffixes=("_pred", "_ref"))
        if merged.empty:
            raise UnicxrError(f"no {id_column} value is shared by {pred} and {ref}")
        missing = len(rdf) - len(merged)
        if missing:
            typer.echo(f"warning: {missing} reference reports have no generated report and are skipped", err=True)
        pidx = pdf.set_index(id_column).loc[merged[id_column]]
        ridx = rdf.set_index(id_column).loc[merged[id_column]]
        pdf, rdf = pidx.reset_index(), ridx.reset_index()
    elif id_column in pdf.columns or id_column in rdf.columns:
        which = ref if id_column in pdf.columns else pred
        raise UnicxrError(f"{which}: id column {id_column!r} not found (it is in the other file)")
    elif len(pdf) != len(rdf):
        raise UnicxrError(f"no {id_column!r} column to join on and {len(pdf)} != {len(rdf)} rows")
    pl = rl = None
    if labels == "columns":
        for df, path in ((pdf, pred), (rdf, ref)):
            miss = [f for f in FINDINGS if f not in df.columns]
            if miss:
                raise UnicxrError(f"{path}: --labels columns needs the 14 label columns; missing {', '.join(miss)}")
        try:
            pl = np.stack([labels_from_row(r) for r in pdf[list(FINDINGS)].to_dict("records")])
            rl = np.stack([labels_from_row(r) for r in rdf[list(FINDINGS)].to_dict("records")])
        except ValueError as exc:
            raise UnicxrError(f"label columns: {exc}") from None
    result = evaluate_reports(
        pdf[ptext].tolist(), rdf[text_column].tolist(), pred_labels=pl, ref_labels=rl,
        n_boot=bootstrap, seed=seed, section=sec,
    )
    result["settings"].update({"pred": str(pred), "ref": str(ref), "labels": labels})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "metrics.md", metrics_markdown(result))
    nlg, ce = result["nlg"], result["ce"]
    typer.echo(
        f"{result['n']} reports: BLEU-4 {nlg['BLEU-4']:.4f}  ROUGE-L {nlg['ROUGE-L']:.4f}  CIDEr-D {nlg['CIDEr-D']:.4f}  "
        f"CE5 micro-F1 {ce['uncertain_as_negative']['ce5']['micro_f1']:.4f} (U-neg) / "
        f"{ce['uncertain_as_positive']['ce5']['micro_f1']:.4f} (U-pos) -> {out}/metrics.json, metrics.md"
    )


def recon_command(
    model: Path = typer.Option(..., "--model", help="Autoencoder run folder (uses model/) or model directory."),
    cache: Path = typer.Option(..., "--cache", help="A `unicxr prepare` cache."),
    out: Path = typer.Option(Path("eval_recon"), "--out", "-o", help="Output folder (metrics.json, report.md/html, grid.png)."),
    split: str = typer.Option("test", "--split", help="Split to reconstruct ('all' for everything)."),
    features: str = typer.Option(
        None, "--features", help="Feature space for FD and AUROC (own:RUN for the evaluation encoder; see eval images)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
    max_images: int = typer.Option(None, "--max-images", min=1, help="Use the first N images of the split."),
    n_grid: int = typer.Option(8, "--n-grid", min=0, help="Images in the grid."),
    min_count: int = typer.Option(20, "--min-count", min=1, help="Positives/negatives a finding needs to count."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also score bicubic down/up-sampling with as many values as the latent (VQ: and with as many bits as its code indices, in 8-bit pixels)."),
    n_boot: int = typer.Option(0, "--n-boot", min=0,
                               help="Bootstrap replicates for the FD CI and the paired CIs of the AUROC changes (0: none)."),
    grid_findings: str = typer.Option(
        None, "--grid-findings",
        help="Comma-separated findings (e.g. 'Support Devices,Pneumothorax,Fracture,Lung Lesion'): grid_findings.png "
        "shows their positive images, those whose probability the round trip lowered most first.",
    ),
    grid_per_finding: int = typer.Option(2, "--grid-per-finding", min=1, help="Images per finding in grid_findings.png."),
    num_threads: int = typer.Option(None, "--num-threads", min=1, help="torch intra-op threads."),
    device: str = typer.Option("cpu", "--device", help="Torch device (cpu, cuda)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Reconstruction quality of a latent autoencoder: PSNR/SSIM/MS-SSIM, FD in a feature space,
    per-finding AUROC of the evaluation encoder on originals vs reconstructions, a bicubic baseline
    with as many values as the latent (for a VQ model also one with as many bits as its code indices),
    encode/decode img/s, and an image grid in report.md/html."""
    import json

    import torch

    from unicxr.eval.recon import evaluate_recon

    if num_threads:
        torch.set_num_threads(num_threads)
    res = evaluate_recon(model, cache, out, split=split, features=features, batch_size=batch_size,
                         max_images=max_images, n_grid=n_grid, min_count=min_count, baseline=baseline,
                         n_boot=n_boot, grid_findings=grid_findings, grid_per_finding=grid_per_finding,
                         device=device, progress=progress)
    r = res["recon"]
    line = {"psnr": round(r["psnr"]["mean"], 3), "ssim": round(r["ssim"]["mean"], 4),
            "ms_ssim": round(r["ms_ssim"]["mean"], 4)}
    if "fd" in r:
        line["fd"] = round(r["fd"]["value"], 4)
    if res.get("auroc"):
        line["max_abs_delta_auroc"] = res["auroc"]["max_abs_delta"]
    typer.echo(json.dumps(line))
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'report.html'}", err=True)


def laterality_command(
    real: Path = typer.Option(..., "--real", help="Real images with reports (cache or folder) with the two splits."),
    encoder: str = typer.Option(..., "--encoder", help="Evaluation encoder: a cxr_classifier run (own:RUN also accepted)."),
    fake: Path = typer.Option(None, "--fake", help="Generated images (folder with metadata.csv: prompt or report)."),
    out: Path = typer.Option(Path("eval_laterality"), "--out", "-o", help="Output folder (laterality.json, laterality.md)."),
    findings: str = typer.Option("Pleural Effusion,Pneumothorax", "--findings", help="Comma-separated findings."),
    fit_split: str = typer.Option("train", "--fit-split", help="Real split the side probe is fitted on."),
    split: str = typer.Option("test", "--split", help="Real split the probe is measured on (its ceiling)."),
    max_fit: int = typer.Option(4000, "--max-fit", min=10, help="At most this many one-sided real images to fit on."),
    n_boot: int = typer.Option(200, "--n-boot", min=0, help="Bootstrap replicates for the CIs."),
    seed: int = typer.Option(0, "--seed", min=0),
    num_threads: int = typer.Option(None, "--num-threads", min=1, help="torch intra-op threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Left/right: does each image show the finding on the side its report or prompt says? A side
    probe on the evaluation encoder's feature map, fitted on real training images, is measured on the
    real test split (its ceiling) and applied to the fakes."""
    import torch

    from unicxr.eval.laterality import evaluate_laterality, render_laterality

    if num_threads:
        torch.set_num_threads(num_threads)
    names = tuple(f.strip() for f in findings.split(",") if f.strip())
    res = evaluate_laterality(real, fake, encoder, findings=names, fit_split=fit_split, split=split,
                              max_fit=max_fit, n_boot=n_boot, seed=seed, out=out, progress=progress)
    typer.echo(render_laterality(res))
    typer.echo(f"wrote {out / 'laterality.json'}, {out / 'laterality.md'}", err=True)


def conditioning_command(
    model: Path = typer.Option(..., "--model", help="Generator run folder (uses model/) or model directory."),
    cache: Path = typer.Option(..., "--cache", help="A `unicxr prepare` cache with reports and labels."),
    out: Path = typer.Option(Path("eval_conditioning"), "--out", "-o", help="Output folder (conditioning.json, conditioning.md)."),
    split: str = typer.Option("test", "--split", help="Split to use ('all' for everything)."),
    max_images: int = typer.Option(256, "--max-images", min=2, help="Use the first N images of the split."),
    batch_size: int = typer.Option(16, "--batch-size", min=2, help="Images per batch (one paired unit)."),
    repeats: int = typer.Option(4, "--repeats", min=1, help="Noise/timestep draws per batch."),
    seed: int = typer.Option(0, "--seed", min=0),
    num_threads: int = typer.Option(None, "--num-threads", min=1, help="torch intra-op threads."),
    device: str = typer.Option("cpu", "--device", help="Torch device (cpu, cuda)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Does a trained generator use its condition? Its own loss on real images with their true
    findings and reports, with those shuffled among the images, and with the null condition, at the
    same noise and timesteps; paired gaps with 95% CIs. No evaluation encoder or sampling needed."""
    import json

    import torch

    from unicxr.eval.conditioning import evaluate_conditioning, render_conditioning
    from unicxr.utils.io import atomic_write_text

    if num_threads:
        torch.set_num_threads(num_threads)
    res = evaluate_conditioning(model, cache, split=split, max_images=max_images, batch_size=batch_size,
                                repeats=repeats, seed=seed, device=device, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    md = render_conditioning(res)
    atomic_write_text(out / "conditioning.json", json.dumps(res, indent=2))
    atomic_write_text(out / "conditioning.md", md)
    typer.echo(md)
    typer.echo(f"wrote {out / 'conditioning.json'}, {out / 'conditioning.md'}", err=True)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``eval images``, ``eval reports``, ``eval classifier`` and ``eval sanity`` to the ``eval`` group."""
    groups["eval"].command("images")(images_command)
    groups["eval"].command("reports")(reports_command)
    groups["eval"].command("classifier")(classifier_command)
    groups["eval"].command("sanity")(sanity_command)
    groups["eval"].command("recon")(recon_command)
    groups["eval"].command("laterality")(laterality_command)
    groups["eval"].command("conditioning")(conditioning_command)
    from unicxr.eval.realism_cli import realism_command

    groups["eval"].command("realism")(realism_command)
    return {"eval"}
