"""The latent cache: ``unicxr encode`` writes it, :class:`LatentCache` reads it (memory-mapped).

A sibling of the image cache (:mod:`unicxr.data.cache`) with the same conventions: shards of ``.npy``
arrays, one index part per shard written after its arrays (the "done" marker), ``index.parquet`` and
``cache.json`` written last, every file atomic, a killed run resumed shard by shard. Layout::

    L/cache.json                      manifest: kind "latent", autoencoder path + config/weights hashes,
                                      scale factor, latent shape, source cache, counts — written last
    L/plan.json                       fingerprint of the settings (resume check)
    L/shards/shard-00000.npy          KL: posterior means (N, C, h, w) float32; VQ: code indices (N, h, w),
                                      or (N, Q, h, w) with Q residual codebooks
    L/shards/shard-00000.logvar.npy   KL only: posterior log-variances (N, C, h, w) float32
    L/codebook.npy                    VQ only: the codebook (K, C) float32 (unscaled); (Q, K, C) with Q residual
                                      codebooks, whose picked codes sum to the latent
    L/parts/shard-00000.parquet       index rows of that shard (the source cache's columns + source_row)
    L/index.parquet                   all items

Items carry the :class:`~unicxr.data.cache.CXRCache` keys with ``latent`` instead of ``image``:
``latent`` (C, h, w) float32, already multiplied by the autoencoder's scale factor (what
``ae.encode(x)`` returns, ``ae.decode(latent)`` draws it), plus ``mean``/``logvar`` (KL, unscaled) or
``indices`` (VQ, (h, w) int64; (Q, h, w) with Q residual codebooks). This module never imports a model:
the writer takes any object with the autoencoder API (:mod:`unicxr.models.autoencoder`; VQ: ``codebooks()``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unicxr.data.cache import (
    CACHE_VERSION,
    ShardedIndex,
    index_columns,
    shard_done,
    shard_name,
    start_plan,
    write_index_part,
    write_npy,
)
from unicxr.data.splits import normalize_split
from unicxr.labels import FINDINGS
from unicxr.utils import UnicxrError, atomic_write, atomic_write_text
from unicxr.utils.io import sha256_file

__all__ = ["LatentCache", "write_latent_cache", "autoencoder_fingerprint", "LATENT_KIND"]

LATENT_KIND = "latent"
_SHARD_TARGET_BYTES = 128 * 1024 * 1024


def autoencoder_fingerprint(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{"path", "config_sha256", "weights_sha256"}`` of a saved autoencoder directory: what a latent
    cache records so that a generator can check it decodes with the matching autoencoder."""
    d = Path(model_dir).resolve()
    return {
        "path": str(d),
        "config_sha256": sha256_file(d / "config.json"),
        "weights_sha256": sha256_file(d / "model.safetensors"),
    }


# ------------------------------------------------------------------------------------------- writing
def _extra_done(out: Path, i: int, kind: str) -> bool:
    if kind != "kl":
        return True
    main = out / "shards" / f"{shard_name(i)}.npy"
    extra = out / "shards" / f"{shard_name(i)}.logvar.npy"
    try:
        return extra.is_file() and np.load(extra, mmap_mode="r").shape == np.load(main, mmap_mode="r").shape
    except Exception:
        return False


