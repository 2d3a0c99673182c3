"""Labelled contact sheets of phantom cases."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unicxr.labels import FINDINGS
from unicxr.utils.io import atomic_write_bytes

__all__ = ["contact_sheet", "caption_for", "showcase", "SHORT"]

SHORT = {
    "No Finding": "normal", "Enlarged Cardiomediastinum": "ECM", "Cardiomegaly": "cardiomeg", "Lung Opacity": "opacity",
    "Lung Lesion": "lesion", "Edema": "edema", "Consolidation": "consol", "Pneumonia": "pneumonia",
    "Atelectasis": "atelect", "Pneumothorax": "PTX", "Pleural Effusion": "effusion", "Pleural Other": "pl.other",
    "Fracture": "fracture", "Support Devices": "devices",
}


def caption_for(labels: Sequence[float]) -> str:
    """Short caption listing positive (and ``?`` uncertain) findings of a (14,) label vector."""
    parts = []
    for name, v in zip(FINDINGS, labels, strict=True):
        if name == "No Finding":
            continue
        if v == 1.0:
            parts.append(SHORT[name])
        elif v == -1.0:
            parts.append(SHORT[name] + "?")
    return ", ".join(parts) if parts else "normal"


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, cols: int = 4,
                  tile: int = 256) -> Path:
    """Write a grid of images (each (H, W) float in [0, 1] or uint8) with a caption under each.

    Returns:
        The written path (PNG).
    """
    import io

    from PIL import Image, ImageDraw, ImageFont

    n = len(images)
    if n == 0:
        raise ValueError("contact_sheet needs at least one image")
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    cap_h = 30
    sheet = Image.new("L", (cols * tile, rows * (tile + cap_h)), color=0)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            arr = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)
        im = Image.fromarray(arr, mode="L").resize((tile, tile), Image.BILINEAR)
        r, c = divmod(i, cols)
        sheet.paste(im, (c * tile, r * (tile + cap_h)))
        words = cap.split(", ")
        lines, cur = [], ""
        for w in words:
            if len(cur) + len(w) + 2 > tile // 6:
                lines.append(cur)
                cur = w
            else:
                cur = f"{cur}, {w}" if cur else w
        lines.append(cur)
        for j, line in enumerate(lines[:2]):
            draw.text((c * tile + 3, r * (tile + cap_h) + tile + 2 + 13 * j), line, fill=255, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def showcase(path: str | Path, seed: int = 0, size: int = 256, severity: str = "moderate") -> Path:
    """Contact sheet of 16 cases: a normal study, each of the 13 findings alone, and two random studies.

    Findings are drawn at ``severity`` (devices have none); captions list the ground-truth labels.
    """
    from unicxr.phantom.simulate import simulate

    images, caps = [], []
    names: list[str | None] = [None, *FINDINGS[1:], "random", "random"]
    for i, name in enumerate(names):
        if name is None:
            case = simulate(seed + i, size, findings={}, masks=False)
        elif name == "random":
            case = simulate(seed + i, size, masks=False)
        else:
            case = simulate(seed + i, size, findings={name: "" if name == "Support Devices" else severity}, masks=False)
        images.append(case.image)
        caps.append(caption_for(case.labels.tolist()) + f" [{case.params['acq_view']}]")
    return contact_sheet(images, caps, path, cols=4, tile=size)


if __name__ == "__main__":  # python -m unicxr.phantom.preview OUT.png [SEED] [SIZE] [SEVERITY]
    import sys

    argv = sys.argv[1:]
    out = showcase(argv[0] if argv else "phantom_showcase.png", int(argv[1]) if len(argv) > 1 else 0,
                   int(argv[2]) if len(argv) > 2 else 256, argv[3] if len(argv) > 3 else "moderate")
    print(out)
