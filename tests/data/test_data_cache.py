from __future__ import annotations

import csv
import json
import pickle
import time

import numpy as np
import pytest
import torch
from data_test_trees import build_mimic, gradient, write_bomb_png, write_dicom, write_jpeg, write_png

from unicxr.cli import main
from unicxr.data import CXRCache
from unicxr.data.cache import PrepareConfig, clean_records, prepare_cache
from unicxr.data.dataset import Augment, CXRDataset
from unicxr.data.sources import Record
from unicxr.data.splits import normalize_split, patient_split
from unicxr.utils import UnicxrError


def _prepare(*args):
    return main(["prepare", "--no-progress", *map(str, args)])


def _rejects(out):
    with open(out / "rejects.csv", newline="") as fh:
        return {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(fh)}


@pytest.fixture
def mixed_folder(tmp_path):
    """Valid PNG/JPEG/DICOM files mixed with a truncated PNG, a 0-byte JPEG, a text .dcm and a bomb."""
    root = tmp_path / "mixed"
    write_png(root / "ok_8bit.png", gradient(seed=1))
    write_png(root / "ok_16bit.png", gradient(seed=2), bits=16)
    write_jpeg(root / "sub" / "ok.jpg", gradient(seed=3))
    write_dicom(root / "sub" / "ok.dcm", (gradient(seed=4) * 4095).astype(np.uint16), bits_stored=12)
    trunc = write_png(root / "truncated.png", gradient(300, 300, seed=5))
    trunc.write_bytes(trunc.read_bytes()[:1500])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.dcm").write_text("Patient notes, not DICOM.\n" * 10)
    write_bomb_png(root / "bomb.png")
    (root / "README.txt").write_text("ignored: not an image extension")
    return root


def test_prepare_folder_with_bad_files(mixed_folder, tmp_path):
    out = tmp_path / "cache"
    t0 = time.perf_counter()
    assert _prepare("--format", "folder", "--root", mixed_folder, "--out", out, "--size", "32", "--workers", "2") == 0
    elapsed = time.perf_counter() - t0
    cache = CXRCache(out)
    names = sorted(cache[i]["path"].rsplit("/", 1)[-1] for i in range(len(cache)))
    assert names == ["ok.dcm", "ok.jpg", "ok_16bit.png", "ok_8bit.png"]
    rejects = _rejects(out)
    assert set(rejects) == {"truncated.png", "empty.jpg", "notes.dcm", "bomb.png"}
    assert "truncated" in rejects["truncated.png"] or "corrupt" in rejects["truncated.png"]
    assert "empty" in rejects["empty.jpg"]
    assert "not a DICOM" in rejects["notes.dcm"]
    assert "bomb" in rejects["bomb.png"] or "too large" in rejects["bomb.png"]
    manifest = json.loads((out / "cache.json").read_text())
    assert manifest["counts"]["cached"] == 4 and manifest["counts"]["rejected"] == 4
    assert elapsed < 60
    for i in range(len(cache)):
        img = cache[i]["image"]
        assert img.dtype == torch.float32 and img.shape == (1, 32, 32)
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.max()) > 0.5


def test_cached_pixels_match_direct_decode(tmp_path):
    from unicxr.data.io import decode_image, resize_square

    root = tmp_path / "imgs"
    write_png(root / "a.png", gradient(60, 40, seed=7), bits=16)
    out = tmp_path / "c16"
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "24", "--bit-depth", "16",
                    "--fit", "crop", "--workers", "0") == 0
    cache = CXRCache(out)
    assert cache.manifest["dtype"] == "uint16" and cache.array(0).dtype == np.uint16
    expected = resize_square(decode_image(root / "a.png"), 24, "crop")
    np.testing.assert_allclose(cache[0]["image"][0].numpy(), expected, atol=1 / 65535 + 1e-6)


