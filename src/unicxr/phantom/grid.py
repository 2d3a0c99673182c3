"""Coordinate grids, splatting and small profile helpers shared by the phantom renderers.

Canonical patient coordinates: ``u`` runs from -1 (image left = patient's right on a PA view) to +1,
``v`` from -1 (top) to +1 (bottom). A per-case affine (zoom, in-plane tilt, shift) maps canonical
coordinates to image coordinates; every structure is evaluated analytically on the canonical grid
``(U, V)`` so rendering happens directly at the target size with no resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

__all__ = ["Grid", "base_grid", "tube", "smoothstep", "blur", "blur_large", "upsample", "ellipsoid", "percentiles"]


@lru_cache(maxsize=8)
def base_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre image coordinates in [-1, 1] for a square image.

    Returns:
        ``(x, y)``: float32 arrays of shape (size,) for columns and rows.
    """
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    c.setflags(write=False)
    return c, c


@dataclass
class Grid:
    """Canonical coordinates of every pixel of one case.

    Attributes:
        size: image side in pixels.
        zoom: canonical-to-image scale (> 1 zooms in).
        tilt: in-plane rotation in radians (positive = clockwise on screen).
        shift: (dx, dy) image-space shift of the canonical origin, in [-1, 1] units.
        U, V: float32 (size, size) canonical coordinates of each pixel.
    """

    size: int
    zoom: float = 1.0
    tilt: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        x, y = base_grid(self.size)
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        xs = (x - self.shift[0]) / self.zoom
        ys = (y - self.shift[1]) / self.zoom
        # inverse rotation of image coordinates gives canonical coordinates
        self.U = (c * xs[None, :] + s * ys[:, None]).astype(np.float32)
        self.V = (-s * xs[None, :] + c * ys[:, None]).astype(np.float32)
        self.px = 2.0 / (self.size * self.zoom)  # canonical units per pixel

    # --- canonical -> pixel -------------------------------------------------------------------
    def to_pixel(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map canonical points to fractional pixel (row, col) coordinates (arrays of any shape)."""
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        if isinstance(u, float) and isinstance(v, float) or np.ndim(u) == 0 and np.ndim(v) == 0:
            x = (c * u - s * v) * self.zoom + self.shift[0]
            y = (s * u + c * v) * self.zoom + self.shift[1]
            return (y + 1.0) * 0.5 * self.size - 0.5, (x + 1.0) * 0.5 * self.size - 0.5
        # the same operations in the same order as the scalar form, in place: (x + 1) * 0.5 * size - 0.5
        col = np.asarray(c * u - s * v)
        row = np.asarray(s * u + c * v)
        for a, sh in ((col, self.shift[0]), (row, self.shift[1])):
            a *= self.zoom
            a += sh
            a += 1.0
            a *= 0.5
            a *= self.size
            a -= 0.5
        return row, col

    def box(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the canonical rectangle [u0, u1] x [v0, v1] (None when off-image)."""
        corners = [self.to_pixel(float(u), float(v)) for u, v in ((u0, v0), (u1, v0), (u0, v1), (u1, v1))]
        r = [rc[0] for rc in corners]
        c = [rc[1] for rc in corners]
        r0, r1 = max(int(math.floor(min(r))) - 1, 0), min(int(math.ceil(max(r))) + 2, self.size)
        c0, c1 = max(int(math.floor(min(c))) - 1, 0), min(int(math.ceil(max(c))) + 2, self.size)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def splat(
        self, u: np.ndarray, v: np.ndarray, w: np.ndarray | float, out: np.ndarray, layer: np.ndarray | None = None,
        origin: tuple[int, int] = (0, 0),
    ) -> None:
        """Add weights ``w`` at canonical points ``(u, v)`` into ``out``, bilinear.

        ``out`` is (size, size), or a window (h, w) of the image whose top-left pixel is ``origin``
        (row, col). With ``layer`` (int array like ``u``), ``out`` is a stack (K, h, w) and each
        point goes to its own layer (one pass for several maps).
        """
        r, c = self.to_pixel(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
        self.splat_px(r, c, w, out, layer, origin)

    def splat_px(
        self, r: np.ndarray, c: np.ndarray, w: np.ndarray | float, out: np.ndarray, layer: np.ndarray | None = None,
        origin: tuple[int, int] = (0, 0),
    ) -> None:
        """:meth:`splat` at fractional pixel coordinates ``(r, c)`` (float64, any shape) of the image."""
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), r.shape).ravel()
        r = r.ravel() - origin[0]
        c = c.ravel() - origin[1]
        r0 = np.floor(r)
        c0 = np.floor(c)
        fr = r - r0
        fc = c - c0
        ri = r0.astype(np.int64)
        ci = c0.astype(np.int64)
        nr, nc = out.shape[-2:]
        m = ri.size
        # the four corners of every point, in blocks (top-left, top-right, bottom-left, bottom-right):
        # np.bincount adds each pixel's contributions in this order
        w0 = w * (1 - fr)
        w1 = w * fr
        gc = 1 - fc
        ww = np.empty(4 * m)
        np.multiply(w0, gc, out=ww[:m])
        np.multiply(w0, fc, out=ww[m : 2 * m])
        np.multiply(w1, gc, out=ww[2 * m : 3 * m])
        np.multiply(w1, fc, out=ww[3 * m :])
        base = ri * nc
        base += ci
        if layer is not None:
            base += np.asarray(layer, dtype=np.int64).ravel() * (nr * nc)
        flat = np.empty(4 * m, dtype=np.int64)
        flat[:m] = base
        np.add(base, 1, out=flat[m : 2 * m])
        np.add(base, nc, out=flat[2 * m : 3 * m])
        np.add(base, nc + 1, out=flat[3 * m :])
        if m and (ri.min() < 0 or ri.max() + 1 >= nr or ci.min() < 0 or ci.max() + 1 >= nc):
            rr = np.concatenate([ri, ri, ri + 1, ri + 1])
            cc = np.concatenate([ci, ci + 1, ci, ci + 1])
            ok = (rr >= 0) & (rr < nr) & (cc >= 0) & (cc < nc)
            if not np.any(ok):
                return
            flat, ww = flat[ok], ww[ok]
        elif m == 0:
            return
        acc = np.bincount(flat, weights=ww, minlength=out.size)
        out += acc.reshape(out.shape).astype(np.float32)


