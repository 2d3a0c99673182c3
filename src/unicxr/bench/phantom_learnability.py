"""Is the phantom learnable, and not trivially? Train a small CNN on phantom images, report AUROC.

``python -m unicxr.bench.phantom_learnability --n-train 2000 --n-test 500 --size 256``

Train and test sets come from different master seeds (different patients). The three rare, small
findings (Lung Lesion 6%, Pleural Other 3%, Fracture 4% in the phantom) are enriched to 12% in both
(:data:`BENCH_PREVALENCE`, ``--natural`` turns it off): at their base rates 2000 training images hold
60-120 positives and 500 test images 12-30, so the bench measured sample size and test noise (CIs
about 0.25 wide) more than whether a finding is visible. Training targets use
U-Ones (uncertain -> 1, blank -> 0); test AUROC ignores uncertain labels and counts blank as
negative. Plain PyTorch loop on CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from unicxr.utils.metrics import auroc, bootstrap_aurocs

__all__ = ["make_arrays", "case_subtypes", "SmallCNN", "auroc", "main", "BENCH_PREVALENCE"]

# base rates the bench renders with unless --natural (case enrichment of the rare small findings)
BENCH_PREVALENCE: dict[str, float] = {"Lung Lesion": 0.12, "Pleural Other": 0.12, "Fracture": 0.12}


def _render(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    from unicxr.phantom.simulate import render_case

    plan, size, cfg = args
    c = render_case(plan, size, cfg, masks=False)
    return (np.round(c.image * 255).astype(np.uint8), c.labels)


def make_arrays(n: int, size: int, seed: int, workers: int = 2,
                prevalence: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` phantom cases (``prevalence`` overrides some findings' base rates).

    Returns:
        ``(images uint8 (n, size, size), labels float32 (n, 14))``.
    """
    from unicxr.phantom.config import PhantomConfig
    from unicxr.phantom.simulate import make_plan

    cfg = PhantomConfig().with_prevalence(prevalence or {})
    plans = make_plan(seed, n, cfg)
    items = [(p, size, cfg) for p in plans]
    if workers > 1:
        from unicxr.utils.memory import tune_malloc

        with mp.get_context("fork").Pool(workers, initializer=tune_malloc) as pool:
            out = pool.map(_render, items, chunksize=16)
    else:
        out = [_render(it) for it in items]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out]).astype(np.float32)


def _subtype(name: str, kind: str) -> str:
    """The drawn variant of a finding that the bench breaks its AUROC down by (``''`` = no breakdown)."""
    if name == "Fracture":
        from unicxr.phantom.findings import fracture_clavicle, fracture_ribs

        _, nrib, healing = fracture_ribs(kind)
        where = ("clavicle+rib" if nrib else "clavicle") if fracture_clavicle(kind) else "rib"
        return where + (" healing" if healing else " acute")
    if name == "Lung Lesion":
        return kind.split("|")[0]
    if name == "Pleural Other":
        return kind
    return ""


def case_subtypes(n: int, seed: int, prevalence: dict[str, float] | None = None) -> list[dict[str, str]]:
    """The subtype of each broken-down finding (Fracture, Lung Lesion, Pleural Other) per case.

    Re-draws the same plans as :func:`make_arrays` with the same arguments (plans are cheap, no
    rendering), so row ``i`` describes image ``i``. Fracture subtypes: ``rib``, ``clavicle`` (alone) or
    ``clavicle+rib``, each ``acute`` or ``healing``; Lung Lesion: nodule/mass kind; Pleural Other:
    ``plaques``/``thickening``.
    """
    from unicxr.phantom.config import PhantomConfig
    from unicxr.phantom.simulate import make_plan

    plans = make_plan(seed, n, PhantomConfig().with_prevalence(prevalence or {}))
    return [{k: st for k, f in p.findings.items() if (st := _subtype(k, f.kind or ""))} for p in plans]


