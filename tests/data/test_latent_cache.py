"""``unicxr encode`` and LatentCache: end to end, resume after a kill, items, autoencoder check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unicxr.data import CXRCache, LatentCache
from unicxr.models.autoencoder import build_autoencoder
from unicxr.utils.errors import UnicxrError


def _save_ae(kind: str, path):
    """kind: kl, vq, or rvq (VQ with two residual codebooks)."""
    torch.manual_seed(0)
    extra = {"num_quantizers": 2} if kind == "rvq" else {}
    ae = build_autoencoder({"kind": "vq" if kind == "rvq" else kind, "channels": [8, 16, 16], "norm_num_groups": 8,
                            "latent_channels": 3, "num_embeddings": 32, "image_size": 32, **extra})
    ae.train()(torch.rand(8, 1, 32, 32))  # VQ: data-dependent codebook
    ae.set_scale_factor(1.5)
    ae.eval().save_pretrained(path)
    return ae


@pytest.mark.parametrize("kind", ["kl", "vq", "rvq"])
def test_encode_end_to_end_resume_and_items(kind, tiny_phantom_cache, tmp_path, capsys):
    from unicxr.cli import main

    ae = _save_ae(kind, tmp_path / "run" / "model")  # a run folder: encode uses run/model
    out = tmp_path / "lat"
    args = ["encode", "--model", str(tmp_path / "run"), "--cache", str(tiny_phantom_cache), "--out", str(out),
            "--shard-size", "16", "--batch-size", "7", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((out / "cache.json").read_text())
    assert manifest["kind"] == "latent" and manifest["latent_kind"] == ("vq" if kind == "rvq" else kind)
    assert manifest["latent_shape"] == [3, 8, 8] and manifest["scale_factor"] == 1.5
    assert manifest["autoencoder"]["path"] == str((tmp_path / "run" / "model").resolve())
    assert len(manifest["autoencoder"]["config_sha256"]) == 64
    first = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}

    # a killed run: the last shard's part (its done marker), the index and the manifest are missing
    (out / "parts" / "shard-00003.parquet").unlink()
    (out / "index.parquet").unlink()
    (out / "cache.json").unlink()
    (out / "shards" / ".shard-00003.npy.tmp").write_bytes(b"partial")
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming: 3 of 4 shards already finished" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == first

    src = CXRCache(tiny_phantom_cache, split="test")
    lat = LatentCache(out, split="test")
    assert len(lat) == len(src) and lat.latent_shape == (3, 8, 8) and lat.image_size == 32
    item, ref = lat[1], src[1]
    assert set(ref) - {"image"} <= set(item) and "latent" in item
    for key in ("report", "path", "split", "view", "patient_id", "study_id"):
        assert item[key] == ref[key]
    assert torch.equal(item["labels"], ref["labels"]) or torch.allclose(item["labels"], ref["labels"], equal_nan=True)
    with torch.no_grad():
        z = ae.encode(ref["image"][None])[0]
    torch.testing.assert_close(item["latent"], z, atol=1e-5, rtol=1e-5)
    if kind == "kl":
        assert {"mean", "logvar"} <= set(item)
        s1 = LatentCache(out, split="test", latent="sample", seed=3)[1]["latent"]
        s2 = LatentCache(out, split="test", latent="sample", seed=3)[1]["latent"]
        assert torch.equal(s1, s2) and not torch.equal(s1, item["latent"])
    else:
        assert item["indices"].shape == ((2, 8, 8) if kind == "rvq" else (8, 8))
        assert item["indices"].dtype == torch.int64 and manifest["num_quantizers"] == (2 if kind == "rvq" else 1)
        torch.testing.assert_close(item["latent"], ae.indices_to_latent(item["indices"][None])[0])
    b = lat.batch([0, 2])
    assert b["latent"].shape == (2, 3, 8, 8) and b["labels"].shape == (2, 14) and len(b["report"]) == 2
    assert np.array_equal(b["index"].numpy(), [lat[0]["index"], lat[2]["index"]])

    lat.check_autoencoder(tmp_path / "run" / "model")
    from unicxr.bench.latent_loader import bench

    rates = bench(str(out), None, str(tmp_path / "run"), batch_size=4, n_batches=2)
    assert all(rates[k] > 0 for k in ("latent", "image", "image+encode", "decode"))
    _save_ae(kind, tmp_path / "other")
    other = tmp_path / "other"
    (other / "config.json").write_text((other / "config.json").read_text().replace("1.5", "1.25"))
    with pytest.raises(UnicxrError, match="not the autoencoder"):
        lat.check_autoencoder(other)
    with pytest.raises(UnicxrError, match="latent cache"):
        CXRCache(out)
    with pytest.raises(UnicxrError, match="not a latent cache"):
        LatentCache(tiny_phantom_cache)
    # another autoencoder into the same folder needs --overwrite
    assert main(["encode", "--model", str(other), "--cache", str(tiny_phantom_cache), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