def write_latent_cache(
    model: Any,
    model_dir: str | os.PathLike[str],
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str | None = None,
    size: int | None = None,
    batch_size: int = 32,
    shard_size: int = 0,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode the images of a ``unicxr prepare`` cache into a latent cache (resumable, atomic).

    Args:
        model: a loaded autoencoder (``kind`` ``kl`` or ``vq``; the API of
            :class:`unicxr.models.autoencoder.LatentAutoencoder`), in eval mode.
        model_dir: the directory it was loaded from (recorded with its hashes).
        source: the image cache directory.
        out: the latent cache directory.
        split: encode only this split (None: all items).
        size: resize the images to this side before encoding (None: the cache's size), e.g. the
            latents of a generator's low-resolution training phase.
        batch_size: images per encoder call.
        shard_size: items per shard (0: automatic).
        overwrite: replace a latent cache made with other settings.
        log: where notes are printed.
        progress: show a progress bar.

    Returns:
        The manifest written to ``cache.json``.
    """
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from unicxr.data.cache import CXRCache
    from unicxr.utils.tensor_image import resize_square

    t0 = time.perf_counter()
    src = CXRCache(source)
    out = Path(out).expanduser()
    kind = str(model.kind)
    if kind not in ("kl", "vq"):
        raise UnicxrError(f"--model: unsupported autoencoder kind {kind!r}")
    df = pd.read_parquet(src.root / "index.parquet")
    positions = np.arange(len(df))
    canon = None
    if split is not None:
        canon = normalize_split(split)
        if canon is None:
            raise UnicxrError(f"--split: unknown split {split!r}; expected train, validate or test")
        positions = positions[(df["split"] == canon).to_numpy()]
    if len(positions) == 0:
        raise UnicxrError(f"--cache {source}: no items to encode (split {split!r})")
    resize = size is not None and int(size) != src.size
    size = int(size) if size is not None else src.size
    latent_shape = tuple(int(v) for v in model.latent_shape(size))
    item_bytes = 4 * int(np.prod(latent_shape)) * (2 if kind == "kl" else 1)
    shard_size = shard_size or int(max(64, min(16384, _SHARD_TARGET_BYTES // item_bytes)))
    n_shards = math.ceil(len(positions) / shard_size)
    ae = autoencoder_fingerprint(model_dir)
    num_codes = int(getattr(model.config, "num_embeddings", 0)) if kind == "vq" else 0
    idx_dtype = np.int16 if num_codes and num_codes <= 32767 else np.int32
    settings = {
        "version": CACHE_VERSION,
        "kind": LATENT_KIND,
        "source_fingerprint": src.manifest.get("fingerprint"),
        "source": str(src.root.resolve()),
        "split": canon,
        "autoencoder": {k: v for k, v in ae.items() if k != "path"},
        "shard_size": shard_size,
    }
    if resize:
        settings["image_size"] = size  # only when resized, so fingerprints of existing caches stay valid
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    plan_path = start_plan(out, fingerprint, overwrite=overwrite,
                           same="a latent cache made with other settings, data or autoencoder",
                           other="files that are not a latent cache", files=("codebook.npy",))
    atomic_write_text(plan_path, json.dumps({"fingerprint": fingerprint, "settings": settings}, indent=2))
    if kind == "vq":
        codebook = model.codebooks().float().cpu().numpy()  # (N, K, C); stored (K, C) for one codebook
        write_npy(out / "codebook.npy", np.ascontiguousarray(codebook[0] if len(codebook) == 1 else codebook))

    pending = [i for i in range(n_shards) if not (shard_done(out, i) and _extra_done(out, i, kind))]
    if len(pending) < n_shards:
        log(f"resuming: {n_shards - len(pending)} of {n_shards} shards already finished")
    n_pending = sum(min(shard_size, len(positions) - i * shard_size) for i in pending)
    device = next(model.parameters()).device
    records = df.to_dict("records") if pending else []
    t_enc = time.perf_counter()
    with tqdm(total=n_pending, desc="encoding", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for s in pending:
            pos = positions[s * shard_size : (s + 1) * shard_size]
            mains, logvars = [], []
            for b in range(0, len(pos), batch_size):
                chunk = pos[b : b + batch_size]
                x = src.batch(chunk.tolist())["image"].to(device)
                if resize:
                    x = resize_square(x, size)
                with torch.no_grad():
                    if kind == "kl":
                        mu, lv = model.posterior(x)
                        mains.append(mu.float().cpu().numpy())
                        logvars.append(lv.float().cpu().numpy())
                    else:
                        mains.append(model.encode_indices(x).cpu().numpy().astype(idx_dtype))
                bar.update(len(chunk))
            if kind == "kl":
                write_npy(out / "shards" / f"{shard_name(s)}.logvar.npy", np.concatenate(logvars))
            write_npy(out / "shards" / f"{shard_name(s)}.npy", np.concatenate(mains))
            rows = []
            for k, p in enumerate(pos):
                r = records[int(p)]
                row = {c: r.get(c) for c in index_columns()}
                row.update(idx=s * shard_size + k, shard=s, offset=k, status="ok", source_row=int(p))
                rows.append(row)
            write_index_part(out / "parts" / f"{shard_name(s)}.parquet", rows, extra_columns=("source_row",))
    enc_s = time.perf_counter() - t_enc

    parts = [pd.read_parquet(out / "parts" / f"{shard_name(i)}.parquet") for i in range(n_shards)]
    index = pd.concat(parts, ignore_index=True).drop(columns=["status"])
    with atomic_write(out / "index.parquet", "wb") as fh:
        index.to_parquet(fh, index=False)
    rate = n_pending / enc_s if enc_s > 0 and n_pending else 0.0
    manifest = {
        "version": CACHE_VERSION,
        "kind": LATENT_KIND,
        "latent_kind": kind,
        "stored": "mean_logvar" if kind == "kl" else "indices",
        "latent_shape": list(latent_shape),
        "scale_factor": float(model.scale),
        "num_embeddings": num_codes or None,
        "num_quantizers": int(model.config.num_quantizers) if kind == "vq" else None,
        "index_dtype": np.dtype(idx_dtype).name if kind == "vq" else None,
        "image_size": size,
        "autoencoder": {**ae, "model_type": model.model_type},
        "source": {"path": str(src.root.resolve()), "fingerprint": src.manifest.get("fingerprint")},
        "split": canon,
        "shard_size": shard_size,
        "shards": [f"shards/{shard_name(i)}.npy" for i in range(n_shards)],
        "findings": list(FINDINGS),
        "counts": {
            "cached": int(len(index)),
            "splits": {str(k): int(v) for k, v in index["split"].value_counts().sort_index().items()},
        },
        "fingerprint": fingerprint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(out / "cache.json", json.dumps(manifest, indent=2))
    log(
        f"encoded {n_pending} images in {enc_s:.1f} s ({rate:.1f} img/s); latent cache of {len(index)} items "
        f"{tuple(latent_shape)} at {out} (total {time.perf_counter() - t0:.1f} s)"
    )
    manifest["throughput_img_s"] = rate
    return manifest


# ------------------------------------------------------------------------------------------- reading
class LatentCache(ShardedIndex):
    """Random access to a latent cache written by ``unicxr encode`` (items read from the shard files on demand).

    ``cache[i]`` returns ``latent`` (torch float32 (C, h, w), scaled), ``mean``/``logvar`` (KL,
    unscaled) or ``indices`` (VQ, int64 (h, w) or (Q, h, w)), ``labels`` (float32 (14,), NaN = not mentioned),
    ``report``, ``path``, ``split``, ``view``, ``patient_id``, ``study_id`` and ``index`` (row in the
    full latent index).

    Args:
        root: the latent cache directory.
        split: keep only this split, or None.
        latent: KL only: ``mean`` (default) or ``sample`` (mean + std · ε, ε seeded by (``seed``,
            epoch, index): the same item gives the same sample within an epoch).
        seed: seed of the posterior samples.
    """

    def __init__(
        self, root: str | os.PathLike[str], split: str | None = None, *, latent: str = "mean", seed: int = 0
    ) -> None:
        self._open_manifest(root, "not a finished latent cache (no cache.json); run `unicxr encode`")
        manifest_path = self.root / "cache.json"
        if self.manifest.get("kind") != LATENT_KIND:
            raise UnicxrError(f"{self.root}: not a latent cache (an image cache? read it with CXRCache)")
        if self.manifest.get("version") != CACHE_VERSION:
            raise UnicxrError(f"{manifest_path}: latent cache version {self.manifest.get('version')} is not {CACHE_VERSION}")
        if latent not in ("mean", "sample"):
            raise ValueError(f"latent: expected 'mean' or 'sample', got {latent!r}")
        self.kind: str = self.manifest["latent_kind"]
        self.latent_mode = latent
        self.seed = int(seed)
        self.epoch = 0
        self.scale_factor = float(self.manifest["scale_factor"])
        self._load_index(split)
        self._codebook = np.load(self.root / "codebook.npy") if self.kind == "vq" else None

    # -- properties -------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(C, h, w) of every latent."""
        return tuple(self.manifest["latent_shape"])

    @property
    def image_size(self) -> int:
        """Side of the images the latents were encoded from."""
        return int(self.manifest["image_size"])

    @property
    def autoencoder(self) -> dict[str, Any]:
        """Path, model type and config/weights hashes of the autoencoder that wrote the latents."""
        return dict(self.manifest["autoencoder"])

    def check_autoencoder(self, model_dir: str | os.PathLike[str]) -> None:
        """Raise :class:`UnicxrError` unless ``model_dir`` holds the autoencoder that wrote this cache."""
        fp = autoencoder_fingerprint(model_dir)
        want = self.autoencoder
        for key in ("config_sha256", "weights_sha256"):
            if fp[key] != want.get(key):
                raise UnicxrError(
                    f"{model_dir}: not the autoencoder of latent cache {self.root} ({key} differs; "
                    f"it was written by {want.get('path')})"
                )

    def set_epoch(self, epoch: int) -> None:
        """Change the posterior draw of ``latent='sample'`` (call once per epoch)."""
        self.epoch = int(epoch)

    def _latents(self, idx: Sequence[int]) -> dict[str, Any]:
        import torch

        main = np.stack([self._raw(i) for i in idx])
        if self.kind == "vq":
            indices = main.astype(np.int64)
            if self._codebook.ndim == 3:  # residual codebooks (N, K, C), indices (B, N, h, w): codes summed
                picked = sum(self._codebook[k][indices[:, k]] for k in range(len(self._codebook)))
            else:
                picked = self._codebook[indices]
            z = np.moveaxis(picked, -1, 1)  # (B, h, w, C) -> (B, C, h, w)
            return {"latent": torch.from_numpy(np.ascontiguousarray(z * self.scale_factor, dtype=np.float32)),
                    "indices": torch.from_numpy(indices)}
        mean = torch.from_numpy(np.ascontiguousarray(main, dtype=np.float32))
        logvar = torch.from_numpy(np.stack([self._raw(i, ".logvar") for i in idx]).astype(np.float32))
        z = mean
        if self.latent_mode == "sample":
            eps = torch.stack([
                torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(
                    hash((self.seed, self.epoch, int(self._rows[i]))) & ((1 << 63) - 1)))
                for i in idx
            ])
            z = mean + eps * torch.exp(0.5 * logvar)
        return {"latent": z * self.scale_factor, "mean": mean, "logvar": logvar}

    def latent(self, i: int):
        """Latent ``i`` (C, h, w) float32, scaled."""
        return self._latents([self._check(int(i))])["latent"][0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._check(int(i))
        item = {k: v[0] for k, v in self._latents([i]).items()}
        return {**item, **self._fields([i], stacked=False)}

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Several items at once (same keys, stacked: ``latent`` (B, C, h, w), ``labels`` (B, 14),
        ``index`` (B,) int64; lists for the strings)."""
        idx = [self._check(int(i)) for i in indices]
        return {**self._latents(idx), **self._fields(idx, stacked=True)}

    def __repr__(self) -> str:
        return (f"LatentCache({str(self.root)!r}, split={self.split!r}, n={len(self)}, kind={self.kind!r}, "
                f"latent_shape={self.latent_shape})")
