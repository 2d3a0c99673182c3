"""Sanity checks of a feature space on real data: does it measure what image metrics need it to?

The real images (the two splits, pooled) are cut into two seeded random halves A and B. A feature
space passes when every check below passes; the first four only pass for features that depend on the
image in a useful way, the last two are necessary properties of the metrics that hold for *any*
features (pure noise included) and so prove nothing on their own.

* ``features_vary``: the features of different images are not all the same (a constant extractor
  fails). Rule: total variance of the features > 1e-10 x their mean squared norm.
* ``deterministic``: the same images give the same features twice (an extractor that returns fresh
  noise fails). Rule: max |difference| <= 1e-4 x max |feature| over a batch of up to 8 images.
* ``blur_chain``: FD(A, B) < FD(A, blur_σ1(B)) < FD(A, blur_σ2(B)) < ... with *non-overlapping* 95%
  bootstrap CIs at every step (upper end of one below the lower end of the next): two real samples
  are closer than a real sample and a degraded copy of the other, and more degradation is farther.
  Noise features give the same FD at every step (overlapping CIs); a constant gives 0 everywhere.
* ``finding_separation``: for each finding with at least ``min_count`` positive and ``min_count``
  negative images, FD(positives, negatives) is compared with FD between random splits of the same
  images into groups of the same sizes (a permutation test with ``n_perm`` splits, so both sides carry
  the same small-sample bias). A finding *separates* when its FD is above every random-split FD
  (p <= 1 / (n_perm + 1)) and at least 1.5x their mean. Rule: at least half of the eligible findings
  (and at least one) separate. Skipped (not failed) when the images have no labels or no finding has
  enough positives and negatives; the blur chain still guards the result then.
* ``kid_halves_ci_contains_0`` (necessary only): KID (unbiased MMD², cubic kernel) between A and B has
  a 95% bootstrap CI containing 0.
* ``prdc_self_is_1`` (necessary only): PRDC of B against itself gives precision = recall = coverage =
  1 and density within 0.05 of 1.

Also reported, not checked: FD between the two splits as given (e.g. train vs test), the floor any
generator is compared with at that N.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unicxr.data.image_sets import Subset, open_image_set
from unicxr.eval.features import FeatureExtractor, extract_features, parse_features_spec
from unicxr.eval.image_metrics import _check_pair, _fd_arrays, bootstrap_fd, bootstrap_mmd2, prdc
from unicxr.labels import FINDINGS
from unicxr.utils.errors import UnicxrError

__all__ = [
    "CHECK_RULES",
    "gaussian_blur",
    "BlurredSet",
    "PooledSet",
    "sanity_checks",
    "sanity_from_features",
    "check_features_vary",
    "check_deterministic",
    "check_blur_chain",
    "check_finding_separation",
    "failure_line",
]

#: One line per check: what passing means (written into the JSON and ``eval sanity --help``).
CHECK_RULES: dict[str, str] = {
    "features_vary": "features of different images differ (total variance > 1e-10 x mean squared norm)",
    "deterministic": "the same images give the same features twice (max |diff| <= 1e-4 x max |feature|)",
    "blur_chain": "FD(A, B) < FD(A, blur σ1(B)) < FD(A, blur σ2(B)) with non-overlapping 95% bootstrap CIs "
    "(A, B: random halves of the real images)",
    "finding_separation": "for >= half of the findings with enough positives and negatives (and >= 1), "
    "FD(positives, negatives) is above all n_perm random same-size splits and >= 1.5x their mean",
    "kid_halves_ci_contains_0": "KID(A, B) has a 95% CI containing 0 (necessary only: holds for any features)",
    "prdc_self_is_1": "PRDC(B, B): precision = recall = coverage = 1, |density - 1| < 0.05 "
    "(necessary only: holds for any non-constant features)",
}

# A finding separates when FD(pos, neg) is at least this multiple of the mean random-split FD.
SEPARATION_RATIO = 1.5


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images (sigma in pixels, reflect padding, radius 3σ)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-(t**2) / (2 * sigma * sigma))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class BlurredSet:
    """View of an image set whose images are Gaussian-blurred with ``sigma`` pixels."""

    def __init__(self, base: Any, sigma: float) -> None:
        self.base = base
        self.sigma = sigma
        self.labels = getattr(base, "labels", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        item["image"] = gaussian_blur(item["image"].unsqueeze(0), self.sigma)[0].clamp(0, 1)
        return item


class PooledSet:
    """Image sets one after another, with their labels concatenated (None if any set has none)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        labels = [getattr(p, "labels", None) for p in parts]
        self.labels = None if any(lab is None for lab in labels) else np.concatenate(labels)
        self.prompts = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[j][i - int(self.offsets[j])]