def SmallCNN(n_out: int = 14, width: int = 16):  # noqa: N802 - a factory that reads like a class
    """A strided stem, 4 conv stages and average + max pooling: (B, 1, H, W) -> (B, n_out) logits.

    The max-pooled half keeps a finding that covers a few cells of the last feature map (a rib break,
    a nodule, a pleural plaque) from being averaged away over the whole image."""
    import torch
    import torch.nn as nn

    class AvgMaxPool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, 2C)
            return torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2))

    w = width
    stem = nn.Sequential(nn.Conv2d(1, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
    return nn.Sequential(stem, block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 6 * w), block(6 * w, 8 * w),
                         AvgMaxPool(), nn.Dropout(0.2), nn.Linear(16 * w, n_out))


def _train_and_score(xt, target, xe, seed: int, args: argparse.Namespace) -> np.ndarray:
    """Train one :func:`SmallCNN` on ``xt`` (N, 1, S, S) normalised images with ``target`` (N, 14)
    (seed: initialisation, batch order, augmentation) and return sigmoid scores (M, 14) of ``xe``."""
    import torch
    from tqdm import tqdm

    from unicxr.labels import FINDINGS

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SmallCNN(len(FINDINGS))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(len(xt) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    pos = target.mean(0).clamp(0.02, 0.98)
    pos_weight = ((1 - pos) / pos).clamp(max=8.0).sqrt()
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    t1 = time.perf_counter()
    for ep in range(args.epochs):
        model.train()
        perm = rng.permutation(len(xt))
        tot = 0.0
        for i in tqdm(range(0, len(perm), args.batch), desc=f"epoch {ep + 1}/{args.epochs}", leave=False):
            idx = torch.from_numpy(perm[i : i + args.batch])
            xb = xt[idx]
            # light augmentation: small shifts and intensity jitter
            if rng.random() < 0.5:
                dx, dy = rng.integers(-4, 5, size=2)
                xb = torch.roll(xb, shifts=(int(dy), int(dx)), dims=(2, 3))
            xb = xb * float(rng.uniform(0.9, 1.1)) + float(rng.normal(0, 0.05))
            loss = lossf(model(xb), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        print(f"epoch {ep + 1}: loss {tot / len(xt):.4f} ({time.perf_counter() - t1:.0f} s)")
    model.eval()
    with torch.no_grad():
        return torch.cat([model(xe[i : i + 128]) for i in range(0, len(xe), 128)]).sigmoid().numpy()


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cnn-seed", type=int, default=None,
                    help="seed of the CNN's initialisation, batch order and augmentation (default: --seed); another "
                         "value trains a different CNN on the same rendered images, separating training noise from data")
    ap.add_argument("--cnn-seeds", type=int, default=1, metavar="K",
                    help="train K CNNs (seeds --cnn-seed .. +K-1) on the same images and report each finding's mean "
                         "AUROC with the CNNs' range (K times the training time)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prevalence", action="append", metavar="FINDING=RATE",
                    help="override a finding's base rate in train and test (repeatable, on top of the bench's "
                         "enrichment), e.g. Fracture=0.2")
    ap.add_argument("--natural", action="store_true",
                    help="render at the phantom's own base rates (no enrichment of Lung Lesion, Pleural Other, Fracture)")
    ap.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples of the test set for the 95%% CIs")
    args = ap.parse_args(argv)
    if args.cnn_seeds < 1:
        ap.error("--cnn-seeds must be at least 1")

    from unicxr.labels import FINDINGS, UncertainPolicy, apply_policy
    from unicxr.phantom.config import parse_prevalence
    from unicxr.utils.memory import tune_malloc

    tune_malloc()  # the training step's activations are reused instead of page-faulted afresh each step

    prev = {**({} if args.natural else BENCH_PREVALENCE), **parse_prevalence(args.prevalence)}
    if prev:
        print("prevalence overrides (train and test): " + ", ".join(f"{k}={v}" for k, v in prev.items()))
    t0 = time.perf_counter()
    # render before importing torch so the worker processes fork from a torch-free parent
    xtr, ytr = make_arrays(args.n_train, args.size, args.seed * 2 + 101, args.workers, prev)
    xte, yte = make_arrays(args.n_test, args.size, args.seed * 2 + 202, args.workers, prev)
    import torch

    t_data = time.perf_counter() - t0
    print(f"rendered {len(xtr)} + {len(xte)} images at {args.size} px in {t_data:.1f} s")
    torch.set_num_threads(args.threads)
    target = torch.from_numpy(apply_policy(ytr, UncertainPolicy.AS_POSITIVE))
    xt = torch.from_numpy(xtr).float().div_(255.0).sub_(0.5).div_(0.25).unsqueeze(1)
    xe = torch.from_numpy(xte).float().div_(255.0).sub_(0.5).div_(0.25).unsqueeze(1)
    first = args.seed if args.cnn_seed is None else args.cnn_seed
    cnn_seeds = [first + k for k in range(args.cnn_seeds)]
    t1 = time.perf_counter()
    runs = []  # (n_test, 14) sigmoid scores of each CNN
    for k, cs in enumerate(cnn_seeds):
        if len(cnn_seeds) > 1:
            print(f"CNN {k + 1}/{len(cnn_seeds)} (seed {cs})")
        runs.append(_train_and_score(xt, target, xe, cs, args))
    t_train = time.perf_counter() - t1
    yeval = apply_policy(yte, UncertainPolicy.IGNORE)
    ybin = np.where(np.isnan(yeval), np.nan, (yeval == 1).astype(np.float64))
    # every CNN's replicates resample the same test rows (same seed), so their mean is a paired CI of the mean
    reps = np.mean([bootstrap_aurocs(ybin, sc, n_boot=args.n_boot, seed=args.seed) for sc in runs], axis=0)

    def ci(r: np.ndarray) -> str:
        r = r[np.isfinite(r)]
        return f"[{np.quantile(r, 0.025):.3f}, {np.quantile(r, 0.975):.3f}]" if r.size else ""

    res: dict[str, float] = {}
    print(f"\n{'finding':28s} {'test pos':>8s} {'AUROC':>7s}  95% CI (test-set bootstrap)")
    cols = []
    by_cnn: dict[int, list[float]] = {}  # finding column -> its AUROC for each CNN
    for j, name in enumerate(FINDINGS):
        ok = ~np.isnan(yeval[:, j])
        npos = int((yeval[ok, j] == 1).sum())
        per_cnn = by_cnn[j] = [auroc(ybin[ok, j], sc[ok, j]) for sc in runs]
        a = float(np.mean(per_cnn))
        res[name] = a
        flag = ""
        if name != "No Finding" and npos >= 20 and not np.isnan(a):
            cols.append(j)
            flag = " *"
        spread = f"  CNNs {min(per_cnn):.3f}-{max(per_cnn):.3f}" if len(runs) > 1 else ""
        print(f"{name:28s} {npos:8d} {a:7.3f}{flag}  {ci(reps[:, j]) if args.n_boot else ''}{spread}")
    m = float(np.mean([res[FINDINGS[j]] for j in cols])) if cols else float("nan")
    res["macro"] = m
    mci = ci(np.nanmean(reps[:, cols], axis=1)) if cols and args.n_boot else ""
    print(f"\nmacro AUROC over findings with >= 20 test positives (*): {m:.3f} {mci}")
    if len(runs) > 1 and cols:
        macros = [float(np.mean([by_cnn[j][k] for j in cols])) for k in range(len(runs))]
        res["macro_min"], res["macro_max"] = min(macros), max(macros)
        print(f"mean of {len(runs)} CNNs trained on the same images (seeds {cnn_seeds[0]}-{cnn_seeds[-1]}); their "
              f"macros: " + ", ".join(f"{v:.3f}" for v in macros))
    # which drawn variant of a small finding the CNN misses: each subtype's positives against all negatives
    sub = case_subtypes(args.n_test, args.seed * 2 + 202, prev)
    print(f"\n{'subtype (positives vs all negatives)':40s} {'test pos':>8s} {'AUROC':>7s}")
    for name in ("Fracture", "Lung Lesion", "Pleural Other"):
        j = FINDINGS.index(name)
        kinds = np.array([d.get(name, "") for d in sub])
        for st in sorted(set(kinds) - {""}):
            pos = (yeval[:, j] == 1) & (kinds == st)
            npos = int(pos.sum())
            if npos < 3:
                continue
            keep = (yeval[:, j] == 0) | pos
            a = float(np.mean([auroc(ybin[keep, j], sc[keep, j]) for sc in runs]))
            res[f"{name}/{st}"] = a
            print(f"{name + ' / ' + st:40s} {npos:8d} {a:7.3f}")
    print(f"data {t_data:.0f} s, training {t_train:.0f} s, total {time.perf_counter() - t0:.0f} s")
    return res


if __name__ == "__main__":
    main()
