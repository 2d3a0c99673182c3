"""Loader benchmark: random-access batches from the prepared cache vs decoding source PNGs with PIL.

``python -m unicxr.bench.loader --root R --size 256`` prepares a cache of the data set at ``R`` (the
phantom layout when ``R/metadata.csv`` exists, otherwise every image under ``R``), reports prepare
throughput, then times the same random batches two ways, side by side:

* ``cache``: ``CXRCache[i]`` per item (memory-mapped uint8 → float tensor), as a training loader does;
* ``pil``: ``Image.open(path).convert("L").resize((size, size))`` → float tensor per item.

``--make-phantom N`` first writes N phantom images (``--source-size`` px) into R when R is empty.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "time_cache", "time_pil"]


def time_cache(cache, batches: list[list[int]]) -> float:
    """Seconds to fetch every batch from the cache (per-item ``cache[i]``, stacked)."""
    import torch

    t0 = time.perf_counter()
    for idx in batches:
        torch.stack([cache[i]["image"] for i in idx])
    return time.perf_counter() - t0


def time_pil(paths: list[str], batches: list[list[int]], size: int) -> float:
    """Seconds to decode + resize every batch's source files with PIL (per item, stacked)."""
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    for idx in batches:
        items = []
        for i in idx:
            with Image.open(paths[i]) as im:
                arr = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
            items.append(torch.from_numpy(arr / 255.0).unsqueeze(0))
        torch.stack(items)
    return time.perf_counter() - t0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m unicxr.bench.loader", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="data set root (phantom layout or a folder of images)")
    p.add_argument("--size", type=int, default=256, help="cache / loader image side in pixels")
    p.add_argument("--format", default="auto", help="prepare format (auto: phantom if metadata.csv, else folder)")
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: a temporary folder)")
    p.add_argument("--batches", type=int, default=20, help="number of random batches per method")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="prepare decoding processes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random batch indices")
    p.add_argument("--make-phantom", type=int, default=0, help="write this many phantom images into an empty ROOT")
    p.add_argument("--source-size", type=int, default=1024, help="phantom image side for --make-phantom")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a side-by-side table; returns the process exit code."""
    args = _parse(argv)
    import torch

    from unicxr.data.cache import CXRCache, PrepareConfig, prepare_cache

    # one intra-op thread, as in a DataLoader worker; avoids thread thrashing on a busy machine
    torch.set_num_threads(1)

    root: Path = args.root
    if args.make_phantom and (not root.exists() or not any(root.iterdir())):
        from unicxr.cli import main as cli_main

        t0 = time.perf_counter()
        code = cli_main(["phantom", "--n", str(args.make_phantom), "--size", str(args.source_size), "--out", str(root),
                         "--workers", str(max(1, args.workers))])
        if code != 0:
            return code
        print(f"phantom: {args.make_phantom} images of {args.source_size} px in {time.perf_counter() - t0:.1f} s")
    if not root.is_dir():
        print(f"error: --root {root} is not a folder (use --make-phantom N to create one)", file=sys.stderr)
        return 2
    fmt = args.format if args.format != "auto" else ("phantom" if (root / "metadata.csv").is_file() else "folder")
    tmp = None
    cache_dir = args.cache
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="unicxr-bench-")
        cache_dir = Path(tmp.name) / "cache"
    try:
        cfg = PrepareConfig(fmt=fmt, root=root, out=cache_dir, size=args.size, workers=args.workers, views="all",
                            overwrite=True)
        t0 = time.perf_counter()
        manifest = prepare_cache(cfg, log=lambda s: None, progress=True)
        prep_wall = time.perf_counter() - t0
        cache = CXRCache(cache_dir)
        n = len(cache)
        if n == 0:
            print("error: nothing was cached", file=sys.stderr)
            return 2
        rng = np.random.default_rng(args.seed)
        batches = [rng.integers(0, n, size=args.batch_size).tolist() for _ in range(args.batches)]
        paths = [cache[i]["path"] for i in range(n)]
        time_cache(cache, batches[:2])  # warm-up: open the memory maps
        time_pil(paths, batches[:1], args.size)
        t_cache = time_cache(cache, batches)
        t_pil = time_pil(paths, batches, args.size)
        items = args.batches * args.batch_size
        ratio = t_pil / t_cache if t_cache > 0 else float("inf")
        src_shape = (int(cache.index["height"].iloc[0]), int(cache.index["width"].iloc[0]))
        figures = {
            "images": n,
            "source_shape": list(src_shape),
            "size": args.size,
            "prepare_images_per_s": manifest.get("throughput_img_s", 0.0),
            "prepare_wall_s": prep_wall,
            "prepare_workers": args.workers,
            "batches": args.batches,
            "batch_size": args.batch_size,
            "cache_items_per_s": items / t_cache,
            "pil_items_per_s": items / t_pil,
            "cache_ms_per_batch": 1000 * t_cache / args.batches,
            "pil_ms_per_batch": 1000 * t_pil / args.batches,
            "speedup": ratio,
        }
        prep = (
            f"prepare: {figures['prepare_images_per_s']:.1f} images/s decode ({prep_wall:.1f} s wall, {args.workers} workers)"
            if figures["prepare_images_per_s"]
            else "prepare: existing cache reused (nothing decoded; use a new --cache for the prepare figure)"
        )
        print(f"\n{n} images ({src_shape[0]}x{src_shape[1]} source) → {args.size} px cache; {prep}")
        print(f"{'method':<8}{'ms/batch':>12}{'items/s':>12}")
        print(f"{'cache':<8}{figures['cache_ms_per_batch']:>12.2f}{figures['cache_items_per_s']:>12.0f}")
        print(f"{'pil':<8}{figures['pil_ms_per_batch']:>12.2f}{figures['pil_items_per_s']:>12.0f}")
        print(f"cache is {ratio:.1f}x faster than PIL decoding per item ({args.batches} batches of {args.batch_size})")
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
