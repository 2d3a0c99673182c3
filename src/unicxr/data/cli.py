"""``unicxr prepare``: read a data set, clean it and write the preprocessed cache."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "prepare"]

_FORMATS = "phantom, mimic-cxr-jpg, chexpert, iu-xray, padchest, nih, folder"


def prepare(
    fmt: str = typer.Option(..., "--format", "-f", help=f"Data set layout: {_FORMATS}."),
    root: Path = typer.Option(..., "--root", "-r", help="Root folder of the data set."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder to write (resumed if it holds the same plan)."),
    size: int = typer.Option(256, "--size", help="Side of the square cached images in pixels."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="Stored precision: 8 (uint8) or 16 (uint16)."),
    fit: str = typer.Option("pad", "--fit", help="Aspect-preserving fit: pad (whole image, black borders) or crop (centre square)."),
    views: str = typer.Option("frontal", "--views", help="frontal (drop known lateral/other views; unknown kept) or all."),
    workers: int = typer.Option(2, "--workers", help="Decoding processes (0 or 1 = in this process)."),
    shard_size: int = typer.Option(0, "--shard-size", help="Images per shard file (0 = about 256 MB per shard)."),
    csv: Path | None = typer.Option(None, "--csv", help="folder format: CSV with a path column and report/label columns."),
    label_source: str = typer.Option("chexpert", "--labels", help="mimic-cxr-jpg: label file to use, chexpert or negbio."),
    report_text: str = typer.Option(
        "findings-impression", "--report-text", help="findings-impression (training text) or full (whole cleaned report)."
    ),
    require_report: bool = typer.Option(False, "--require-report", help="Drop images without a usable report."),
    min_report_words: int = typer.Option(3, "--min-report-words", help="With --require-report: drop shorter reports."),
    max_report_words: int = typer.Option(300, "--max-report-words", help="Cap reports at this many words (0 = no cap)."),
    one_per_study: bool = typer.Option(False, "--one-per-study", help="Keep one image per study (PA preferred)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient-level split for sources without one."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of patients in validate (when splitting)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Fraction of patients in test (when splitting)."),
    limit: int | None = typer.Option(None, "--limit", help="Cache only the first N images after cleaning (quick tries)."),
    max_pixels: int = typer.Option(60_000_000, "--max-pixels", help="Reject images with more pixels (decompression-bomb guard)."),
    max_file_mb: float = typer.Option(512.0, "--max-file-mb", help="Reject files larger than this many MB."),
    timeout: float = typer.Option(120.0, "--timeout", help="Reject a file whose decoding takes longer (seconds)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cache made with other settings."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Decode, clean and cache a chest X-ray data set for fast training.

    Writes OUT/shards/*.npy (uint8/uint16 N×SIZE×SIZE), OUT/index.parquet (labels, report, view,
    patient, split, source path, shard, offset), OUT/rejects.csv (path,reason) and OUT/cache.json.
    Bad files (truncated, empty, not an image, decompression bombs, unsupported DICOM transfer
    syntax) are rejected with a reason; the run still succeeds. Re-running resumes.
    Read it back with `from unicxr.data import CXRCache; CXRCache(OUT, split="train")[0]`.
    """
    from unicxr.data.cache import PrepareConfig, prepare_cache
    from unicxr.data.io import DecodeLimits
    from unicxr.data.sources import SOURCES, SourceOptions
    from unicxr.utils import UnicxrError

    key = fmt.strip().lower().replace("_", "-")
    if key not in SOURCES:
        raise UnicxrError(f"--format: unknown format {fmt!r}; expected one of: {_FORMATS}")
    if label_source not in ("chexpert", "negbio"):
        raise UnicxrError(f"--labels: must be chexpert or negbio, got {label_source!r}")
    if report_text not in ("findings-impression", "full"):
        raise UnicxrError(f"--report-text: must be findings-impression or full, got {report_text!r}")
    if max_pixels < 1 or max_file_mb <= 0:
        raise UnicxrError("--max-pixels/--max-file-mb: must be positive")
    cfg = PrepareConfig(
        fmt=key,
        root=root,
        out=out,
        size=size,
        bit_depth=bit_depth,
        fit=fit,
        views=views,
        workers=workers,
        shard_size=shard_size,
        require_report=require_report,
        min_report_words=min_report_words,
        max_report_words=max_report_words,
        one_per_study=one_per_study,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        limit=limit,
        timeout_s=timeout,
        limits=DecodeLimits(max_pixels=max_pixels, max_file_bytes=int(max_file_mb * 1024 * 1024)),
        source=SourceOptions(
            csv=csv, label_source=label_source, report_text=report_text, seed=seed, val_fraction=val_fraction
        ),
        overwrite=overwrite,
    )
    prepare_cache(cfg, log=typer.echo, progress=progress)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> set[str]:
    """Add ``unicxr prepare`` to the root app."""
    app.command("prepare")(prepare)
    return set()
