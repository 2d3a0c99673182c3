"""``unicxr generate``: prompts → synthetic CXRs on disk, in the format ``unicxr eval images`` reads.

Prompts come from ``--prompt`` (report text; its condition labels are the labeler's), ``--findings``
(``"Cardiomegaly, left Pleural Effusion, no Pneumothorax"``), or ``--prompts`` (a CSV with a
``prompt``/``report``/``text`` column and optional label columns, or a cache + split: one image per
report). Each image is ``OUT/images/NNNNNN.png`` with tEXt chunks (synthetic=true, prompt, seed,
steps, sampler, guidance, model); ``OUT/metadata.csv`` has ``image_path``, ``prompt``, the 14 label
columns of the condition and ``seed``; bad prompt rows go to ``OUT/rejects.csv``. Image ``i`` uses seed
``seed + i`` for its starting noise, so the same arguments give the same bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unicxr.labels import FINDINGS, NUM_FINDINGS
from unicxr.utils.errors import UnicxrError

__all__ = ["Prompt", "read_prompts", "generate_images"]


@dataclass
class Prompt:
    """One condition: report text, labels (14,) (NaN = unspecified), laterality (14,) ints."""

    text: str
    labels: np.ndarray
    laterality: np.ndarray = field(default_factory=lambda: np.zeros(NUM_FINDINGS, np.int64))


def _findings_text(labels: np.ndarray, lat: np.ndarray) -> str:
    from unicxr.models.conditioning import LATERALITY

    parts = []
    for j, name in enumerate(FINDINGS):
        v = labels[j]
        if math.isnan(v) or name == "No Finding":
            continue
        side = LATERALITY[int(lat[j])] + " " if lat[j] else ""
        word = {1.0: "", 0.0: "No ", -1.0: "Possible "}[float(v)]
        parts.append(f"{word}{side}{name.lower()}.".capitalize() if not word else f"{word}{side}{name.lower()}.")
    return "FINDINGS: " + (" ".join(parts) if parts else "No acute cardiopulmonary abnormality.")


def read_prompts(
    prompt: str | None = None,
    findings: str | None = None,
    prompts: str | Path | None = None,
    split: str | None = None,
) -> tuple[list[Prompt], list[tuple[str, str]]]:
    """The prompts of one ``generate`` call and the rejected rows ``(row, reason)``; ``split``
    ``None`` or ``"all"``: every row of ``prompts`` (as the ``eval`` commands read ``all``)."""
    from unicxr.text import label_reports

    split = None if split in ("", "all") else split

    given = [x is not None for x in (prompt, findings, prompts)]
    if sum(given) != 1:
        raise UnicxrError("generate: give exactly one of --prompt, --findings, --prompts")
    if prompt is not None:
        return [Prompt(prompt, label_reports([prompt])[0].astype(np.float32))], []
    if findings is not None:
        from unicxr.models.conditioning import parse_findings_prompt

        labels, lat = parse_findings_prompt(findings)
        return [Prompt(_findings_text(labels, lat), labels, lat)], []
    path = Path(prompts)  # type: ignore[arg-type]
    if (path / "cache.json").is_file():
        from unicxr.data.cache import CXRCache

        cache = CXRCache(path, split=split)
        if len(cache) == 0:
            raise UnicxrError(f"{path}: split {split!r} is empty")
        return [Prompt(cache.report(i), cache.labels[i].copy()) for i in range(len(cache))], []
    if not path.is_file():
        raise UnicxrError(f"{path}: --prompts must be a CSV file or a `unicxr prepare` cache")
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UnicxrError(f"{path}: cannot read CSV ({exc})") from None
    if split is not None:
        if "split" not in df.columns:
            raise UnicxrError(f"{path}: --split given but the CSV has no 'split' column")
        df = df[df["split"] == split]
    col = next((c for c in ("prompt", "report", "text") if c in df.columns), None)
    if col is None:
        raise UnicxrError(f"{path}: needs a 'prompt', 'report' or 'text' column")
    has_labels = any(f in df.columns for f in FINDINGS)
    out, rejects = [], []
    texts = df[col].tolist()
    labeled = None if has_labels else label_reports(texts)
    from unicxr.labels import labels_from_row

    for k, row in enumerate(df.to_dict("records")):
        text = str(row[col]).strip()
        if not text:
            rejects.append((f"{path}:{k + 2}", "empty prompt"))
            continue
        try:
            labels = labels_from_row(row).astype(np.float32) if has_labels else labeled[k].astype(np.float32)
        except ValueError as exc:
            rejects.append((f"{path}:{k + 2}", str(exc)))
            continue
        out.append(Prompt(text, labels))
    if not out:
        raise UnicxrError(f"{path}: no usable prompts ({len(rejects)} rejected)")
    return out, rejects


def network_passes(nfe: int, guidance: float, side_guidance: float = 0.0, finding_guidance: float = 0.0) -> int:
    """Denoiser passes per image for ``nfe`` solver calls: classifier-free guidance other than 1 runs the
    conditional and the null branch at every call (batched together), so twice the NFE; side guidance
    adds the mirrored branch, finding guidance the findings-off branch."""
    return nfe * (1 + (guidance != 1.0) + bool(side_guidance) + bool(finding_guidance))


def _metadata_row(name: str, prompt: Prompt, seed: int) -> dict[str, Any]:
    """metadata.csv row of one image: path, prompt, the 14 prompted label columns, seed."""
    row: dict[str, Any] = {"image_path": name, "prompt": prompt.text}
    for j, f in enumerate(FINDINGS):
        v = prompt.labels[j]
        row[f] = "" if math.isnan(v) else str(int(v))
    row["seed"] = seed
    return row


def _written(path: Path, text: dict[str, str]) -> bool:
    """Whether ``path`` is a readable PNG whose text chunks hold ``text`` (an earlier run's same image)."""
    from PIL import Image

    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            im.load()
            have = dict(getattr(im, "text", {}) or {})
    except (OSError, ValueError, SyntaxError):
        return False
    return all(have.get(k) == v for k, v in text.items())


def generate_images(
    model_path: str | Path,
    prompts: list[Prompt],
    out: str | Path,
    *,
    n: int = 1,
    steps: int | None = None,
    sampler: str | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    rejects: list[tuple[str, str]] | None = None,
    progress: bool = True,
    side_guidance: float = 0.0,
    finding_guidance: float = 0.0,
    negative: str | None = None,
    guidance_rescale: float = 0.0,
    guidance_interval: tuple[float, float] | None = None,
    apg: tuple[float, float] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Sample ``n`` images per prompt into ``out`` (see module docstring); returns a summary.

    ``resume``: a batch whose images are all in ``out`` already, each with this run's PNG text (prompt,
    seed, model, sampler, steps, guidance options), is kept rather than sampled again. Whole batches only,
    so every image has the bytes an uninterrupted run gives; the last batch is always sampled, so the
    summary's NFE is measured. ``images_sampled`` in the summary counts the images sampled by this call.
    """
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from unicxr.models.generator_base import load_generator
    from unicxr.utils.io import atomic_write_text
    from unicxr.utils.media import save_png, to_uint8

    model, model_dir = load_generator(model_path, device=device)
    cfg = model.config
    steps = steps or cfg.default_steps
    sampler = sampler or cfg.default_sampler
    guidance = cfg.default_guidance if guidance is None else guidance
    # recorded as the model will resolve it: None -> its default_apg; (1, 0) ("--apg off") -> plain guidance
    used_apg = model.resolve_apg(apg)
    if model.default_samplers and sampler not in model.default_samplers:
        raise UnicxrError(f"--sampler: {model.model_type} samples with {', '.join(model.default_samplers)}, not {sampler!r}")
    # the guidance options in use, recorded in each PNG and the summary
    extras = {k: v for k, v in (("side_guidance", side_guidance), ("finding_guidance", finding_guidance),
                                ("negative", negative), ("guidance_rescale", guidance_rescale),
                                ("guidance_interval", guidance_interval), ("apg", used_apg)) if v}
    for key in extras:
        if not model.contrast_guidance_ok:
            raise UnicxrError(f"--{key.replace('_', '-')}: {model.model_type} has no guidance branches to shape "
                              "(ldm_unet and latent_dit have)")
    if not 0.0 <= guidance_rescale <= 1.0:
        raise UnicxrError(f"--guidance-rescale: must be in [0, 1], got {guidance_rescale}")
    for key in ("guidance_interval", "apg"):  # recorded as the CLI writes them
        if key in extras:
            extras[key] = ",".join(f"{v:g}" for v in extras[key])
    neg_labels = None
    if negative:
        from unicxr.models.conditioning import parse_findings_prompt

        neg_labels, _ = parse_findings_prompt(negative)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(p, k) for p in prompts for k in range(n)]
    rows: list[dict[str, Any]] = []
    nfe_used = 0
    bar = tqdm(total=len(jobs), desc="generate", unit="img", disable=not progress)
    sampled = 0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        seeds = [seed + start + i for i in range(len(chunk))]
        texts = []
        for (p, _), s in zip(chunk, seeds, strict=True):
            text = {"prompt": p.text, "seed": str(s), "steps": str(steps), "sampler": sampler,
                    "guidance": str(guidance), "model": str(model_dir)}
            texts.append({**text, **{k: str(v) for k, v in extras.items()}})
        names = [f"images/{start + i:06d}.png" for i in range(len(chunk))]
        last = start + batch_size >= len(jobs)
        if resume and not last and all(_written(out / nm, t) for nm, t in zip(names, texts, strict=True)):
            rows += [_metadata_row(nm, p, s) for nm, (p, _), s in zip(names, chunk, seeds, strict=True)]
            bar.update(len(chunk))
            continue
        labels = np.stack([p.labels for p, _ in chunk])
        lat = np.stack([p.laterality for p, _ in chunk])
        with torch.no_grad():
            images, nfe_used = model.generate(labels, [p.text for p, _ in chunk], laterality=lat, steps=steps,
                                              sampler=sampler, guidance=guidance, seed=seeds,
                                              side_guidance=side_guidance, finding_guidance=finding_guidance,
                                              guidance_rescale=guidance_rescale, guidance_interval=guidance_interval,
                                              guidance_apg=apg,
                                              negative_labels=None if neg_labels is None else
                                              np.repeat(neg_labels[None], len(chunk), 0))
        for i, ((p, _), s) in enumerate(zip(chunk, seeds, strict=True)):
            save_png(out / names[i], to_uint8(images[i]), texts[i], synthetic=True,
                     source=f"generate ({model.model_type})")
            rows.append(_metadata_row(names[i], p, s))
        sampled += len(chunk)
        bar.update(len(chunk))
    bar.close()
    atomic_write_text(out / "metadata.csv", pd.DataFrame(rows).to_csv(index=False))
    rej = rejects or []
    atomic_write_text(out / "rejects.csv", "path,reason\n" + "".join(f'"{a}","{b}"\n' for a, b in rej))
    # counted by the families whose guided function runs the branches (a guidance interval runs fewer on some
    # steps); the others run the branches of :func:`network_passes` at every call
    passes = (model.network_passes if model.network_passes is not None
              else network_passes(nfe_used, guidance, side_guidance, finding_guidance))
    summary = {"model": str(model_dir), "model_type": model.model_type, "images": len(rows),
               "images_sampled": sampled, "prompts": len(prompts),
               "steps": steps, "sampler": sampler, "guidance": guidance, "nfe_per_image": nfe_used,
               "network_passes_per_image": passes, "rejected": len(rej),
               "synthetic": True}
    summary.update(extras)
    atomic_write_text(out / "generate.json", json.dumps(summary, indent=2) + "\n")
    return summary
