"""The preprocessed cache: ``unicxr prepare`` writes it, :class:`CXRCache` reads it (memory-mapped).

Layout of a cache directory ``C``::

    C/cache.json                manifest (format, size, bit depth, counts, version) — written last
    C/plan.json                 fingerprint of the settings and records (resume check)
    C/shards/shard-00000.npy    uint8 or uint16 array (N, PX, PX), one per shard
    C/parts/shard-00000.parquet index rows of that shard (written after its .npy: marks it done)
    C/index.parquet             all cached images: labels, report, view, patient, split, path, shard, offset
    C/rejects.csv               path,reason for every file that could not be decoded

Every file is written atomically (temporary file, fsync, rename), and a shard counts as finished only
when its index part exists and agrees with its array, so a killed ``prepare`` never leaves a half
written shard that is later read as valid; re-running it skips finished shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unicxr.data.io import DecodeError, DecodeLimits, decode_image, resize_square, to_uint
from unicxr.data.sources import ReadStats, Record, SourceOptions, is_frontal, iter_records
from unicxr.data.splits import normalize_split, patient_split
from unicxr.labels import FINDINGS, NUM_FINDINGS
from unicxr.utils import UnicxrError, atomic_write, atomic_write_text

__all__ = [
    "CACHE_VERSION",
    "PrepareConfig",
    "prepare_cache",
    "clean_records",
    "CXRCache",
    "StringColumn",
    "start_plan",
    "ShardedIndex",
    "STRING_KEYS",
    "shard_name",
    "write_npy",
    "write_index_part",
    "index_columns",
    "shard_done",
    "clean_stale_temps",
]

CACHE_VERSION = 1
_SHARD_TARGET_BYTES = 256 * 1024 * 1024


@dataclass
class PrepareConfig:
    """Settings of one ``unicxr prepare`` run (see the CLI for the meaning of each option)."""

    fmt: str
    root: Path
    out: Path
    size: int = 256
    bit_depth: int = 8
    fit: str = "pad"
    views: str = "frontal"
    workers: int = 2
    shard_size: int = 0
    require_report: bool = False
    min_report_words: int = 3
    max_report_words: int = 300
    one_per_study: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    limit: int | None = None
    timeout_s: float = 120.0
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    source: SourceOptions = field(default_factory=SourceOptions)
    overwrite: bool = False

    def validate(self) -> None:
        """Raise :class:`UnicxrError` naming the option that is out of range."""
        if not 8 <= self.size <= 8192:
            raise UnicxrError(f"--size: must be between 8 and 8192 pixels, got {self.size}")
        if self.bit_depth not in (8, 16):
            raise UnicxrError(f"--bit-depth: must be 8 or 16, got {self.bit_depth}")
        if self.fit not in ("pad", "crop"):
            raise UnicxrError(f"--fit: must be 'pad' or 'crop', got {self.fit!r}")
        if self.views not in ("frontal", "all"):
            raise UnicxrError(f"--views: must be 'frontal' or 'all', got {self.views!r}")
        if self.workers < 0:
            raise UnicxrError(f"--workers: must be >= 0, got {self.workers}")
        if self.shard_size < 0:
            raise UnicxrError(f"--shard-size: must be >= 0 (0 = automatic), got {self.shard_size}")
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise UnicxrError("--val-fraction/--test-fraction: must be >= 0 and sum to less than 1")
        if self.limit is not None and self.limit < 1:
            raise UnicxrError(f"--limit: must be >= 1, got {self.limit}")
        if self.timeout_s <= 0:
            raise UnicxrError(f"--timeout: must be positive, got {self.timeout_s}")


# ------------------------------------------------------------------------------------------ cleaning
def clean_records(
    records: Sequence[Record], cfg: PrepareConfig, log: Callable[[str], None] = print
) -> list[Record]:
    """Apply the cleaning rules in order, printing the count each step removes.

    Steps: duplicate paths → non-frontal views (``views=frontal``; unknown views are kept) → empty /
    too-short reports (only with ``require_report``) → report length cap (truncation) → one image
    per study (``one_per_study``, PA preferred over AP) → ``limit``. Records without a split get a
    deterministic patient-level one.
    """
    out = list(records)
    log(f"  records read                 {len(out):>8}")

    seen: set[str] = set()
    kept = []
    for r in out:
        if r.path not in seen:
            seen.add(r.path)
            kept.append(r)
    log(f"  - duplicate paths            {len(out) - len(kept):>8}")
    out = kept

    if cfg.views == "frontal":
        kept = [r for r in out if is_frontal(r.view) is not False]
        unknown = sum(1 for r in kept if is_frontal(r.view) is None)
        log(f"  - non-frontal views          {len(out) - len(kept):>8}" + (f"   ({unknown} with unknown view kept)" if unknown else ""))
        out = kept

    if cfg.require_report:
        kept = [r for r in out if r.report.strip()]
        log(f"  - empty reports              {len(out) - len(kept):>8}")
        out = kept
        kept = [r for r in out if len(r.report.split()) >= cfg.min_report_words]
        log(f"  - reports < {cfg.min_report_words} words        {len(out) - len(kept):>8}")
        out = kept

    capped = 0
    if cfg.max_report_words > 0:
        for r in out:
            words = r.report.split()
            if len(words) > cfg.max_report_words:
                r.report = " ".join(words[: cfg.max_report_words])
                capped += 1
    log(f"  ~ reports capped at {cfg.max_report_words} words {capped:>6}")

    if cfg.one_per_study:
        rank = {"PA": 0, "AP": 1, "FRONTAL": 2}
        best: dict[tuple[str, str], Record] = {}
        order: list[tuple[str, str]] = []
        for r in out:
            key = (r.patient_id, r.study_id or r.path)
            if key not in best:
                best[key] = r
                order.append(key)
            elif rank.get(r.view, 3) < rank.get(best[key].view, 3):
                best[key] = r
        kept = [best[k] for k in order]
        log(f"  - extra images per study     {len(out) - len(kept):>8}")
        out = kept

    if cfg.limit is not None and len(out) > cfg.limit:
        log(f"  - beyond --limit {cfg.limit:<10} {len(out) - cfg.limit:>8}")
        out = out[: cfg.limit]

    for r in out:
        if r.split is None:
            r.split = patient_split(r.patient_id or r.path, cfg.seed, cfg.val_fraction, cfg.test_fraction)
    log(f"  = kept                       {len(out):>8}")
    return out


# ------------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class _Job:
    path: str
    size: int
    fit: str
    bit_depth: int
    limits: DecodeLimits
    timeout_s: float


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - exercised only by a hanging decoder
    raise _Timeout()


def _process(job: _Job) -> tuple[str, Any, int, int]:
    """Decode + resize + quantise one file → ("ok", array, H, W) or ("reject", reason, 0, 0)."""
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    old = None
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, job.timeout_s)
    try:
        img = decode_image(job.path, limits=job.limits, draft_size=job.size)
        h, w = img.shape
        small = resize_square(img, job.size, job.fit)
        return "ok", to_uint(small, job.bit_depth), h, w
    except DecodeError as exc:
        return "reject", exc.reason, 0, 0
    except _Timeout:
        return "reject", f"decoding timed out after {job.timeout_s:g} s", 0, 0
    except MemoryError:
        return "reject", "out of memory while decoding", 0, 0
    except Exception as exc:  # resize of a degenerate image, ...: reject, never crash the job
        return "reject", f"processing failed: {type(exc).__name__}: {exc}"[:300], 0, 0
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _mp_context():
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


class _Pool:
    """Process pool that survives a worker crash (a decoder segfault rejects only that file)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ex = None

    def _executor(self):
        from concurrent.futures import ProcessPoolExecutor

        if self._ex is None:
            self._ex = ProcessPoolExecutor(max_workers=self.workers, mp_context=_mp_context())
        return self._ex

    def _reset(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=False, cancel_futures=True)
            self._ex = None

    def map(self, jobs: list[_Job], on_result: Callable[[], None]) -> list[tuple[str, Any, int, int]]:
        from concurrent.futures.process import BrokenProcessPool

        if self.workers <= 1:
            out = []
            for job in jobs:
                out.append(_process(job))
                on_result()
            return out
        chunk = max(1, min(16, len(jobs) // (self.workers * 4) or 1))
        try:
            out = []
            for res in self._executor().map(_process, jobs, chunksize=chunk):
                out.append(res)
                on_result()
            return out
        except BrokenProcessPool:
            self._reset()
        # a worker died: redo this batch one file at a time to find and reject the culprit(s)
        out = []
        for job in jobs:
            try:
                out.append(self._executor().submit(_process, job).result())
            except BrokenProcessPool:
                self._reset()
                out.append(("reject", "decoder crashed (worker process died)", 0, 0))
            on_result()
        return out

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True)
            self._ex = None


# ------------------------------------------------------------------------------------------- writing
def shard_name(i: int) -> str:
    """File stem of shard ``i`` (``shard-00000``)."""
    return f"shard-{i:05d}"


def _record_row(r: Record) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": r.path,
        "patient_id": r.patient_id,
        "study_id": r.study_id,
        "view": r.view,
        "split": r.split or "",
        "report": r.report,
        "source": r.source,
        "meta": json.dumps(r.meta, sort_keys=True, ensure_ascii=False) if r.meta else "",
    }
    for i, name in enumerate(FINDINGS):
        row[name] = float(r.labels[i])
    return row