def test_resume_skips_finished_shards_and_redoes_broken_ones(tmp_path):
    root = tmp_path / "imgs"
    for k in range(10):
        write_png(root / f"img{k:02d}.png", gradient(seed=k))
    out = tmp_path / "c"
    args = ["--format", "folder", "--root", root, "--out", out, "--size", "16", "--shard-size", "3", "--workers", "0"]
    assert _prepare(*args) == 0
    first = CXRCache(out)
    before = [first.array(i).copy() for i in range(len(first))]
    shards = sorted((out / "shards").glob("*.npy"))
    assert len(shards) == 4
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    # simulate a kill mid-shard: shard 1's part missing, shard 2's array truncated, a stale temp file
    (out / "parts" / "shard-00001.parquet").unlink()
    (out / "shards" / "shard-00002.npy").write_bytes(b"\x93NUMPY garbage")
    (out / "shards" / ".shard-00003.npy.abc.tmp").write_bytes(b"partial")
    (out / "cache.json").unlink()
    assert _prepare(*args) == 0
    after = CXRCache(out)
    assert len(after) == 10
    for i in range(10):
        np.testing.assert_array_equal(after.array(i), before[i])
    new_mtimes = {p.name: p.stat().st_mtime_ns for p in sorted((out / "shards").glob("*.npy"))}
    assert new_mtimes["shard-00000.npy"] == mtimes["shard-00000.npy"]  # finished: skipped
    assert new_mtimes["shard-00003.npy"] == mtimes["shard-00003.npy"]
    assert not list((out / "shards").glob(".*.tmp"))


def test_out_with_other_settings_needs_overwrite(tmp_path):
    root = tmp_path / "imgs"
    write_png(root / "a.png", gradient())
    out = tmp_path / "c"
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "16", "--workers", "0") == 0
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "20", "--workers", "0") == 2
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "20", "--workers", "0",
                    "--overwrite") == 0
    assert CXRCache(out).size == 20


def test_cli_option_errors(tmp_path):
    (tmp_path / "imgs").mkdir()
    base = ["--format", "folder", "--root", tmp_path / "imgs", "--out", tmp_path / "c"]
    assert _prepare(*base, "--size", "16", "--bit-depth", "12") == 2
    assert _prepare(*base, "--fit", "stretch") == 2
    assert _prepare(*base, "--format", "bogus") == 2
    assert _prepare(*base) == 2  # no images at all: a clear error, not an empty cache


def test_cache_split_filter_and_api(tmp_path):
    build_mimic(tmp_path / "m")
    out = tmp_path / "c"
    assert _prepare("--format", "mimic-cxr-jpg", "--root", tmp_path / "m", "--out", out, "--size", "16",
                    "--workers", "0", "--views", "all") == 0
    full = CXRCache(out)
    train, test = CXRCache(out, split="train"), CXRCache(out, split="test")
    assert len(train) + len(test) == len(full) == 4 and len(test) == 1
    assert all(train[i]["split"] == "train" for i in range(len(train)))
    assert len(CXRCache(out, split="val")) == 0
    assert train[-1]["path"] == train[len(train) - 1]["path"]
    with pytest.raises(IndexError):
        train[len(train)]
    with pytest.raises(UnicxrError):
        CXRCache(out, split="holdout")
    with pytest.raises(UnicxrError, match="cache.json"):
        CXRCache(tmp_path)
    batch = full.batch([0, 2, 3])
    assert batch["image"].shape == (3, 1, 16, 16) and batch["labels"].shape == (3, 14)
    assert set(batch) == set(full[0])  # the same keys as one item
    for k, i in enumerate([0, 2, 3]):
        item = full[i]
        assert torch.equal(batch["image"][k], item["image"]) and int(batch["index"][k]) == item["index"]
        for key in ("report", "path", "split", "view", "patient_id", "study_id"):
            assert batch[key][k] == item[key]
    clone = pickle.loads(pickle.dumps(full))  # DataLoader workers pickle the cache: no memmap copied
    assert torch.equal(clone[1]["image"], full[1]["image"])
    assert full[0]["labels"].dtype == torch.float32


def _rec(i, report="", view="PA", patient=None, study=None):
    return Record(path=f"/x/{i}.png", patient_id=patient or f"p{i}", study_id=study or f"s{i}", view=view,
                  split=None, report=report, labels=np.full(14, np.nan, np.float32), source="folder")


def test_cleaning_steps_and_counts(tmp_path):
    cfg = PrepareConfig(fmt="folder", root=tmp_path, out=tmp_path / "c", require_report=True, min_report_words=3,
                        max_report_words=5, one_per_study=True)
    recs = [
        _rec(0, "FINDINGS: Lungs are clear bilaterally today.", "PA", "p0", "s0"),
        _rec(0, "duplicate path", "PA"),
        _rec(1, "No acute process here.", "LATERAL"),
        _rec(2, "", "AP"),
        _rec(3, "Too short", "AP"),
        _rec(4, "Normal heart size and lungs.", "AP", "p0", "s0"),  # same study as 0, AP loses to PA
        _rec(5, "Normal heart size and lungs.", "", "p5", "s5"),  # unknown view kept
    ]
    lines: list[str] = []
    kept = clean_records(recs, cfg, lines.append)
    assert [r.path for r in kept] == ["/x/0.png", "/x/5.png"]
    assert kept[0].report == "FINDINGS: Lungs are clear bilaterally"  # capped at 5 words
    text = "\n".join(lines)
    for step in ("duplicate paths", "non-frontal", "empty reports", "reports < 3 words", "capped", "per study", "kept"):
        assert step in text
    assert all(r.split in ("train", "validate", "test") for r in kept)


