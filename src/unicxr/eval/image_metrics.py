"""Distribution metrics between feature sets: FD, KID, MMD, PRDC, per-finding FD, MS-SSIM diversity.

Every statistic is computed once over the *full* sets (never averaged over shards) in float64, and
comes with a seeded percentile-bootstrap confidence interval where asked.

* **FD** (Fréchet distance, "FID" when the features are Inception's):
  ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})``. The last trace is computed without
  a general (non-symmetric) matrix square root: for any factorisations ``S_a = F_a^T F_a`` and
  ``S_b = F_b^T F_b``, the eigenvalues of ``S_a S_b`` are the squared singular values of
  ``F_a F_b^T``, so ``tr((S_a S_b)^{1/2}) = ||F_a F_b^T||_*`` (nuclear norm). ``F`` is the symmetric
  PSD square root from an eigen-decomposition (negative round-off eigenvalues clipped) or, when
  N - 1 < D, the centred data itself. This is real by construction, exact for singular covariances
  (no epsilon on the diagonal) and agrees with ``scipy.linalg.sqrtm`` where the latter is accurate.
* **KID**: unbiased MMD² with the polynomial kernel ``k(x, y) = (x·y / D + 1)^3``, mean ± std over
  random subsets drawn without replacement (Bińkowski et al. 2018).
* **MMD**: unbiased MMD² with a Gaussian kernel (median-heuristic bandwidth) or the polynomial kernel.
* **PRDC** (Naeem et al. 2020): precision, recall, density, coverage with k-nearest-neighbour balls.
* **MS-SSIM diversity**: mean pairwise MS-SSIM among images generated from one prompt (lower = more
  diverse), through MONAI's ``compute_ms_ssim`` with a kernel/level choice that fits 64–512 px.

Bootstrap CIs: FD resamples both sets with replacement and re-centres the percentile interval on
the estimate (a replicate carries FD's O(D/N) small-sample bias twice; the shift is reported as
``bootstrap_bias``); KID/MMD resample with replacement and
exclude pairs of copies of the same original sample from the within-set sums (so the bootstrap mean
equals the unbiased estimate; near 0 the interval is conservative); PRDC keeps the k-NN balls of the
full sets fixed and resamples the points the averages run over.

Nothing is dropped or clamped silently: a bootstrap result reports ``n_boot_dropped`` (replicates that
were non-finite or whose linear algebra failed, left out of the interval), an FD result reports
``raw_value`` and ``clamped_at_0`` (FD is a squared distance; a negative estimate is round-off or an
inaccurate trace term and is reported as 0), and :func:`compute_feature_metrics` turns both into
``warnings``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SmallSampleWarning",
    "sample_size_warnings",
    "gaussian_stats",
    "trace_sqrt_product",
    "frechet_distance_from_stats",
    "frechet_distance",
    "polynomial_kernel",
    "gaussian_kernel",
    "median_bandwidth",
    "mmd2_unbiased",
    "kid",
    "KIDResult",
    "mmd",
    "prdc",
    "ms_ssim",
    "ms_ssim_params",
    "ms_ssim_diversity",
    "percentile_ci",
    "finite_percentile_ci",
    "bootstrap_fd",
    "bootstrap_mmd2",
    "bootstrap_prdc",
    "conditional_fd",
    "compute_feature_metrics",
    "fd_result_notes",
]

# Entries of the three kernel matrices above which bootstrap works on subsamples instead.
_MAX_KERNEL_ENTRIES = 40_000_000


class SmallSampleWarning(UserWarning):
    """The number of samples is small relative to the feature dimension: FD/KID are biased/noisy."""


def _as_2d_f64(x: Any, name: str) -> np.ndarray:
    """(N, D) float64 array; ``ValueError`` naming ``name`` on a bad shape or non-finite values."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a (N, D) feature array, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 samples, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: features contain NaN or inf")
    return arr


def _check_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a2 = _as_2d_f64(a, "a")
    b2 = _as_2d_f64(b, "b")
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"feature dimensions differ: a has D={a2.shape[1]}, b has D={b2.shape[1]}")
    return a2, b2


