"""Phantom configuration: finding prevalence, co-occurrence, uncertainty and acquisition mix."""

from __future__ import annotations

from dataclasses import dataclass, field

from unicxr.labels import FINDINGS
from unicxr.utils.errors import UnicxrError

__all__ = ["PhantomConfig", "DEFAULT_PREVALENCE", "parse_prevalence", "PATHOLOGIES"]

PATHOLOGIES: tuple[str, ...] = FINDINGS[1:]

# Base rates of each finding *before* co-occurrence boosts (see findings.sample_findings); the
# resulting marginals are close to frontal-view MIMIC-CXR/CheXpert figures.
DEFAULT_PREVALENCE: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.05,
    "Cardiomegaly": 0.14,
    "Lung Opacity": 0.1,
    "Lung Lesion": 0.06,
    "Edema": 0.07,
    "Consolidation": 0.05,
    "Pneumonia": 0.07,
    "Atelectasis": 0.1,
    "Pneumothorax": 0.08,
    "Pleural Effusion": 0.12,
    "Pleural Other": 0.03,
    "Fracture": 0.04,
    "Support Devices": 0.26,
}

# probability that a present finding is subtle and reported with a hedge (label -1)
DEFAULT_UNCERTAIN: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.2,
    "Cardiomegaly": 0.08,
    "Lung Opacity": 0.08,
    "Lung Lesion": 0.1,
    "Edema": 0.1,
    "Consolidation": 0.1,
    "Pneumonia": 0.3,
    "Atelectasis": 0.15,
    "Pneumothorax": 0.05,
    "Pleural Effusion": 0.06,
    "Pleural Other": 0.1,
    "Fracture": 0.15,
    "Support Devices": 0.0,
}

# probability that an absent finding is explicitly negated in the report (label 0, else blank)
DEFAULT_NEGATE: dict[str, float] = {
    "Enlarged Cardiomediastinum": 0.45,
    "Cardiomegaly": 0.7,
    "Lung Opacity": 0.15,
    "Lung Lesion": 0.1,
    "Edema": 0.45,
    "Consolidation": 0.65,
    "Pneumonia": 0.15,
    "Atelectasis": 0.05,
    "Pneumothorax": 0.8,
    "Pleural Effusion": 0.8,
    "Pleural Other": 0.02,
    "Fracture": 0.2,
    "Support Devices": 0.0,
}


@dataclass
class PhantomConfig:
    """Knobs of the simulator (all probabilities in [0, 1]).

    Attributes:
        prevalence: base rate of each finding (keys: the 13 pathology names of ``unicxr.labels.FINDINGS``).
        uncertain: probability that a present finding is subtle and hedged (label -1).
        negate: probability that an absent finding is explicitly negated (label 0 instead of blank).
        p_ap: probability of an AP (portable) view; devices make AP more likely.
        studies_per_patient: probabilities of 1, 2, 3, 4 studies per patient.
        split: train/validate/test fractions (patient level).
        noise: quantum-noise scale multiplier (1 = default dose).
    """

    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    uncertain: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_UNCERTAIN))
    negate: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NEGATE))
    p_ap: float = 0.3
    studies_per_patient: tuple[float, ...] = (0.6, 0.2, 0.12, 0.08)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    noise: float = 1.0

    def with_prevalence(self, overrides: dict[str, float]) -> PhantomConfig:
        """Copy with some base rates replaced (names validated)."""
        prev = dict(self.prevalence)
        for k, v in overrides.items():
            if k not in prev:
                raise UnicxrError(f"--prevalence: unknown finding {k!r}; expected one of: {', '.join(prev)}")
            prev[k] = v
        return PhantomConfig(
            prevalence=prev, uncertain=dict(self.uncertain), negate=dict(self.negate), p_ap=self.p_ap,
            studies_per_patient=self.studies_per_patient, split=self.split, noise=self.noise,
        )


def parse_prevalence(items: list[str] | None) -> dict[str, float]:
    """Parse ``["Cardiomegaly=0.3", "pleural_effusion=0.2"]`` into ``{finding: rate}``.

    Finding names are matched case-insensitively, with ``_`` or ``-`` accepted for spaces.
    Raises :class:`UnicxrError` naming the bad item.
    """
    out: dict[str, float] = {}
    lookup = {name.lower(): name for name in PATHOLOGIES}
    for item in items or []:
        if "=" not in item:
            raise UnicxrError(f"--prevalence {item!r}: expected KEY=VALUE, e.g. Cardiomegaly=0.3")
        key, val = item.split("=", 1)
        name = lookup.get(key.strip().replace("_", " ").replace("-", " ").lower())
        if name is None:
            raise UnicxrError(f"--prevalence {item!r}: unknown finding {key!r}; expected one of: {', '.join(PATHOLOGIES)}")
        try:
            rate = float(val)
        except ValueError:
            raise UnicxrError(f"--prevalence {item!r}: value {val!r} is not a number") from None
        if not 0.0 <= rate <= 1.0:
            raise UnicxrError(f"--prevalence {item!r}: value must be in [0, 1], got {rate}")
        out[name] = rate
    return out
