"""Deterministic patient-level splits and split-name normalisation.

A patient's split depends only on ``(seed, patient_id)`` (a SHA-256 hash), so it is the same on every
machine, in every process and whatever other patients are present: all images of a patient land in
the same split and adding data never moves an existing patient.
"""

from __future__ import annotations

import hashlib

__all__ = ["SPLITS", "normalize_split", "patient_unit", "patient_split"]

SPLITS: tuple[str, ...] = ("train", "validate", "test")

_ALIASES = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "validate": "validate",
    "validation": "validate",
    "valid": "validate",
    "val": "validate",
    "dev": "validate",
    "test": "test",
    "testing": "test",
    "te": "test",
}


def normalize_split(name: object) -> str | None:
    """Canonical split name (``train``/``validate``/``test``) or None for blank/unknown values."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if not key or key in ("nan", "none"):
        return None
    return _ALIASES.get(key)


def patient_unit(patient_id: str, seed: int = 0) -> float:
    """A number in [0, 1) that is a fixed pseudo-random function of ``(seed, patient_id)``."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def patient_split(patient_id: str, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Assign a patient to ``train``, ``validate`` or ``test`` deterministically.

    Args:
        patient_id: the patient identifier (any string).
        seed: changes the assignment of every patient.
        val_fraction: expected fraction of patients in ``validate``.
        test_fraction: expected fraction of patients in ``test``.

    Returns:
        The split name.
    """
    if not (0.0 <= val_fraction and 0.0 <= test_fraction and val_fraction + test_fraction <= 1.0):
        raise ValueError(f"invalid split fractions val={val_fraction}, test={test_fraction}")
    u = patient_unit(patient_id, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "validate"
    return "train"