def sample_size_warnings(n: int, d: int, name: str = "features", *, emit: bool = True) -> list[str]:
    """Messages (and :class:`SmallSampleWarning` s) when ``n`` samples are few for dimension ``d``.

    FD's bias grows like D/N; with N <= D the covariance estimate is singular. We warn below N = 2D.
    """
    msgs: list[str] = []
    if n <= d:
        msgs.append(
            f"{name}: N={n} samples <= D={d} feature dimensions: the covariance is singular and FD is strongly "
            "biased; compare FDs only at equal N and feature space"
        )
    elif n < 2 * d:
        msgs.append(
            f"{name}: N={n} samples < 2*D={2 * d}: FD/KID are biased upward and noisy; compare only at equal N"
        )
    if emit:
        for m in msgs:
            warnings.warn(m, SmallSampleWarning, stacklevel=2)
    return msgs


# ----------------------------------------------------------------------------------------------------
# Fréchet distance
# ----------------------------------------------------------------------------------------------------
def gaussian_stats(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features ``x`` (N, D), in float64."""
    arr = _as_2d_f64(x, "features")
    mu = arr.mean(axis=0)
    xc = arr - mu
    cov = xc.T @ xc / (arr.shape[0] - 1)
    return mu, cov


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root (D, D) of a symmetric matrix, negative round-off eigenvalues clipped."""
    sym = 0.5 * (cov + cov.T)
    w, v = np.linalg.eigh(sym)
    w = np.clip(w, 0.0, None)
    return (v * np.sqrt(w)) @ v.T


def trace_sqrt_product(
    cov_a: np.ndarray,
    cov_b: np.ndarray,
    *,
    factor_a: np.ndarray | None = None,
    factor_b: np.ndarray | None = None,
) -> float:
    """``tr((cov_a cov_b)^{1/2})`` as the nuclear norm of ``F_a F_b^T`` (see module docstring).

    Args:
        cov_a, cov_b: (D, D) symmetric PSD matrices.
        factor_a, factor_b: optional (r, D) factors with ``F^T F = cov`` (e.g. centred data / sqrt(N-1));
            computed as symmetric square roots when not given.
    """
    fa = _psd_sqrt(cov_a) if factor_a is None else factor_a
    fb = _psd_sqrt(cov_b) if factor_b is None else factor_b
    m = fa @ fb.T
    return float(np.linalg.svd(m, compute_uv=False).sum())


def frechet_distance_from_stats(mu_a: Any, cov_a: Any, mu_b: Any, cov_b: Any) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b); mu (D,), cov (D, D)."""
    mu_a = np.asarray(mu_a, dtype=np.float64)
    mu_b = np.asarray(mu_b, dtype=np.float64)
    cov_a = np.asarray(cov_a, dtype=np.float64)
    cov_b = np.asarray(cov_b, dtype=np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(
            f"inconsistent shapes: mu {mu_a.shape}/{mu_b.shape}, cov {cov_a.shape}/{cov_b.shape}"
        )
    diff = mu_a - mu_b
    tr = trace_sqrt_product(cov_a, cov_b)
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr)
    return max(fd, 0.0)


def _fd_raw(a: np.ndarray, b: np.ndarray) -> float:
    """FD of two validated float64 arrays *before* clamping at 0 (may be slightly negative from round-off).

    Uses data factors when N - 1 < D (cheaper and exact).
    """
    d = a.shape[1]
    mu_a, mu_b = a.mean(0), b.mean(0)
    ac, bc = a - mu_a, b - mu_b
    na, nb = a.shape[0] - 1, b.shape[0] - 1
    cov_a = ac.T @ ac / na
    cov_b = bc.T @ bc / nb
    fa = ac / math.sqrt(na) if na < d else _psd_sqrt(cov_a)
    fb = bc / math.sqrt(nb) if nb < d else _psd_sqrt(cov_b)
    tr = trace_sqrt_product(cov_a, cov_b, factor_a=fa, factor_b=fb)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr)


def _fd_arrays(a: np.ndarray, b: np.ndarray) -> float:
    """FD of two validated float64 arrays, clamped at 0 (use :func:`_fd_raw` to see the clamp)."""
    return max(_fd_raw(a, b), 0.0)


def _fd_replicate(a: np.ndarray, b: np.ndarray) -> float:
    """FD of one bootstrap replicate; NaN (counted as dropped) when the linear algebra fails."""
    try:
        return _fd_arrays(a, b)
    except np.linalg.LinAlgError:
        return float("nan")


def frechet_distance(a: Any, b: Any, *, warn: bool = True) -> float:
    """Fréchet distance between the Gaussians fitted to features ``a`` (N, D) and ``b`` (M, D).

    Computed in float64 over the full sets. Warns (:class:`SmallSampleWarning`) when N or M < 2D.
    A negative estimate (round-off) is returned as 0; :func:`bootstrap_fd` reports the raw value and
    whether it was clamped.
    """
    a2, b2 = _check_pair(a, b)
    if warn:
        sample_size_warnings(min(a2.shape[0], b2.shape[0]), a2.shape[1])
    return _fd_arrays(a2, b2)


# ----------------------------------------------------------------------------------------------------
# Kernel two-sample statistics: KID and MMD
# ----------------------------------------------------------------------------------------------------
def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """``(gamma x·y + coef0)^degree`` for x (N, D), y (M, D) → (N, M); gamma defaults to 1/D."""
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (g * (x @ y.T) + coef0) ** degree


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d2, 0.0)


def gaussian_kernel(x: np.ndarray, y: np.ndarray, *, bandwidth: float) -> np.ndarray:
    """``exp(-|x - y|^2 / (2 bandwidth^2))`` for x (N, D), y (M, D) → (N, M)."""
    return np.exp(-_sq_dists(x, y) / (2.0 * bandwidth * bandwidth))


def median_bandwidth(a: np.ndarray, b: np.ndarray, *, max_points: int = 1000, seed: int = 0) -> float:
    """Median pairwise distance of the pooled sample (at most ``max_points`` points, seeded)."""
    pooled = np.concatenate([a, b], 0)
    if pooled.shape[0] > max_points:
        idx = np.random.default_rng(seed).choice(pooled.shape[0], max_points, replace=False)
        pooled = pooled[idx]
    d2 = _sq_dists(pooled, pooled)
    iu = np.triu_indices(pooled.shape[0], 1)
    med = float(np.sqrt(np.median(d2[iu])))
    return med if med > 0 else 1.0


def _masked_mean(k: np.ndarray, idx: np.ndarray | None) -> float:
    """Mean of a square kernel matrix over pairs of *different original samples*.

    Without ``idx`` that is the off-diagonal mean; with bootstrap indices ``idx`` (n,) pairs whose
    original index coincides (incl. the diagonal) are excluded.
    """
    n = k.shape[0]
    if idx is None:
        return float((k.sum() - np.trace(k)) / (n * (n - 1)))
    same = idx[:, None] == idx[None, :]
    cnt = n * n - int(same.sum())
    if cnt == 0:
        return float("nan")
    return float((k.sum() - k[same].sum()) / cnt)


def mmd2_unbiased(
    kxx: np.ndarray,
    kyy: np.ndarray,
    kxy: np.ndarray,
    idx_x: np.ndarray | None = None,
    idx_y: np.ndarray | None = None,
) -> float:
    """Unbiased MMD² from kernel matrices Kxx (n, n), Kyy (m, m), Kxy (n, m).

    ``idx_x``/``idx_y`` (original sample indices of bootstrap draws) make within-set sums skip pairs of
    copies of one sample, which keeps the estimator unbiased under resampling with replacement.
    """
    return _masked_mean(kxx, idx_x) + _masked_mean(kyy, idx_y) - 2.0 * float(kxy.mean())


@dataclass
class KIDResult:
    """KID: mean and std of the unbiased polynomial-kernel MMD² over ``n_subsets`` random subsets."""

    mean: float
    std: float
    subset_size: int
    n_subsets: int
    values: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "mean": self.mean,
            "std": self.std,
            "subset_size": self.subset_size,
            "n_subsets": self.n_subsets,
        }


def kid(
    a: Any, b: Any, *, subset_size: int = 1000, n_subsets: int = 100, degree: int = 3, seed: int = 0
) -> KIDResult:
    """Kernel Inception Distance between features a (N, D) and b (M, D).

    Each subset draws ``min(subset_size, N, M)`` samples *without* replacement from each set; the
    unbiased MMD² with kernel ``(x·y/D + 1)^degree`` is averaged (std with ddof=0, as torchmetrics).
    With ``subset_size >= max(N, M)`` and equal N = M every subset is the full sets.
    """
    a2, b2 = _check_pair(a, b)
    m = min(subset_size, a2.shape[0], b2.shape[0])
    rng = np.random.default_rng(seed)
    vals = np.empty(n_subsets, dtype=np.float64)
    for s in range(n_subsets):
        ia = rng.choice(a2.shape[0], m, replace=False)
        ib = rng.choice(b2.shape[0], m, replace=False)
        x, y = a2[ia], b2[ib]
        kxx = polynomial_kernel(x, x, degree=degree)
        kyy = polynomial_kernel(y, y, degree=degree)
        kxy = polynomial_kernel(x, y, degree=degree)
        vals[s] = mmd2_unbiased(kxx, kyy, kxy)
    return KIDResult(float(vals.mean()), float(vals.std()), m, n_subsets, vals)


def _kernel_fn(
    kernel: str, a: np.ndarray, b: np.ndarray, bandwidth: float | None, degree: int, seed: int
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, Any]]:
    if kernel == "gaussian":
        bw = median_bandwidth(a, b, seed=seed) if bandwidth is None else float(bandwidth)
        return (lambda x, y: gaussian_kernel(x, y, bandwidth=bw)), {"kernel": "gaussian", "bandwidth": bw}
    if kernel in ("poly", "polynomial"):
        return (lambda x, y: polynomial_kernel(x, y, degree=degree)), {
            "kernel": "polynomial",
            "degree": degree,
        }
    raise ValueError(f"unknown MMD kernel {kernel!r} (expected 'gaussian' or 'poly')")


def mmd(
    a: Any,
    b: Any,
    *,
    kernel: str = "gaussian",
    bandwidth: float | None = None,
    degree: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Unbiased MMD² over the full sets a (N, D), b (M, D).

    Returns ``{"mmd2": float, "kernel": ..., "bandwidth"/"degree": ...}``; the Gaussian bandwidth is the
    median pooled pairwise distance unless given.
    """
    a2, b2 = _check_pair(a, b)
    kfn, info = _kernel_fn(kernel, a2, b2, bandwidth, degree, seed)
    val = mmd2_unbiased(kfn(a2, a2), kfn(b2, b2), kfn(a2, b2))
    return {"mmd2": val, **info}


