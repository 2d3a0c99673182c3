"""Acquisition: attenuation -> detected intensity (scatter, quantum noise) -> processed radiograph.

The processing chain mimics a digital radiography system: log transform, histogram-based auto
window, a contrast (sigmoid/gamma) curve, unsharp masking / equalization, side marker and
collimation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from unicxr.phantom.grid import blur, blur_large, percentiles

__all__ = ["Acquisition", "sample_acquisition", "expose", "draw_marker", "bone_texture"]

# 5x7 bitmap glyphs of the lead side markers
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


@dataclass(frozen=True)
class Acquisition:
    """Projection and processing parameters of one exposure.

    Attributes:
        view: ``PA`` or ``AP``.
        zoom: field-of-view scale (> 1 crops tighter).
        tilt: in-plane rotation (radians).
        shift_x, shift_y: image-space shift of the patient.
        rotation: axial rotation expressed as spine offset from the mediastinum (canonical units).
        mu: effective attenuation coefficient (lower = higher kVp, less contrast).
        scatter: scatter-to-primary fraction (higher without a grid, AP portable).
        dose: photons per pixel at 256 px (quantum noise level).
        gamma: display gamma.
        contrast: slope of the sigmoid display curve.
        usm: unsharp-mask gain (equalization strength).
        usm_sigma: unsharp-mask radius as a fraction of the image side.
        collimate: fraction of the width collimated off on each side (0 = none).
        marker: side marker letter and corner (``L`` at top right, etc.) or ``""``.
        white: display value of the densest anatomy (processing leaves headroom below 1.0).
    """

    view: str
    zoom: float
    tilt: float
    shift_x: float
    shift_y: float
    rotation: float
    mu: float
    scatter: float
    dose: float
    gamma: float
    contrast: float
    usm: float
    usm_sigma: float
    collimate: float
    marker: str
    white: float = 1.0

    def as_params(self) -> dict[str, float | str]:
        """Flat dict (for metadata columns, prefixed ``acq_``)."""
        return {f"acq_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def sample_acquisition(rng: np.random.Generator, view: str) -> Acquisition:
    """Draw exposure/positioning/processing for a view (AP portable: more scatter, rotation, noise)."""
    ap = view == "AP"
    return Acquisition(
        view=view,
        zoom=float(rng.uniform(0.95, 1.08)),
        tilt=float(rng.normal(0, 0.025 if ap else 0.012)),
        shift_x=float(rng.normal(0, 0.03)),
        shift_y=float(rng.normal(0.02, 0.03)),
        rotation=float(rng.normal(0, 0.025 if ap else 0.012)),
        mu=float(rng.uniform(3.6, 4.6)),
        scatter=float(rng.uniform(0.5, 1.0) if ap else rng.uniform(0.2, 0.5)),
        dose=float(rng.uniform(4000, 10000) if ap else rng.uniform(8000, 25000)),
        gamma=float(rng.uniform(0.9, 1.25)),
        contrast=float(rng.uniform(3.0, 5.5)),
        usm=float(rng.uniform(0.15, 0.6)),
        usm_sigma=float(rng.uniform(0.06, 0.14)),
        collimate=float(rng.uniform(0.02, 0.07)) if rng.random() < 0.25 else 0.0,
        marker=str(rng.choice(["L", "R", "L", ""])) + ("" if rng.random() < 0.5 else "*"),
        white=float(rng.uniform(0.9, 1.0)),
    )


@lru_cache(maxsize=4)
def _noise_pool(n: int) -> np.ndarray:
    """Detector noise field (2n, 2n), unit variance, correlated by the detector blur.

    Drawn once per image size from a fixed seed (identical in every worker process); each image
    takes a random window of it, which is much cheaper than drawing fresh Gaussian noise.
    """
    z = np.random.default_rng(0x5EED).standard_normal((2 * n, 2 * n), dtype=np.float32)
    z = blur(z, 0.9)
    z /= z.std()
    z.setflags(write=False)
    return z


def _noise_patch(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random (n, n) window of the noise pool, randomly flipped/transposed (float32)."""
    r, c, o = (int(x) for x in rng.integers(0, [n, n, 8]))
    z = _noise_pool(n)[r : r + n, c : c + n]
    if o & 1:
        z = z[::-1]
    if o & 2:
        z = z[:, ::-1]
    if o & 4:
        z = z.T
    return z


@lru_cache(maxsize=4)
def _trabecular_pool(n: int) -> np.ndarray:
    """Trabecular bone texture (2n, 2n): 1 + a coarse-grained, streaky random pattern (mean 1)."""
    rng = np.random.default_rng(0xB0E)
    z = rng.standard_normal((2 * n, 2 * n), dtype=np.float32)
    # anisotropic grain (trabeculae follow lines of stress) of about 1.5 pixels at 256 px
    z = blur(z, 0.9 * n / 256) + 0.6 * blur(z, 2.0 * n / 256)
    z = 1.0 + 0.12 * z / z.std()
    z.setflags(write=False)
    return z.astype(np.float32)