def tube(d: np.ndarray, inner: float = 0.0, core: float = 0.0) -> np.ndarray:
    """Projected chord length of a (hollow) cylinder of radius 1 at normalized distance ``d``.

    ``inner`` is the radius of the marrow cavity; its chord is weighted by ``core`` (0 = hollow),
    which gives bones a bright cortical rim and a lighter centre.
    """
    d2 = np.minimum(d * d, 1.0)
    outer = np.sqrt(1.0 - d2)
    if inner <= 0:
        return outer
    i2 = inner * inner
    cav = np.sqrt(np.maximum(i2 - d2, 0.0))
    return outer - (1.0 - core) * cav


def ellipsoid(du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Projected thickness profile ``sqrt(1 - r^2)`` of an ellipsoid given normalized offsets."""
    return np.sqrt(np.maximum(1.0 - du * du - dv * dv, 0.0))


def percentiles(a: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(a, qs)`` (linear method) of a 1-D array after one sort, without numpy's generic path.

    The same arithmetic as numpy's: virtual index ``(n - 1) q / 100``, the difference of the two
    neighbours in ``a``'s dtype, then its two-sided lerp in float64.
    """
    s = np.sort(a)
    n = s.size
    out = []
    for q in qs:
        vi = (n - 1) * (q / 100)
        i = min(math.floor(vi), n - 1)
        g = vi - i
        lo, hi = s[i], s[min(i + 1, n - 1)]
        d = float(hi - lo)
        out.append(float(hi) - d * (1 - g) if g >= 0.5 else float(lo) + d * g)
    return out


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Cubic smoothstep clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (reflect border) with ``sigma`` in pixels; identity when sigma < 0.3.

    Args:
        img: float (H, W), often sparse (lines, tubes, vessel trees on a zero background).

    Returns:
        (H, W) of ``img``'s dtype. Only the bounding box of the non-zero pixels, grown by the kernel
        radius, is filtered: the result is bit-identical to filtering the whole image (the pixels
        outside see only zeros, and the zero margin reflects zeros at the box's inner edges).
    """
    if sigma_px < 0.3:
        return img
    rad = int(3.0 * sigma_px + 0.5)  # scipy's kernel half-width at truncate=3
    rows = np.flatnonzero(img.any(axis=1))
    if rows.size == 0:
        return np.zeros_like(img)
    cols = np.flatnonzero(img.any(axis=0))
    h, w = img.shape
    r0, r1 = max(int(rows[0]) - rad, 0), min(int(rows[-1]) + rad + 1, h)
    c0, c1 = max(int(cols[0]) - rad, 0), min(int(cols[-1]) + rad + 1, w)
    if (r1 - r0) * (c1 - c0) > 0.8 * h * w:
        return ndimage.gaussian_filter(img, sigma_px, mode="reflect", truncate=3.0)
    out = np.zeros_like(img)
    out[r0:r1, c0:c1] = ndimage.gaussian_filter(img[r0:r1, c0:c1], sigma_px, mode="reflect", truncate=3.0)
    return out


def blur_large(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Wide Gaussian blur computed on a 4x downsampled copy (for scatter and unsharp masking).

    Args:
        img: float32 (H, W).
        sigma_px: blur sigma in full-resolution pixels (typically 5-20% of the image side).

    Returns:
        float32 (H, W) low-pass image.
    """
    h, w = img.shape
    f = 4 if min(h, w) >= 64 else 1
    if f > 1:
        hh, ww = h // f, w // f
        # block means, summed in the order ``mean(axis=(1, 3))`` uses (within rows, then across)
        # but without its slow strided reduction
        q = img[: hh * f, : ww * f].reshape(hh * f, ww, f)
        t = q[..., 0] + q[..., 1]
        for j in range(2, f):
            t += q[..., j]
        t = t.reshape(hh, f, ww)
        small = t[:, 0] + t[:, 1]
        for i in range(2, f):
            small += t[:, i]
        small /= f * f
    else:
        small = img
    small = ndimage.gaussian_filter(small, sigma_px / f, mode="nearest", truncate=2.5).astype(np.float32)
    if f == 1:
        return small
    return upsample(small, h, w)


@lru_cache(maxsize=32)
def _interp_index(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation indices/weights (pixel-centre aligned, edge clamped): ``i0, i1, 1 - f, f``."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = (x - i0).astype(np.float32)
    return i0, i1, 1 - f, f


def upsample(small: np.ndarray, h: int, w: int, smooth: float = 0.0) -> np.ndarray:
    """Resize a small float32 (h0, w0) array to (h, w) with separable linear interpolation.

    ``smooth`` > 0 first blurs the small array by that many (small-grid) pixels. No BLAS is used, so
    this stays fast when many processes share few cores.
    """
    a = small.astype(np.float32)
    if smooth > 0:
        a = ndimage.gaussian_filter(a, smooth, mode="reflect", truncate=2.5)
    i0, i1, f0, f = _interp_index(h, a.shape[0])
    rows = a[i0] * f0[:, None]
    rows += a[i1] * f[:, None]
    j0, j1, g0, g = _interp_index(w, a.shape[1])
    out = rows[:, j0] * g0[None, :]
    out += rows[:, j1] * g[None, :]
    return out