# ----------------------------------------------------------------------------------------------------
# PRDC
# ----------------------------------------------------------------------------------------------------
def _knn_radii(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Distance of each row of x (N, D) to its k-th nearest *other* row → (N,)."""
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"PRDC with k={k} needs more than k samples per set, got {n}")
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, chunk):
        d = np.sqrt(_sq_dists(x[s : s + chunk], x))
        # k+1-th smallest including the zero self-distance.
        out[s : s + chunk] = np.partition(d, k, axis=1)[:, k]
    return out


def _prdc_indicators(real: np.ndarray, fake: np.ndarray, k: int, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Per-point quantities whose means are P/R/D/C (fake-indexed: precision, density; real: recall, coverage)."""
    r_rad = _knn_radii(real, k)
    f_rad = _knn_radii(fake, k)
    n_fake = fake.shape[0]
    in_real_balls = np.zeros(n_fake, dtype=np.float64)  # number of real balls containing each fake point
    recall_ind = np.empty(real.shape[0], dtype=np.float64)
    coverage_ind = np.empty(real.shape[0], dtype=np.float64)
    for s in range(0, real.shape[0], chunk):
        d = np.sqrt(_sq_dists(real[s : s + chunk], fake))  # (c, M)
        rad = r_rad[s : s + chunk, None]
        in_real_balls += (d < rad).sum(0)
        recall_ind[s : s + chunk] = (d < f_rad[None, :]).any(1)
        coverage_ind[s : s + chunk] = d.min(1) < rad[:, 0]
    return {
        "precision": (in_real_balls > 0).astype(np.float64),
        "density": in_real_balls / k,
        "recall": recall_ind,
        "coverage": coverage_ind,
    }


def prdc(real: Any, fake: Any, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020) of fake (M, D) against real (N, D).

    Identical sets give precision = recall = coverage = 1 and density ≈ 1.
    """
    r, f = _check_pair(real, fake)
    ind = _prdc_indicators(r, f, k)
    return {name: float(v.mean()) for name, v in ind.items()}


# ----------------------------------------------------------------------------------------------------
# MS-SSIM diversity
# ----------------------------------------------------------------------------------------------------
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_params(size: int) -> dict[str, Any]:
    """Kernel size/sigma and level weights for MS-SSIM on images whose smaller side is ``size`` px.

    Standard (11 px Gaussian, σ=1.5, 5 levels) from 176 px up; smaller images get a smaller odd kernel
    (σ scaled with it) and, below 80 px, fewer levels (the standard weights, renormalised), so that the
    coarsest level (size / 2^(levels-1)) still holds the kernel.
    """
    for levels in (5, 4, 3, 2):
        div = max(1, levels - 1) ** 2  # MONAI's size check uses (levels - 1)^2
        coarsest = min(size // div, size // 2 ** (levels - 1))
        k = min(11, coarsest if coarsest % 2 == 1 else coarsest - 1)
        if k >= 5 or levels == 2:
            k = max(k, 3)
            w = np.array(_MS_SSIM_WEIGHTS[:levels], dtype=np.float64)
            w = w / w.sum()
            return {
                "kernel_size": int(k),
                "kernel_sigma": 1.5 * k / 11.0,
                "weights": tuple(float(x) for x in w),
                "levels": levels,
            }
    raise AssertionError("unreachable")


def ms_ssim(a: Any, b: Any) -> Any:
    """Per-image MS-SSIM (B,) of two image batches (B, C, H, W) in [0, 1], through MONAI's
    ``compute_ms_ssim`` with the kernel and levels of :func:`ms_ssim_params`; differentiable, so it also
    serves as a training loss (1 − MS-SSIM)."""
    from monai.metrics.regression import compute_ms_ssim

    p = ms_ssim_params(min(a.shape[-2:]))
    return compute_ms_ssim(a.float(), b.float(), spatial_dims=2, data_range=1.0, kernel_size=p["kernel_size"],
                           kernel_sigma=p["kernel_sigma"], weights=p["weights"]).reshape(-1)


def ms_ssim_diversity(
    images: Any, *, max_pairs: int | None = 200, seed: int = 0, batch_size: int = 32
) -> dict[str, Any]:
    """Mean pairwise MS-SSIM among images (N, 1, H, W) in [0, 1] generated from *one* prompt.

    Lower means more diverse (identical images give 1). All N(N-1)/2 pairs are used unless more than
    ``max_pairs`` (then a seeded random subset of pairs). Uses MONAI's ``compute_ms_ssim``.
    """
    import torch

    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim != 4:
        raise ValueError(f"images: expected (N, C, H, W), got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"MS-SSIM diversity needs at least 2 images, got {n}")
    params = ms_ssim_params(min(x.shape[-2:]))
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64)
    if max_pairs is not None and len(pairs) > max_pairs:
        sel = np.random.default_rng(seed).choice(len(pairs), max_pairs, replace=False)
        pairs = pairs[np.sort(sel)]
    vals = []
    with torch.no_grad():
        for s in range(0, len(pairs), batch_size):
            p = torch.from_numpy(pairs[s : s + batch_size])
            vals.append(ms_ssim(x[p[:, 0]], x[p[:, 1]]).double().numpy())
    allv = np.concatenate(vals)
    return {
        "ms_ssim": float(allv.mean()),
        "std": float(allv.std()),
        "n_images": int(n),
        "n_pairs": int(len(allv)),
        **{k: v for k, v in params.items() if k != "weights"},
    }


# ----------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------
def percentile_ci(samples: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """(low, high) percentile interval of bootstrap replicates (non-finite ones left out; see
    :func:`finite_percentile_ci` for how many)."""
    lo, hi, _ = finite_percentile_ci(samples, alpha)
    return lo, hi


def finite_percentile_ci(
    samples: Sequence[float] | np.ndarray, alpha: float = 0.05
) -> tuple[float, float, int]:
    """(low, high, n_dropped): the percentile interval of the finite replicates and how many were not."""
    s = np.asarray(samples, dtype=np.float64)
    keep = np.isfinite(s)
    dropped = int(s.size - keep.sum())
    s = s[keep]
    if s.size == 0:
        return float("nan"), float("nan"), dropped
    return float(np.quantile(s, alpha / 2)), float(np.quantile(s, 1 - alpha / 2)), dropped


def bootstrap_fd(a: Any, b: Any, *, n_boot: int = 200, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """FD over the full sets with a bootstrap CI (both sets resampled with replacement, seeded).

    Returns ``{"value", "raw_value", "clamped_at_0", "ci_low", "ci_high", "ci_low_clamped_at_0",
    "bootstrap_bias", "n_boot", "n_boot_dropped", "n_a", "n_b"}``; the interval is the percentile
    interval shifted by the bootstrap bias estimate (see module docstring). ``raw_value`` is FD before
    clamping at 0 (``clamped_at_0`` says whether it was negative); ``n_boot_dropped`` counts replicates
    left out of the interval because they were non-finite.
    """
    a2, b2 = _check_pair(a, b)
    raw = _fd_raw(a2, b2)
    value = max(raw, 0.0)
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        ia = rng.integers(0, a2.shape[0], a2.shape[0])
        ib = rng.integers(0, b2.shape[0], b2.shape[0])
        reps[i] = _fd_replicate(a2[ia], b2[ib])
    out: dict[str, Any] = {
        "value": value,
        "raw_value": raw,
        "clamped_at_0": raw < 0.0,
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "ci_low_clamped_at_0": False,
        "bootstrap_bias": float("nan"),
        "n_boot": n_boot,
        "n_boot_dropped": 0,
        "n_a": a2.shape[0],
        "n_b": b2.shape[0],
    }
    if n_boot:
        # FD(N) is biased upward by O(D/N), and a bootstrap replicate adds that bias once more. The
        # percentile interval is therefore re-centred on the estimate: it describes the spread of FD at
        # this N (what comparisons at equal N need); the shift itself is reported as an estimate of
        # the small-sample bias.
        lo, hi, dropped = finite_percentile_ci(reps, alpha)
        finite = reps[np.isfinite(reps)]
        bias = float(np.mean(finite) - value) if finite.size else float("nan")
        out.update(
            ci_low=max(lo - bias, 0.0),
            ci_high=max(hi - bias, 0.0),
            ci_low_clamped_at_0=bool(lo - bias < 0.0),
            bootstrap_bias=bias,
            n_boot_dropped=dropped,
        )
    return out


def bootstrap_mmd2(
    a: Any,
    b: Any,
    *,
    kernel: str = "poly",
    degree: int = 3,
    bandwidth: float | None = None,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    subset_size: int = 2000,
) -> dict[str, Any]:
    """Unbiased MMD² (poly = KID's kernel, or gaussian) over the full sets with a bootstrap CI.

    Resamples with replacement and skips pairs of copies of one original sample in the within-set sums
    (see :func:`mmd2_unbiased`). When the kernel matrices would be large, each replicate draws
    ``subset_size`` samples per set instead of N.
    """
    a2, b2 = _check_pair(a, b)
    kfn, info = _kernel_fn(kernel, a2, b2, bandwidth, degree, seed)
    na, nb = a2.shape[0], b2.shape[0]
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    if na * na + nb * nb + na * nb <= _MAX_KERNEL_ENTRIES:
        kaa, kbb, kab = kfn(a2, a2), kfn(b2, b2), kfn(a2, b2)
        value = mmd2_unbiased(kaa, kbb, kab)
        for i in range(n_boot):
            ia = rng.integers(0, na, na)
            ib = rng.integers(0, nb, nb)
            reps[i] = mmd2_unbiased(kaa[np.ix_(ia, ia)], kbb[np.ix_(ib, ib)], kab[np.ix_(ia, ib)], ia, ib)
    else:
        value = _mmd2_blocked(a2, b2, kfn)
        m_a, m_b = min(subset_size, na), min(subset_size, nb)
        for i in range(n_boot):
            ia = rng.integers(0, na, m_a)
            ib = rng.integers(0, nb, m_b)
            x, y = a2[ia], b2[ib]
            reps[i] = mmd2_unbiased(kfn(x, x), kfn(y, y), kfn(x, y), ia, ib)
    lo, hi, dropped = finite_percentile_ci(reps, alpha) if n_boot else (float("nan"), float("nan"), 0)
    return {"value": value, "ci_low": lo, "ci_high": hi, "n_boot": n_boot, "n_boot_dropped": dropped, **info}


def _mmd2_blocked(
    a: np.ndarray, b: np.ndarray, kfn: Callable[[np.ndarray, np.ndarray], np.ndarray], chunk: int = 2048
) -> float:
    """Unbiased MMD² over the full sets without holding a full kernel matrix."""

    def offdiag_mean(x: np.ndarray) -> float:
        tot, diag = 0.0, 0.0
        for s in range(0, x.shape[0], chunk):
            blk = kfn(x[s : s + chunk], x)
            tot += float(blk.sum())
            diag += float(np.einsum("ii->", blk[:, s : s + chunk]))
        n = x.shape[0]
        return (tot - diag) / (n * (n - 1))

    cross = sum(float(kfn(a[s : s + chunk], b).sum()) for s in range(0, a.shape[0], chunk))
    return offdiag_mean(a) + offdiag_mean(b) - 2.0 * cross / (a.shape[0] * b.shape[0])


def bootstrap_prdc(
    real: Any, fake: Any, *, k: int = 5, n_boot: int = 200, seed: int = 0, alpha: float = 0.05
) -> dict[str, dict[str, float]]:
    """PRDC with bootstrap CIs over the averaged points (k-NN balls of the full sets held fixed).

    Each metric's dict also has ``n_boot_dropped`` (non-finite replicates left out of its interval).
    """
    r, f = _check_pair(real, fake)
    ind = _prdc_indicators(r, f, k)
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    for name in ("precision", "recall", "density", "coverage"):
        v = ind[name]
        reps = [float(v[rng.integers(0, v.size, v.size)].mean()) for _ in range(n_boot)]
        lo, hi, dropped = finite_percentile_ci(reps, alpha) if n_boot else (float("nan"), float("nan"), 0)
        out[name] = {"value": float(v.mean()), "ci_low": lo, "ci_high": hi, "n_boot_dropped": dropped}
    return out


# ----------------------------------------------------------------------------------------------------
# Per-finding (conditional) FD and the all-in-one entry point
# ----------------------------------------------------------------------------------------------------
def conditional_fd(
    real: Any,
    real_labels: Any,
    fake: Any,
    fake_labels: Any,
    *,
    findings: Sequence[str] | None = None,
    min_count: int = 20,
    n_boot: int = 0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """FD between real and fake features restricted to images positive for each finding.

    Args:
        real: (N, D) features; real_labels: (N, F) with 1 = positive (0/-1/NaN = not positive).
        fake: (M, D) features; fake_labels: (M, F) prompted labels, same convention.
        findings: names of the F label columns (default: :data:`unicxr.labels.FINDINGS`).
        min_count: findings with fewer positives than this in either set are reported as skipped.
        n_boot: bootstrap replicates for a CI per finding (0: none).

    Returns:
        ``{finding: {"fd", "clamped_at_0", "n_real", "n_fake", ["ci_low", "ci_high", "n_boot_dropped"]}
        or {"skipped": reason, ...}}``.
    """
    from unicxr.labels import FINDINGS

    r, f = _check_pair(real, fake)
    rl = np.asarray(real_labels, dtype=np.float64)
    fl = np.asarray(fake_labels, dtype=np.float64)
    names = list(FINDINGS if findings is None else findings)
    if rl.shape != (r.shape[0], len(names)) or fl.shape != (f.shape[0], len(names)):
        raise ValueError(
            f"label shapes {rl.shape}/{fl.shape} do not match features ({r.shape[0]}/{f.shape[0]}) x {len(names)} findings"
        )
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        pr, pf = rl[:, j] == 1, fl[:, j] == 1
        nr, nf = int(pr.sum()), int(pf.sum())
        if nr < max(min_count, 2) or nf < max(min_count, 2):
            out[name] = {"skipped": f"fewer than {min_count} positives", "n_real": nr, "n_fake": nf}
            continue
        if n_boot:
            res = bootstrap_fd(r[pr], f[pf], n_boot=n_boot, seed=seed + 1000 * (j + 1))
            out[name] = {
                "fd": res["value"],
                "clamped_at_0": res["clamped_at_0"],
                "ci_low": res["ci_low"],
                "ci_high": res["ci_high"],
                "n_boot_dropped": res["n_boot_dropped"],
                "n_real": nr,
                "n_fake": nf,
            }
        else:
            raw = _fd_raw(r[pr], f[pf])
            out[name] = {"fd": max(raw, 0.0), "clamped_at_0": raw < 0.0, "n_real": nr, "n_fake": nf}
    return out


def fd_result_notes(name: str, res: dict[str, Any]) -> list[str]:
    """Warnings for one FD/MMD/PRDC result dict: clamped at 0, bootstrap replicates dropped."""
    notes: list[str] = []
    if res.get("clamped_at_0"):
        raw = res.get("raw_value")
        what = f" (raw {raw:.3g})" if isinstance(raw, float) else ""
        notes.append(f"{name}: the estimate was negative{what} and is reported as 0 (clamped)")
    dropped = int(res.get("n_boot_dropped", 0) or 0)
    if dropped:
        notes.append(
            f"{name}: {dropped} of {res.get('n_boot')} bootstrap replicates were non-finite and left out of the CI"
        )
    return notes


def compute_feature_metrics(
    real: Any,
    fake: Any,
    *,
    real_labels: Any | None = None,
    fake_labels: Any | None = None,
    n_boot: int = 200,
    seed: int = 0,
    k: int = 5,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    min_per_finding: int = 20,
    per_finding_boot: int | None = None,
) -> dict[str, Any]:
    """All feature-space metrics of fake (M, D) against real (N, D) over the full sets.

    Returns a JSON-ready dict: ``fd``, ``kid`` (subset mean±std plus full-set value with bootstrap CI),
    ``mmd`` (Gaussian kernel), ``prdc``, ``per_finding_fd`` (when both label arrays are given),
    ``n_real``, ``n_fake``, ``dim``, ``warnings``.
    """
    r, f = _check_pair(real, fake)
    msgs = sample_size_warnings(min(r.shape[0], f.shape[0]), r.shape[1], "real/fake features")
    out: dict[str, Any] = {
        "n_real": int(r.shape[0]),
        "n_fake": int(f.shape[0]),
        "dim": int(r.shape[1]),
        "n_boot": n_boot,
        "seed": seed,
    }
    out["fd"] = bootstrap_fd(r, f, n_boot=n_boot, seed=seed)
    kres = kid(r, f, subset_size=kid_subset_size, n_subsets=kid_subsets, seed=seed + 1)
    kboot = bootstrap_mmd2(r, f, kernel="poly", n_boot=n_boot, seed=seed + 2)
    out["kid"] = {
        **kres.to_dict(),
        "full_set": kboot["value"],
        "ci_low": kboot["ci_low"],
        "ci_high": kboot["ci_high"],
        "n_boot_dropped": kboot["n_boot_dropped"],
    }
    out["mmd"] = bootstrap_mmd2(r, f, kernel="gaussian", n_boot=n_boot, seed=seed + 3)
    if min(r.shape[0], f.shape[0]) > k:
        out["prdc"] = {"k": k, **bootstrap_prdc(r, f, k=k, n_boot=n_boot, seed=seed + 4)}
    else:
        msgs.append(f"PRDC skipped: needs more than k={k} samples per set")
    if real_labels is not None and fake_labels is not None:
        nb = min(n_boot, 50) if per_finding_boot is None else per_finding_boot
        out["per_finding_fd"] = conditional_fd(
            r, real_labels, f, fake_labels, min_count=min_per_finding, n_boot=nb, seed=seed + 5
        )
    msgs += fd_result_notes("FD", out["fd"])
    msgs += fd_result_notes("KID", {"n_boot": n_boot, **out["kid"]})
    msgs += fd_result_notes("MMD", out["mmd"])
    for key, v in out.get("prdc", {}).items():
        if isinstance(v, dict):
            msgs += fd_result_notes(f"PRDC {key}", {"n_boot": n_boot, **v})
    for name, v in out.get("per_finding_fd", {}).items():
        if "fd" in v:
            msgs += fd_result_notes(f"per-finding FD {name}", {"n_boot": nb, **v})
    out["warnings"] = msgs
    return out