def test_patient_split_is_deterministic_and_balanced():
    ids = [f"patient{i}" for i in range(4000)]
    a = [patient_split(p, seed=1) for p in ids]
    assert a == [patient_split(p, seed=1) for p in ids]
    assert a != [patient_split(p, seed=2) for p in ids]
    frac = {s: a.count(s) / len(a) for s in ("train", "validate", "test")}
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["validate"] - 0.1) < 0.02 and abs(frac["test"] - 0.1) < 0.02
    assert normalize_split("Valid") == "validate" and normalize_split("") is None and normalize_split("x") is None


def test_prepare_api_returns_manifest_and_throughput(tmp_path):
    root = tmp_path / "imgs"
    for k in range(4):
        write_png(root / f"{k}.png", gradient(seed=k))
    cfg = PrepareConfig(fmt="folder", root=root, out=tmp_path / "c", size=16, workers=0)
    manifest = prepare_cache(cfg, log=lambda s: None, progress=False)
    assert manifest["counts"]["cached"] == 4 and manifest["throughput_img_s"] > 0
    assert json.loads((tmp_path / "c" / "cache.json").read_text())["size"] == 16


def test_output_inside_root_is_not_read_back(tmp_path):
    root = tmp_path / "imgs"
    for k in range(3):
        write_png(root / f"{k}.png", gradient(seed=k))
    assert _prepare("--format", "folder", "--root", root, "--out", root / "cache", "--size", "16", "--workers", "0") == 0
    assert _prepare("--format", "folder", "--root", root, "--out", root / "cache", "--size", "16", "--workers", "0") == 0
    assert len(CXRCache(root / "cache")) == 3


# ---------------------------------------------------------------------------------------- dataset
def test_dataset_augmentation_is_seeded_and_light(tmp_path):
    root = tmp_path / "imgs"
    for k in range(3):
        write_png(root / f"{k}.png", gradient(64, 64, seed=k))
    out = tmp_path / "c"
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "32", "--workers", "0") == 0
    plain = CXRDataset(out)
    a = CXRDataset(out, augment=Augment(), seed=5)
    b = CXRDataset(CXRCache(out), augment=Augment(), seed=5)
    c = CXRDataset(out, augment=Augment(), seed=6)
    for i in range(3):
        x = a[i]["image"]
        assert x.shape == (1, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert torch.equal(x, b[i]["image"])
        assert not torch.equal(x, c[i]["image"])
        assert not torch.equal(x, plain[i]["image"])
        assert float((x - plain[i]["image"]).abs().mean()) < 0.15  # light
    e0 = a[0]["image"]
    a.set_epoch(1)
    assert not torch.equal(e0, a[0]["image"])
    loader = torch.utils.data.DataLoader(plain, batch_size=2, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, 32, 32) and batch["labels"].shape == (2, 14)


def test_streaming_dataset_options(tmp_path):
    """CXRDataset streams from the memory map: nothing image-sized is held; resizing, policy targets,
    tokenized reports, metadata fields, max_items; workers give the same items; a folder works too."""
    import pandas as pd

    from unicxr.labels import FINDINGS
    from unicxr.text.tokenizer import train_tokenizer

    root = tmp_path / "imgs"
    rows = []
    for k in range(6):
        write_png(root / f"{k}.png", gradient(40, 40, seed=k))
        rows.append({"image_path": f"{k}.png", "report": f"FINDINGS: case {k}. IMPRESSION: small effusion {k}.",
                     **{f: "" for f in FINDINGS}, "Pleural Effusion": ["1", "-1", "0", "", "1", "1"][k]})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    out = tmp_path / "c"
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "32", "--workers", "0",
                    "--csv", root / "metadata.csv") == 0
    tok = train_tokenizer([r["report"] for r in rows] * 5, vocab_size=300)
    ds = CXRDataset(out, size=16, policy="ignore", tokenizer=tok, max_tokens=12, max_items=5,
                    fields=("image", "labels", "report", "index", "study_id"))
    assert len(ds) == 5
    held = [v for v in vars(ds).values() if isinstance(v, (torch.Tensor, np.ndarray)) and v.nbytes > 5 * 14 * 4 * 2]
    assert not held  # no image arrays in the dataset object
    item = ds[0]
    assert item["image"].shape == (1, 16, 16) and item["input_ids"].dtype == torch.long
    assert 2 < len(item["input_ids"]) <= 12 and item["input_ids"][0] == tok.bos_id
    j = FINDINGS.index("Pleural Effusion")
    by_report = {ds[i]["report"]: ds[i] for i in range(len(ds))}
    unc = next(v for r, v in by_report.items() if "effusion 1." in r)
    assert unc["labels"][j] == -1 and torch.isnan(unc["target"][j])  # uncertain ignored
    blank = next(v for r, v in by_report.items() if "effusion 3." in r)
    assert torch.isnan(blank["labels"][j]) and blank["target"][j] == 0  # blank as negative
    assert isinstance(item["study_id"], str)
    plain = CXRDataset(out, fields=("image", "index"))

    def collect(workers):
        loader = torch.utils.data.DataLoader(plain, batch_size=2, num_workers=workers)
        return torch.cat([b["image"] for b in loader])

    assert torch.equal(collect(0), collect(2))
    folder = CXRDataset(root, size=16)  # an image folder with metadata.csv streams the same way
    assert len(folder) == 6 and folder[0]["image"].shape == (1, 16, 16) and folder[0]["report"].startswith("FINDINGS")