def bone_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random (n, n) window of the trabecular texture (multiplies the bone thickness map)."""
    r, c = (int(x) for x in rng.integers(0, [n, n]))
    return _trabecular_pool(n)[r : r + n, c : c + n]


def draw_marker(img: np.ndarray, letter: str, right_corner: bool, top: bool, value: float = 1.0) -> None:
    """Burn a lead marker glyph (bright) into ``img`` (H, W) in place."""
    glyph = _GLYPHS.get(letter)
    if glyph is None:
        return
    n = img.shape[0]
    cell = max(1, n // 110)
    bmp = np.array([[c == "1" for c in row] for row in glyph], dtype=bool)
    bmp = np.kron(bmp, np.ones((cell, cell), dtype=bool))
    pad = max(2, n // 40)
    h, w = bmp.shape
    r0 = pad if top else n - pad - h
    c0 = n - pad - w if right_corner else pad
    box = img[r0 : r0 + h + 2 * cell, c0 - cell : c0 + w + cell]
    box[...] = np.maximum(box, 0.12)  # the marker's plastic holder
    img[r0 + cell : r0 + cell + h, c0 : c0 + w][bmp] = value


def expose(
    A: np.ndarray, acq: Acquisition, rng: np.random.Generator, noise_scale: float = 1.0
) -> np.ndarray:
    """Turn a total attenuation map into a processed radiograph.

    Args:
        A: float32 (H, W) line-integral of attenuation in soft-tissue units.
        acq: exposure and processing parameters.
        rng: noise generator.
        noise_scale: multiplier of quantum noise.

    Returns:
        float32 (H, W) image in [0, 1] (bright = attenuating, as radiographs are displayed).
    """
    n = A.shape[0]
    P = np.exp(-acq.mu * A)
    inten = acq.scatter * blur_large(P, 0.12 * n)
    inten += P
    # quantum noise: Poisson-like, relative noise grows where few photons arrive
    photons = acq.dose * (256.0 / n) ** 2
    z = _noise_patch(rng, n)
    q = np.maximum(inten, 1e-6)
    q /= photons
    np.sqrt(q, out=q)
    q *= 0.45 * noise_scale
    q *= z
    inten += q
    L = np.maximum(inten, 1e-4, out=inten)
    np.log(L, out=L)
    np.negative(L, out=L)
    # histogram-based auto window on a subsample
    sub = L[:: 4, :: 4].ravel()
    lo, hi = percentiles(sub, (0.5, 99.7))
    x = L - np.float32(lo)  # float32 throughout the display chain
    x /= np.float32(max(hi - lo, 1e-3))
    # equalization / unsharp masking (processing of digital systems): large-scale dynamic range is
    # compressed so dense regions (mediastinum, abdomen) keep visible gradation instead of saturating:
    # x <- 0.02 + 0.96 x + usm (x - low) - (0.02 + 0.12 usm) (low - 0.5)
    low = blur_large(x, acq.usm_sigma * n)
    y = 0.96 * x
    y += 0.02
    x -= low
    x *= acq.usm
    y += x
    low -= 0.5
    low *= 0.02 + 0.12 * acq.usm
    y -= low
    np.clip(y, 0.0, 1.2, out=y)
    np.power(y, acq.gamma, out=y)
    # sigmoid contrast curve normalised to map [0, 1] -> [0, 1]: (1 / (1 + exp(-k (x - 0.5))) - s0) / (s1 - s0)
    k = acq.contrast
    s0, s1 = 1 / (1 + math.exp(k * 0.5)), 1 / (1 + math.exp(-k * 0.5))
    y -= 0.5
    y *= -k
    np.exp(y, out=y)
    y += 1.0
    np.divide(1.0, y, out=y)
    y -= s0
    y /= s1 - s0
    # soft shoulder above 0.9 (dense abdomen and spine keep some gradation), then the white level
    hi_ = y > 0.9
    y[hi_] = 0.9 + 0.1 * np.tanh((y[hi_] - 0.9) / 0.1)
    y *= acq.white
    if acq.collimate > 0:
        c = int(acq.collimate * n)
        y[:, :c] = np.maximum(y[:, :c], 0.92)
        y[:, n - c :] = np.maximum(y[:, n - c :], 0.92)
    if acq.marker:
        letter = acq.marker[0]
        # the marker marks the patient's side: L on the image right of a PA view
        draw_marker(y, letter, right_corner=(letter == "L"), top=not acq.marker.endswith("*"), value=0.98)
    np.clip(y, 0.0, 1.0, out=y)
    return y.astype(np.float32)
