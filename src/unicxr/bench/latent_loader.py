"""Latent-cache benchmark: what a generator's data loader costs with and without ``unicxr encode``.

``python -m unicxr.bench.latent_loader --latents L --cache C --model AE`` times the same random batches
(items/s, single process) four ways:

* ``latent``: ``LatentCache.batch`` (memory-mapped latents; KL mean, VQ codebook lookup);
* ``latent_sample``: KL only, a seeded posterior sample per item;
* ``image``: ``CXRCache.batch`` (the images alone);
* ``image+encode``: images then ``ae.encode`` (what training on images without the cache costs);
* ``decode``: ``ae.decode`` of the latents (what showing or scoring the images costs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

__all__ = ["main", "bench"]


def _rate(fn, batches: list[list[int]]) -> float:
    fn(batches[0])  # warm the maps
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        fn(b)
        n += len(b)
    return n / max(time.perf_counter() - t0, 1e-9)


def bench(latents: str, cache: str, model: str | None, *, batch_size: int = 32, n_batches: int = 20,
          seed: int = 0, threads: int = 1) -> dict[str, float]:
    """Items/s of each way (see the module docstring) over ``n_batches`` random batches."""
    import torch

    from unicxr.data import CXRCache, LatentCache

    torch.set_num_threads(threads)
    lat = LatentCache(latents)
    img = CXRCache(lat.manifest["source"]["path"] if cache is None else cache)
    rows = lat.index["source_row"].to_numpy()
    rng = np.random.default_rng(seed)
    batches = [rng.choice(len(lat), batch_size, replace=False).tolist() for _ in range(n_batches)]
    out = {"latent": _rate(lat.batch, batches)}
    if lat.kind == "kl":
        sampled = LatentCache(latents, latent="sample", seed=seed)
        out["latent_sample"] = _rate(sampled.batch, batches)
    out["image"] = _rate(lambda b: img.batch(rows[b].tolist()), batches)
    if model:
        from unicxr.models.autoencoder import load_autoencoder

        ae, _ = load_autoencoder(model)
        with torch.no_grad():
            out["image+encode"] = _rate(lambda b: ae.encode(img.batch(rows[b].tolist())["image"]), batches[:5])
            out["decode"] = _rate(lambda b: ae.decode(lat.batch(b)["latent"]), batches[:5])
    out.update({"batch_size": batch_size, "threads": threads, "latent_shape": list(lat.latent_shape),
                "image_size": lat.image_size})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latents", required=True, help="latent cache (unicxr encode)")
    p.add_argument("--cache", default=None, help="its image cache (default: the one in the manifest)")
    p.add_argument("--model", default=None, help="the autoencoder (adds image+encode and decode)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-batches", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    res = bench(a.latents, a.cache, a.model, batch_size=a.batch_size, n_batches=a.n_batches, threads=a.threads)
    json.dump(res, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
