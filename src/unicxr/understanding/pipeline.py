"""Read radiographs: a saved understanding model → reports, labels and finding probabilities.

:class:`ReportPipeline` wraps either kind of model:

* a report writer (``cxr_report_generator``, ``unified``: any model with ``generate_reports``) —
  decoded report text (greedy / beam / nucleus) and, when it has a finding head (the report
  generator's auxiliary head), per-finding probabilities;
* ``cxr_finding_classifier`` — probabilities, thresholded labels and the template report written
  from them (:mod:`unicxr.text.templates`; the template baseline).

Every report is then labelled by the rule labeler, so both kinds give the same 14 label columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unicxr.labels import FINDINGS
from unicxr.utils.errors import UnicxrError

__all__ = ["resolve_model_dir", "ReportPipeline", "ReadResult"]


def resolve_model_dir(path: str | Path) -> Path:
    """A run folder (``model_ema/`` preferred, else ``model/``) or a model directory itself."""
    from unicxr.models import resolve_model_dir as resolve

    return resolve(path)


@dataclass
class ReadResult:
    """What the pipeline says about one image."""

    report: str
    labels: np.ndarray  # (14,) labeler output on the report (1/0/-1/NaN)
    probabilities: np.ndarray | None  # (14,) or None


class ReportPipeline:
    """Load a model once, then :meth:`read` batches of images (B, 1, H, W) in [0, 1].

    Args:
        model: run folder or model directory.
        device: torch device.
        decode: :class:`~unicxr.sampling.decoding.DecodeConfig` for report generators (default greedy).
        seed: seed of nucleus sampling (same seed ⇒ same reports).
    """

    def __init__(self, model: str | Path, device: str = "cpu", decode: Any = None, seed: int = 0) -> None:
        from unicxr.models import load_model

        self.model_dir = resolve_model_dir(model)
        self.model = load_model(self.model_dir, device=device).eval()
        self.kind = self.model.model_type
        # a report writer has generate_reports(images, decode, generator) (report generator, unified
        # model); a finding classifier has probabilities() (template reports)
        self.writes_reports = callable(getattr(self.model, "generate_reports", None))
        if not self.writes_reports and self.kind != "cxr_finding_classifier":
            raise UnicxrError(
                f"--model {self.model_dir}: model type {self.kind!r} cannot write reports "
                "(expected a report generator, a unified model or a finding classifier)"
            )
        self.image_size = int(self.model.config.image_size)
        self.decode = decode
        self.generator = torch.Generator().manual_seed(int(seed))
        self.device = device

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> list[ReadResult]:
        """Reports, labeler labels and probabilities for images (B, 1, H, W) in [0, 1]."""
        from unicxr.text.labeler import label_reports

        x = images.to(self.device)
        if self.writes_reports:
            out = self.model.generate_reports(x, self.decode, self.generator)
            reports = out["reports"]
            probs = out["probabilities"]
        else:
            from unicxr.text.templates import template_reports

            probs = self.model.probabilities(x).cpu()
            labels = (probs >= self.model.threshold_tensor()).float().numpy()
            reports = template_reports(labels)
        lab = label_reports(list(reports))
        return [
            ReadResult(r, lab[i], None if probs is None else probs[i].numpy().astype(np.float64))
            for i, r in enumerate(reports)
        ]

    def read_batches(self, images: Iterator[tuple[Any, torch.Tensor]], batch_size: int = 16) -> Iterator[tuple[Any, ReadResult]]:
        """Stream (key, image (1, H, W)) pairs → (key, result), batching ``batch_size`` images."""
        keys: list[Any] = []
        buf: list[torch.Tensor] = []
        for key, img in images:
            keys.append(key)
            buf.append(img)
            if len(buf) == batch_size:
                yield from zip(keys, self.read(torch.stack(buf)), strict=True)
                keys, buf = [], []
        if buf:
            yield from zip(keys, self.read(torch.stack(buf)), strict=True)

    def load_file(self, path: str | Path) -> torch.Tensor:
        """Decode a PNG/JPEG/DICOM file to (1, S, S) in [0, 1] at the model's size (aspect kept, padded).

        Raises:
            unicxr.data.io.DecodeError: the file cannot be read.
        """
        from unicxr.data.io import decode_image, resize_square

        arr = decode_image(path, draft_size=self.image_size)
        return torch.from_numpy(resize_square(arr, self.image_size)).unsqueeze(0)


def result_record(path: str, study_id: str, res: ReadResult, names: Sequence[str] = FINDINGS) -> dict[str, Any]:
    """JSON-ready dict of one result."""
    import math

    def lab(v: float) -> int | None:
        return None if math.isnan(float(v)) else int(v)

    rec: dict[str, Any] = {"path": path, "study_id": study_id, "report": res.report,
                           "labels": {n: lab(v) for n, v in zip(names, res.labels, strict=True)}}
    if res.probabilities is not None:
        rec["probabilities"] = {n: round(float(p), 4) for n, p in zip(names, res.probabilities, strict=True)}
    return rec
