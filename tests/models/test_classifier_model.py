"""CXRClassifier: shapes, preprocessing inside the model, save/load round trip, both trunks."""

from __future__ import annotations

import pytest
import torch

from unicxr.models import load_model
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig, resize_square
from unicxr.utils import UnicxrError

TINY = dict(image_size=32, init_features=8, growth_rate=4, block_config=(2, 2), bn_size=2)


@pytest.mark.parametrize("arch", ["densenet", "resnet"])
def test_shapes_and_roundtrip(tmp_path, arch):
    torch.manual_seed(0)
    cfg = CXRClassifierConfig(arch=arch, resnet_widths=(4, 8, 8, 16), **TINY)
    model = CXRClassifier(cfg).eval()
    x = torch.rand(3, 1, 48, 40)  # non-square, other size: cropped and resized inside
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (3, model.feature_dim)
    assert logits.shape == (3, 14)
    assert torch.allclose(model.probabilities(x), torch.sigmoid(logits))
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, CXRClassifier) and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), logits)
        # one pass gives the feature maps and the logits: the rest of forward from the last map
        torch.testing.assert_close(model.logits_from_map(model.stage_maps(x)[-1]), logits)


def test_prepare_normalises_and_resizes():
    model = CXRClassifier(CXRClassifierConfig(**TINY))
    x = torch.full((2, 1, 64, 64), 0.5)
    p = model.prepare(x)
    assert p.shape == (2, 1, 32, 32)
    assert torch.allclose(p, torch.zeros_like(p), atol=1e-6)
    assert model.prepare(torch.rand(2, 32, 32)).shape == (2, 1, 32, 32)  # (B, H, W) accepted
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model.prepare(torch.rand(2, 3, 32, 32))
    sq = resize_square(torch.rand(1, 1, 40, 60), 20)
    assert sq.shape == (1, 1, 20, 20)


def test_config_validation():
    with pytest.raises(Exception, match="label_names"):
        CXRClassifierConfig(num_classes=3)
    with pytest.raises(UnicxrError, match="arch"):
        CXRClassifier({"arch": "vit"})