# ------------------------------------------------------------------------------ hangs and crashes
def test_slow_decoder_is_rejected_by_timeout(tmp_path, monkeypatch):
    import unicxr.data.cache as cache_mod

    root = tmp_path / "imgs"
    write_png(root / "fast.png", gradient(seed=1))
    write_png(root / "slow.png", gradient(seed=2))
    real = cache_mod.decode_image

    def fake(path, **kw):
        if str(path).endswith("slow.png"):
            while True:  # a decoder stuck in Python code
                time.sleep(0.01)
        return real(path, **kw)

    monkeypatch.setattr(cache_mod, "decode_image", fake)
    out = tmp_path / "c"
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "16", "--workers", "0",
                    "--timeout", "0.5") == 0
    assert "timed out" in _rejects(out)["slow.png"]
    assert len(CXRCache(out)) == 1


def test_worker_crash_rejects_only_that_file(tmp_path, monkeypatch):
    import os

    import unicxr.data.cache as cache_mod

    root = tmp_path / "imgs"
    for k in range(6):
        write_png(root / f"img{k}.png", gradient(seed=k))
    real = cache_mod.decode_image

    def fake(path, **kw):
        if str(path).endswith("img3.png"):
            os._exit(11)  # like a segfault inside a C decoder
        return real(path, **kw)

    monkeypatch.setattr(cache_mod, "decode_image", fake)  # inherited by the forked workers
    if cache_mod._mp_context().get_start_method() != "fork":
        pytest.skip("needs fork to pass the patched decoder to workers")
    out = tmp_path / "c"
    assert _prepare("--format", "folder", "--root", root, "--out", out, "--size", "16", "--workers", "2") == 0
    assert "crashed" in _rejects(out)["img3.png"]
    assert len(CXRCache(out)) == 5


def test_killed_prepare_resumes_to_identical_cache(tmp_path):
    """SIGKILL a real prepare mid-run; the re-run finishes it and equals an uninterrupted run."""
    import signal
    import subprocess
    import sys

    root = tmp_path / "imgs"
    for k in range(40):
        write_png(root / f"img{k:02d}.png", gradient(200, 160, seed=k))
    args = ["--format", "folder", "--root", str(root), "--size", "16", "--shard-size", "2", "--workers", "0",
            "--no-progress"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "unicxr.cli", "prepare", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "parts").glob("*.parquet"))) >= 3:
            break
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if killed:
        assert not (out / "cache.json").exists()
        print(f"killed after {len(list((out / 'parts').glob('*.parquet')))} of 20 shards")
    assert _prepare(*args, "--out", out) == 0
    assert _prepare(*args, "--out", tmp_path / "clean") == 0
    a, b = CXRCache(out), CXRCache(tmp_path / "clean")
    assert len(a) == len(b) == 40
    for i in range(40):
        assert a[i]["path"] == b[i]["path"]
        np.testing.assert_array_equal(a.array(i), b.array(i))