def _fingerprint(cfg: PrepareConfig, records: Sequence[Record], shard_size: int) -> str:
    h = hashlib.sha256()
    settings = {
        "version": CACHE_VERSION,
        "fmt": cfg.fmt,
        "root": str(cfg.root.resolve()),
        "size": cfg.size,
        "bit_depth": cfg.bit_depth,
        "fit": cfg.fit,
        "shard_size": shard_size,
        "limits": asdict(cfg.limits),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    for r in records:
        h.update(json.dumps([r.path, r.patient_id, r.study_id, r.view, r.split, r.report, r.source]).encode())
        h.update(np.asarray(r.labels, dtype=np.float32).tobytes())
    return h.hexdigest()


def write_npy(path: Path, arr: np.ndarray) -> None:
    """Write an array as ``.npy`` atomically (no pickles)."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def write_index_part(path: Path, rows: list[dict[str, Any]], extra_columns: Sequence[str] = ()) -> None:
    """Write index rows (the :func:`index_columns` + ``extra_columns``) to a parquet file atomically."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=[*index_columns(), *extra_columns])
    for name in FINDINGS:
        df[name] = df[name].astype("float32")
    for name in ("shard", "offset", "height", "width", "idx"):
        df[name] = df[name].astype("int64")
    with atomic_write(path, "wb") as fh:
        df.to_parquet(fh, index=False)


def index_columns() -> list[str]:
    """Columns of an index part (``status`` is ``ok`` or the reject reason)."""
    return [
        "idx", "path", "patient_id", "study_id", "view", "split", "report", *FINDINGS,
        "source", "meta", "shard", "offset", "height", "width", "status",
    ]


def shard_done(out: Path, i: int) -> bool:
    """Whether shard ``i`` of the cache being written in ``out`` is finished (part + matching array)."""
    import pandas as pd

    part = out / "parts" / f"{shard_name(i)}.parquet"
    npy = out / "shards" / f"{shard_name(i)}.npy"
    if not part.is_file() or not npy.is_file():
        return False
    try:
        ok = int((pd.read_parquet(part, columns=["status"])["status"] == "ok").sum())
        arr = np.load(npy, mmap_mode="r")
        return arr.shape[0] == ok
    except Exception:
        return False


def clean_stale_temps(out: Path) -> None:
    """Remove temporary files a killed writer left in ``out``, ``out/shards`` and ``out/parts``."""
    for sub in (out, out / "shards", out / "parts"):
        if sub.is_dir():
            for p in sub.glob(".*.tmp"):
                try:
                    p.unlink()
                except OSError:
                    pass


def start_plan(out: Path, fingerprint: str, *, overwrite: bool, same: str, other: str, files: tuple[str, ...] = ()) -> Path:
    """Prepare folder ``out`` for a resumable cache write whose settings hash to ``fingerprint``.

    A folder with the same ``plan.json`` fingerprint is resumed as is; a different (``same``
    describes it) or foreign one (``other``) is an error unless ``overwrite``, which removes the
    shards, parts, manifest, index, plan and ``files``. Returns the plan path (written by the caller).
    """
    plan_path = out / "plan.json"
    if out.exists() and any(out.iterdir()):
        old = None
        if plan_path.is_file():
            try:
                old = json.loads(plan_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
        if old is None or old.get("fingerprint") != fingerprint:
            if not overwrite:
                what = same if old else other
                raise UnicxrError(f"--out {out}: holds {what}; use --overwrite to replace it or choose another folder")
            for name in ("shards", "parts"):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in ("cache.json", "index.parquet", "plan.json", *files):
                (out / name).unlink(missing_ok=True)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    return plan_path


def prepare_cache(cfg: PrepareConfig, *, log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Read a data set, clean it, decode every image and write the cache (resumable).

    Args:
        cfg: the run's settings.
        log: where step counts and notes are printed.
        progress: show a tqdm progress bar while decoding.

    Returns:
        The manifest written to ``cache.json``.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    out = cfg.out.expanduser()
    t0 = time.perf_counter()
    stats = ReadStats()
    skip = (out,)
    records = list(
        tqdm(
            iter_records(cfg.fmt, cfg.root, cfg.source, stats, skip=skip),
            desc="reading",
            unit="rec",
            disable=not progress,
            dynamic_ncols=True,
        )
    )
    log(f"{cfg.fmt}: {stats.listed} listed, {stats.missing_files} listed files missing on disk")
    for note in stats.notes:
        log(f"  note: {note}")
    if stats.bad_label_cells:
        log(f"  note: {stats.bad_label_cells} label cells not in 1/0/-1/blank were treated as blank")
    records = clean_records(records, cfg, log)
    if not records:
        raise UnicxrError(f"--root {cfg.root}: no images left to cache (see the counts above)")
    by_split: dict[str, int] = {}
    for r in records:
        by_split[r.split or ""] = by_split.get(r.split or "", 0) + 1
    log("  splits: " + ", ".join(f"{k}={v}" for k, v in sorted(by_split.items())))

    item_bytes = cfg.size * cfg.size * (1 if cfg.bit_depth == 8 else 2)
    shard_size = cfg.shard_size or int(max(64, min(8192, _SHARD_TARGET_BYTES // item_bytes)))
    n_shards = math.ceil(len(records) / shard_size)
    fingerprint = _fingerprint(cfg, records, shard_size)

    plan_path = start_plan(out, fingerprint, overwrite=cfg.overwrite, same="a cache made with different settings or data",
                           other="files that are not a unicxr cache", files=("rejects.csv",))
    atomic_write_text(
        plan_path,
        json.dumps({"fingerprint": fingerprint, "records": len(records), "shard_size": shard_size}, indent=2),
    )

    pending = [i for i in range(n_shards) if not shard_done(out, i)]
    if len(pending) < n_shards:
        log(f"resuming: {n_shards - len(pending)} of {n_shards} shards already finished")
    n_pending = sum(min(shard_size, len(records) - i * shard_size) for i in pending)
    pool = _Pool(cfg.workers)
    t_decode = time.perf_counter()
    dtype = np.uint8 if cfg.bit_depth == 8 else np.uint16
    try:
        with tqdm(total=n_pending, desc="decoding", unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for s in pending:
                chunk = records[s * shard_size : (s + 1) * shard_size]
                jobs = [_Job(r.path, cfg.size, cfg.fit, cfg.bit_depth, cfg.limits, cfg.timeout_s) for r in chunk]
                results = pool.map(jobs, lambda: bar.update(1))
                arrays: list[np.ndarray] = []
                rows: list[dict[str, Any]] = []
                for k, (r, (status, payload, h, w)) in enumerate(zip(chunk, results, strict=True)):
                    row = _record_row(r)
                    row.update(idx=s * shard_size + k, shard=s, height=h, width=w)
                    if status == "ok":
                        row.update(offset=len(arrays), status="ok")
                        arrays.append(payload)
                    else:
                        row.update(offset=-1, status=str(payload))
                    rows.append(row)
                stack = np.stack(arrays) if arrays else np.zeros((0, cfg.size, cfg.size), dtype=dtype)
                write_npy(out / "shards" / f"{shard_name(s)}.npy", stack.astype(dtype, copy=False))
                write_index_part(out / "parts" / f"{shard_name(s)}.parquet", rows)
    finally:
        pool.close()
    decode_s = time.perf_counter() - t_decode
    return _finish(cfg, out, n_shards, shard_size, fingerprint, stats, n_pending, decode_s, t0, log)


def _finish(cfg, out, n_shards, shard_size, fingerprint, stats, n_pending, decode_s, t0, log) -> dict[str, Any]:
    import pandas as pd

    parts = [pd.read_parquet(out / "parts" / f"{shard_name(i)}.parquet") for i in range(n_shards)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=index_columns())
    ok = df[df["status"] == "ok"].drop(columns=["status"]).reset_index(drop=True)
    rej = df[df["status"] != "ok"]
    with atomic_write(out / "index.parquet", "wb") as fh:
        ok.to_parquet(fh, index=False)
    csv_text = pd.DataFrame({"path": rej["path"], "reason": rej["status"]}).to_csv(index=False)
    atomic_write_text(out / "rejects.csv", csv_text)
    rate = n_pending / decode_s if decode_s > 0 and n_pending else 0.0
    manifest = {
        "version": CACHE_VERSION,
        "format": cfg.fmt,
        "root": str(cfg.root.resolve()),
        "size": cfg.size,
        "bit_depth": cfg.bit_depth,
        "dtype": "uint8" if cfg.bit_depth == 8 else "uint16",
        "fit": cfg.fit,
        "views": cfg.views,
        "shard_size": shard_size,
        "shards": [f"shards/{shard_name(i)}.npy" for i in range(n_shards)],
        "findings": list(FINDINGS),
        "counts": {
            "listed": stats.listed,
            "missing_files": stats.missing_files,
            "records": len(df),
            "cached": len(ok),
            "rejected": len(rej),
            "splits": {str(k): int(v) for k, v in ok["split"].value_counts().sort_index().items()},
        },
        "fingerprint": fingerprint,
        "seed": cfg.seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(out / "cache.json", json.dumps(manifest, indent=2))
    log(
        f"cached {len(ok)} images, rejected {len(rej)} (see {out / 'rejects.csv'}); "
        f"decoded {n_pending} in {decode_s:.1f} s ({rate:.1f} img/s), total {time.perf_counter() - t0:.1f} s"
    )
    manifest["throughput_img_s"] = rate
    return manifest


# ------------------------------------------------------------------------------------------- reading
class StringColumn:
    """A read-only list of strings stored as one UTF-8 byte array + offsets (no per-string objects)."""

    def __init__(self, values: Sequence[str]) -> None:
        encoded = [v.encode("utf-8") for v in values]
        self._offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._data[a:b].tobytes().decode("utf-8")


STRING_KEYS = ("report", "path", "split", "view", "patient_id", "study_id")


class ShardedIndex:
    """What a ``unicxr prepare`` image cache and a ``unicxr encode`` latent cache share: the manifest,
    ``index.parquet`` filtered to a split (labels, compact string columns), bounds checks, and items
    read from ``shards/NNNNN[.suffix].npy`` with ``pread`` (no memory map: the page cache never counts
    in the reading process's RSS; file descriptors are reopened in DataLoader workers)."""

    root: Path
    manifest: dict[str, Any]

    def _open_manifest(self, root: str | os.PathLike[str], missing: str) -> dict[str, Any]:
        self.root = Path(root).expanduser()
        manifest_path = self.root / "cache.json"
        if not manifest_path.is_file():
            raise UnicxrError(f"{self.root}: {missing}")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UnicxrError(f"{manifest_path}: unreadable manifest: {exc}") from None
        return self.manifest

    def _load_index(self, split: str | None) -> None:
        import pandas as pd

        df = pd.read_parquet(self.root / "index.parquet")
        df["row"] = np.arange(len(df))
        if split is not None:
            canon = normalize_split(split)
            if canon is None:
                raise UnicxrError(f"split: unknown split {split!r}; expected train, validate or test")
            df = df[df["split"] == canon].reset_index(drop=True)
        self.split = None if split is None else normalize_split(split)
        self._shard = df["shard"].to_numpy(np.int64)
        self._offset = df["offset"].to_numpy(np.int64)
        self._rows = df["row"].to_numpy(np.int64)
        self._labels = df[list(FINDINGS)].to_numpy(np.float32).reshape(-1, NUM_FINDINGS)
        # Strings live in compact UTF-8 arrays, not Python lists: DataLoader workers share the pages
        # instead of copying (refcount writes) every string of the split.
        self._strings = {key: StringColumn(df[key].astype(str).tolist()) for key in STRING_KEYS}
        self.index = df.drop(columns=["report"])
        self._maps: dict[tuple[int, str], tuple[int, int, np.dtype, tuple[int, ...]]] = {}

    @property
    def labels(self) -> np.ndarray:
        """All labels, float32 (N, 14)."""
        return self._labels

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # re-open shard files in the receiving process (DataLoader workers)
        return state

    def __del__(self) -> None:
        for shard in getattr(self, "_maps", {}).values():
            try:
                os.close(shard[0])
            except OSError:
                pass

    def _check(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a cache of {n} items")
        return i % n

    def _shard_file(self, s: int, suffix: str = "") -> tuple[int, int, np.dtype, tuple[int, ...]]:
        """(file descriptor, byte offset of the data, dtype, item shape) of shard ``s``."""
        info = self._maps.get((s, suffix))
        if info is None:
            path = self.root / "shards" / f"{shard_name(s)}{suffix}.npy"
            with open(path, "rb") as fh:
                major, _ = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                data_offset = fh.tell()
            if fortran:
                raise UnicxrError(f"{path}: unexpected Fortran-ordered shard")
            info = (os.open(path, os.O_RDONLY), data_offset, np.dtype(dtype), tuple(shape[1:]))
            self._maps[(s, suffix)] = info
        return info

    def _raw(self, i: int, suffix: str = "") -> np.ndarray:
        """Stored array of (checked) item ``i`` from the shard file with ``suffix``, read with
        ``pread`` into a fresh buffer."""
        fd, start, dtype, shape = self._shard_file(int(self._shard[i]), suffix)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = os.pread(fd, nbytes, start + int(self._offset[i]) * nbytes)
        if len(buf) != nbytes:
            raise UnicxrError(f"{self.root}: shard {int(self._shard[i])}{suffix} is truncated (item {i})")
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def report(self, i: int) -> str:
        """Report text of item ``i``."""
        return self._strings["report"][self._check(int(i))]

    def meta(self, i: int, key: str) -> str:
        """String field ``key`` (``path``, ``split``, ``view``, ``patient_id``, ``study_id``) of item ``i``."""
        return self._strings[key][self._check(int(i))]

    def _fields(self, idx: list[int], stacked: bool) -> dict[str, Any]:
        """``labels``, the strings and ``index`` of items ``idx`` (one item, or stacked/listed)."""
        import torch

        if not stacked:
            i = idx[0]
            out: dict[str, Any] = {"labels": torch.from_numpy(self._labels[i].copy())}
            out.update({key: col[i] for key, col in self._strings.items()})
            out["index"] = int(self._rows[i])
            return out
        out = {"labels": torch.from_numpy(self._labels[idx].copy())}
        out.update({key: [col[i] for i in idx] for key, col in self._strings.items()})
        out["index"] = torch.from_numpy(self._rows[idx].copy())
        return out


class CXRCache(ShardedIndex):
    """Random access to a cache written by ``unicxr prepare`` (shards are memory-mapped).

    ``cache[i]`` returns a dict: ``image`` (torch float32 (1, H, W) in [0, 1]), ``labels`` (torch
    float32 (14,), NaN = not mentioned), ``report`` (str), ``path`` (source path), ``split`` (str),
    plus ``view``, ``patient_id``, ``study_id`` and ``index`` (row in the full index).

    Args:
        root: the cache directory.
        split: keep only this split (``train``, ``validate``/``val``/``valid``, ``test``), or None.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = None) -> None:
        from unicxr.utils.memory import tune_malloc

        tune_malloc()  # every item is a fresh image-sized float buffer; see tune_malloc
        self._open_manifest(root, "not a finished unicxr cache (no cache.json); run `unicxr prepare`")
        manifest_path = self.root / "cache.json"
        if self.manifest.get("kind") == "latent":
            raise UnicxrError(f"{self.root}: is a latent cache; read it with unicxr.data.LatentCache")
        if self.manifest.get("version") != CACHE_VERSION:
            raise UnicxrError(
                f"{manifest_path}: cache version {self.manifest.get('version')} is not {CACHE_VERSION}; re-run prepare"
            )
        self._load_index(split)
        self._scale = 1.0 / (255.0 if self.manifest.get("bit_depth", 8) == 8 else 65535.0)

    @property
    def size(self) -> int:
        """Image side in pixels."""
        return int(self.manifest["size"])

    def array(self, i: int) -> np.ndarray:
        """The stored image ``i`` as uint8/uint16 (H, W) (a copy)."""
        return self._raw(self._check(int(i))).copy()

    def image(self, i: int):
        """Image ``i`` as torch float32 (1, H, W) in [0, 1]."""
        import torch

        raw = self._raw(self._check(int(i)))
        return torch.from_numpy(np.multiply(raw, self._scale, dtype=np.float32)).unsqueeze(0)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._check(int(i))
        return {"image": self.image(i), **self._fields([i], stacked=False)}

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Several items at once, with the same keys as ``cache[i]``: ``image`` (B, 1, H, W), ``labels``
        (B, 14), ``index`` (B,) int64 tensor, and lists for the strings."""
        import torch

        idx = [self._check(int(i)) for i in indices]
        images = np.stack([self._raw(i) for i in idx]).astype(np.float32) * self._scale
        return {"image": torch.from_numpy(images).unsqueeze(1), **self._fields(idx, stacked=True)}

    def __repr__(self) -> str:
        return f"CXRCache({str(self.root)!r}, split={self.split!r}, n={len(self)}, size={self.size})"