# ------------------------------------------------------------------------------------------------------
# the checks, on features
# ------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.4g}"


def check_features_vary(feats: np.ndarray) -> dict[str, Any]:
    """``features_vary`` on features (N, D)."""
    f = np.asarray(feats, dtype=np.float64)
    total_var = float(f.var(axis=0).sum())
    mean_sq = float((f * f).sum(1).mean())
    ok = total_var > 1e-10 * max(mean_sq, 1e-30)
    detail = (
        f"total variance {_fmt(total_var)} vs mean squared norm {_fmt(mean_sq)}"
        if ok
        else f"every image gives the same features (total variance {_fmt(total_var)}): the extractor ignores its input"
    )
    return {"passed": ok, "total_variance": total_var, "mean_squared_norm": mean_sq, "detail": detail}


def check_deterministic(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """``deterministic``: features (n, D) of the same images from two passes."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    ok = diff <= 1e-4 * scale or diff == 0.0
    detail = (
        f"max |diff| {_fmt(diff)} over {a.shape[0]} images (max |feature| {_fmt(scale)})"
        if ok
        else f"two passes over the same {a.shape[0]} images differ by up to {_fmt(diff)} "
        f"(max |feature| {_fmt(scale)}): the features are not a function of the image"
    )
    return {"passed": ok, "max_abs_diff": diff, "max_abs_feature": scale, "n_images": int(a.shape[0]), "detail": detail}


def check_blur_chain(
    half_a: np.ndarray,
    half_b: np.ndarray,
    blurred_b: dict[float, np.ndarray],
    *,
    n_boot: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """``blur_chain``: FD(A, B), then FD(A, blur_σ(B)) for increasing σ, each step with disjoint CIs.

    Args:
        half_a, half_b: features (N, D) and (M, D) of two disjoint real samples.
        blurred_b: {σ: features (M, D) of B blurred with σ pixels}.
    """
    if n_boot < 1:
        raise ValueError("blur_chain needs bootstrap CIs: n_boot >= 1")
    sigmas = sorted(blurred_b)
    steps = [("0", half_b)] + [(str(float(s)), blurred_b[s]) for s in sigmas]
    fds = {name: bootstrap_fd(half_a, f, n_boot=n_boot, seed=seed + 11 * i) for i, (name, f) in enumerate(steps)}
    names = [n for n, _ in steps]
    links = []
    for lo_name, hi_name in zip(names, names[1:], strict=False):
        lo, hi = fds[lo_name], fds[hi_name]
        links.append(
            {
                "from_sigma": lo_name,
                "to_sigma": hi_name,
                "passed": bool(lo["ci_high"] < hi["ci_low"]),
            }
        )
    ok = all(link["passed"] for link in links)

    def show(name: str) -> str:
        r = fds[name]
        label = "FD(A,B)" if name == "0" else f"FD(A,blur σ={name}(B))"
        return f"{label} {_fmt(r['value'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"

    if ok:
        detail = " < ".join(show(n) for n in names)
    else:
        bad = next(link for link in links if not link["passed"])
        detail = (
            f"{show(bad['from_sigma'])} is not below {show(bad['to_sigma'])} (CIs overlap or wrong order): "
            "the features do not see blur beyond sampling noise"
        )
    return {
        "passed": ok,
        "fd": {name: fds[name] for name in names},
        "links": links,
        "n_a": int(half_a.shape[0]),
        "n_b": int(half_b.shape[0]),
        "detail": detail,
    }


def check_finding_separation(
    feats: np.ndarray,
    labels: np.ndarray | None,
    *,
    findings: tuple[str, ...] = FINDINGS,
    min_count: int = 20,
    n_perm: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """``finding_separation``: FD(positives, negatives) against random splits of the same sizes.

    Args:
        feats: (N, D) features; labels: (N, F) with 1 positive, 0 negative (-1/NaN: left out), or None.
        min_count: positives and negatives a finding needs to be tested.
        n_perm: random splits per finding (the test's p-value is at best 1 / (n_perm + 1)).
    """
    f = np.asarray(feats, dtype=np.float64)
    if labels is None:
        return {"passed": None, "skipped": "no labels", "findings": {}, "detail": "skipped: the images have no labels"}
    lab = np.asarray(labels, dtype=np.float64)
    per: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(findings):
        pos, neg = lab[:, j] == 1, lab[:, j] == 0
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        if n_pos < max(min_count, 2) or n_neg < max(min_count, 2):
            per[name] = {"skipped": f"fewer than {min_count} positives or negatives", "n_pos": n_pos, "n_neg": n_neg}
            continue
        obs = _fd_arrays(f[pos], f[neg])
        pooled = np.concatenate([f[pos], f[neg]])
        rng = np.random.default_rng(seed + 101 * (j + 1))
        null = np.empty(n_perm)
        for i in range(n_perm):
            p = rng.permutation(pooled.shape[0])
            null[i] = _fd_arrays(pooled[p[:n_pos]], pooled[p[n_pos:]])
        null_mean, null_max = float(null.mean()), float(null.max())
        sep = bool(obs > null_max and obs >= SEPARATION_RATIO * null_mean)
        per[name] = {
            "fd_pos_neg": obs,
            "fd_random_mean": null_mean,
            "fd_random_max": null_max,
            "ratio": obs / null_mean if null_mean > 0 else (math.inf if obs > 0 else float("nan")),
            "separated": sep,
            "n_pos": n_pos,
            "n_neg": n_neg,
        }
    tested = [k for k, v in per.items() if "skipped" not in v]
    separated = [k for k in tested if per[k]["separated"]]
    out: dict[str, Any] = {
        "n_tested": len(tested),
        "n_separated": len(separated),
        "min_count": min_count,
        "n_perm": n_perm,
        "findings": per,
    }
    if not tested:
        out.update(passed=None, skipped=f"no finding has {min_count} positives and negatives")
        out["detail"] = f"skipped: no finding has {min_count} positive and {min_count} negative images"
        return out
    ok = len(separated) >= max(1, math.ceil(len(tested) / 2))
    worst = sorted(tested, key=lambda k: per[k]["ratio"] if np.isfinite(per[k]["ratio"]) else -1.0)
    summary = ", ".join(
        f"{k} {_fmt(per[k]['fd_pos_neg'])} vs {_fmt(per[k]['fd_random_mean'])}" for k in worst[:3]
    )
    if ok:
        out["detail"] = f"{len(separated)}/{len(tested)} findings separate (lowest FD(pos,neg) vs random: {summary})"
    else:
        out["detail"] = (
            f"only {len(separated)}/{len(tested)} findings separate: FD(positives, negatives) is not above random "
            f"splits ({summary}): the features do not see the findings"
        )
    out["passed"] = ok
    return out


def failure_line(checks: dict[str, dict[str, Any]]) -> str | None:
    """One line naming every failed check and why, or None when all passed (skipped ones don't fail)."""
    failed = [f"{name}: {c['detail']}" for name, c in checks.items() if c.get("passed") is False]
    return "; ".join(failed) if failed else None


def sanity_from_features(
    half_a: np.ndarray,
    half_b: np.ndarray,
    blurred_b: dict[float, np.ndarray],
    *,
    labels: np.ndarray | None = None,
    repeat: tuple[np.ndarray, np.ndarray] | None = None,
    n_boot: int = 100,
    n_perm: int = 20,
    min_count: int = 20,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """All checks on precomputed features (see the module docstring); returns ``{check: result}``.

    Args:
        half_a, half_b: (N, D), (M, D) features of two random halves of the real images.
        blurred_b: {σ: (M, D) features of B blurred with σ pixels}.
        labels: (N + M, F) labels of A then B for ``finding_separation`` (None: skipped).
        repeat: features of the same few images from two passes, for ``deterministic`` (None: skipped).
    """
    a, b = _check_pair(half_a, half_b)
    both = np.concatenate([a, b])
    checks: dict[str, dict[str, Any]] = {"features_vary": check_features_vary(both)}
    if repeat is not None:
        checks["deterministic"] = check_deterministic(*repeat)
    else:
        checks["deterministic"] = {"passed": None, "skipped": "not run", "detail": "skipped"}
    checks["blur_chain"] = check_blur_chain(a, b, blurred_b, n_boot=n_boot, seed=seed)
    checks["finding_separation"] = check_finding_separation(
        both, labels, min_count=min_count, n_perm=n_perm, seed=seed
    )
    k = bootstrap_mmd2(a, b, kernel="poly", n_boot=n_boot, seed=seed + 3)
    k_ok = bool(k["ci_low"] <= 0.0 <= k["ci_high"])
    checks["kid_halves_ci_contains_0"] = {
        "passed": k_ok,
        **{key: k[key] for key in ("value", "ci_low", "ci_high", "n_boot", "n_boot_dropped")},
        "detail": f"KID(A,B) {_fmt(k['value'])} [{_fmt(k['ci_low'])}, {_fmt(k['ci_high'])}]"
        + ("" if k_ok else ": the CI excludes 0 for two halves of one set"),
    }
    p = prdc(b, b, k=5)
    p_ok = bool(
        p["precision"] == 1.0 and p["recall"] == 1.0 and p["coverage"] == 1.0 and abs(p["density"] - 1.0) < 0.05
    )
    checks["prdc_self_is_1"] = {
        "passed": p_ok,
        **p,
        "detail": ", ".join(f"{key} {_fmt(v)}" for key, v in p.items())
        + ("" if p_ok else ": PRDC of a set with itself is not 1 (duplicate or constant features)"),
    }
    for name, c in checks.items():
        c["rule"] = CHECK_RULES[name]
    return checks


# ------------------------------------------------------------------------------------------------------
# the entry point, on images
# ------------------------------------------------------------------------------------------------------
def sanity_checks(
    data: str | Path,
    features: str | FeatureExtractor,
    *,
    train_split: str = "train",
    test_split: str = "test",
    sigmas: tuple[float, ...] = (1.0, 2.0),
    n_boot: int = 100,
    n_perm: int = 20,
    min_count: int = 20,
    seed: int = 0,
    max_images: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the checks of the module docstring on a cache/folder.

    The two splits are pooled and cut into seeded random halves A and B. Returns a JSON-ready dict:
    ``checks`` ({name: {"passed": True/False/None (skipped), "rule", "detail", values...}}),
    ``passed`` ({name: bool or None}), ``all_passed``, ``failure`` (one line, or None),
    ``fd_train_test`` (information only) and the set sizes.
    """
    ext = parse_features_spec(features) if isinstance(features, str) else features
    train = open_image_set(data, split=train_split, max_images=max_images, seed=seed)
    test = open_image_set(data, split=test_split, max_images=max_images, seed=seed + 1)
    pooled = PooledSet([train, test])
    n = len(pooled)
    if n < 12:
        raise UnicxrError(f"{data}: sanity checks need at least 12 images in {train_split} + {test_split}, got {n}")
    kw: dict[str, Any] = dict(batch_size=batch_size, progress=progress)
    f_all, _ = extract_features(ext, pooled, desc="features", **kw)
    perm = np.random.default_rng(seed).permutation(n)
    idx_a, idx_b = np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
    half_b = Subset(pooled, idx_b)
    blurred = {
        float(s): extract_features(ext, BlurredSet(half_b, s), desc=f"blur σ={s} features", **kw)[0] for s in sigmas
    }
    k = min(8, n)
    probe = torch.stack([torch.as_tensor(pooled[i]["image"]) for i in range(k)])
    repeat = (f_all[:k], ext(probe).numpy())
    labels = None if pooled.labels is None else np.concatenate([pooled.labels[idx_a], pooled.labels[idx_b]])
    checks = sanity_from_features(
        f_all[idx_a],
        f_all[idx_b],
        blurred,
        labels=labels,
        repeat=repeat,
        n_boot=n_boot,
        n_perm=n_perm,
        min_count=min_count,
        seed=seed,
    )
    n_train = len(train)
    fd_tt = bootstrap_fd(f_all[:n_train], f_all[n_train:], n_boot=n_boot, seed=seed + 5)
    passed = {name: c["passed"] for name, c in checks.items()}
    return {
        "features": ext.describe(),
        "splits": [train_split, test_split],
        "n_train": n_train,
        "n_test": len(test),
        "n_half_a": len(idx_a),
        "n_half_b": len(idx_b),
        "sigmas": [float(s) for s in sigmas],
        "rules": dict(CHECK_RULES),
        "checks": checks,
        "passed": passed,
        "all_passed": all(v is not False for v in passed.values()),
        "failure": failure_line(checks),
        "fd_train_test": fd_tt,
    }
