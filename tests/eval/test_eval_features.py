"""Feature extractors: each path with a tiny random model built, saved locally and loaded by spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unicxr.eval import features as fx
from unicxr.labels import FINDINGS
from unicxr.models.classifier import CXRClassifier, CXRClassifierConfig
from unicxr.utils import UnicxrError


def _images(n: int = 3, size: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g)


def _tiny_classifier(seed: int = 0) -> CXRClassifier:
    torch.manual_seed(seed)
    cfg = CXRClassifierConfig(image_size=32, init_features=8, growth_rate=4, block_config=(2, 2), bn_size=2)
    return CXRClassifier(cfg).eval()


# -- (a) own evaluation encoder ---------------------------------------------------------------------
def test_own_extractor_from_model_dir_and_run_dir(tmp_path):
    model = _tiny_classifier()
    model.save_pretrained(tmp_path / "run" / "model")
    x = _images()
    ext = fx.parse_features_spec(f"own:{tmp_path / 'run'}")
    assert ext.kind == "own" and ext.dim == model.feature_dim
    feats = ext(x)
    assert feats.shape == (3, model.feature_dim) and feats.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(feats, model.features(x))
        probs = ext.probabilities(x)
        torch.testing.assert_close(probs, torch.sigmoid(model(x)))
    assert ext.describe()["preprocessing"]["resize"] == [32, 32]
    # model_ema is preferred when the run has it
    ema = _tiny_classifier(seed=1)
    ema.save_pretrained(tmp_path / "run" / "model_ema")
    ext2 = fx.parse_features_spec(f"own:{tmp_path / 'run'}")
    assert ext2.model_dir.name == "model_ema"
    with torch.no_grad():
        torch.testing.assert_close(ext2(x), ema.features(x))
    # a model dir directly; one-pass features+probabilities equals the two calls
    ext3 = fx.parse_features_spec(f"own:{tmp_path / 'run' / 'model'}")
    f, p = ext3.features_and_probabilities(x)
    torch.testing.assert_close(f, feats)
    torch.testing.assert_close(p, probs)


def test_fingerprint_follows_the_weights_not_the_path(tmp_path):
    """Stored features are keyed by fingerprint(): the same weights in another folder match, one changed
    weight does not."""
    model = _tiny_classifier()
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "b")
    fa = fx.parse_features_spec(f"own:{tmp_path / 'a'}").fingerprint()
    assert fa == fx.parse_features_spec(f"own:{tmp_path / 'b'}").fingerprint() and len(fa) == 64
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    model.save_pretrained(tmp_path / "c")
    assert fx.parse_features_spec(f"own:{tmp_path / 'c'}").fingerprint() != fa


def test_extract_features_from_iterables(tmp_path):
    model = _tiny_classifier()
    model.save_pretrained(tmp_path / "m")
    ext = fx.parse_features_spec(f"own:{tmp_path / 'm'}")
    x = _images(7)
    f_tensor, p = fx.extract_features(ext, x, batch_size=3, probabilities=True, progress=False)
    f_items, _ = fx.extract_features(ext, [{"image": im} for im in x], batch_size=4, progress=False)
    assert f_tensor.shape == (7, ext.dim) and p.shape == (7, 14)
    np.testing.assert_allclose(f_tensor, f_items, rtol=1e-5, atol=1e-5)


# -- (b) torchxrayvision-style DenseNet -------------------------------------------------------------
def _tiny_monai_densenet(out: int = 18):
    from monai.networks.nets import DenseNet

    torch.manual_seed(0)
    net = DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=out,
        init_features=8,
        growth_rate=4,
        block_config=(2, 3),
        bn_size=2,
    ).eval()
    # non-trivial BN statistics so a wrong mapping would show
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def _to_torchvision_names(state: dict, legacy: bool = False) -> dict:
    """What a torchvision / torchxrayvision DenseNet state dict looks like (written independently)."""
    out = {}
    for k, v in state.items():
        k2 = k.replace(".layers.", ".")
        if legacy:
            for part in ("norm", "relu", "conv"):
                for i in ("1", "2"):
                    k2 = k2.replace(f".{part}{i}.", f".{part}.{i}.")
        k2 = k2.replace("class_layers.out.", "classifier.")
        out[k2] = v.clone()
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-legacy"])
def test_xrv_extractor_maps_torchvision_keys(tmp_path, fmt):
    from safetensors.torch import save_file

    net = _tiny_monai_densenet()
    state = _to_torchvision_names(net.state_dict(), legacy=fmt == "pt-legacy")
    assert any(k.startswith("classifier.") for k in state)
    if fmt == "safetensors":
        path = tmp_path / "xrv.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "xrv.pt"
        torch.save({"state_dict": state}, path)
    ext = fx.parse_features_spec(f"xrv:{path}?size=64")
    assert ext.dim == net.class_layers.out.in_features
    assert ext.preprocessing["value_range"] == [-1024.0, 1024.0]
    assert ext.preprocessing["architecture"]["block_config"] == (2, 3)
    x = _images(2, size=80)
    xin = (
        torch.nn.functional.interpolate(x[..., :, :], size=(64, 64), mode="bilinear", antialias=True) * 2048
        - 1024
    )
    with torch.no_grad():
        ref = torch.nn.functional.adaptive_avg_pool2d(torch.relu(net.features(xin)), 1).flatten(1)
        torch.testing.assert_close(ext(x), ref)
        probs = ext.probabilities(x)
        ref_p = torch.sigmoid(net(xin))
    assert probs.shape == (2, 14)
    eff = FINDINGS.index("Pleural Effusion")
    torch.testing.assert_close(probs[:, eff], ref_p[:, fx.XRV_PATHOLOGIES.index("Effusion")])
    assert math.isnan(float(probs[0, FINDINGS.index("No Finding")]))


def test_xrv_op_threshs_and_errors(tmp_path):
    from safetensors.torch import save_file

    net = _tiny_monai_densenet()
    state = _to_torchvision_names(net.state_dict())
    state["op_threshs"] = torch.full((18,), 0.25)
    path = tmp_path / "xrv.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    ext = fx.parse_features_spec(f"xrv:{path}")
    p = ext.probabilities(_images(2, 64))
    ok = p[~torch.isnan(p)]
    assert ok.min() >= 0 and ok.max() <= 1
    # a pickled whole model is refused with a conversion hint
    bad = tmp_path / "pickled.pt"
    torch.save(net, bad)
    with pytest.raises(UnicxrError, match="not a plain state dict"):
        fx.parse_features_spec(f"xrv:{bad}")
    # weights of another network
    other = tmp_path / "other.safetensors"
    save_file({"features.conv0.weight": torch.zeros(4, 1, 3, 3)}, str(other))
    with pytest.raises(UnicxrError, match="not DenseNet weights"):
        fx.parse_features_spec(f"xrv:{other}")
    with pytest.raises(UnicxrError, match="not found"):
        fx.parse_features_spec(f"xrv:{tmp_path / 'missing.safetensors'}")


# -- (c) Hugging Face vision models -----------------------------------------------------------------
def test_hf_dinov2_cls_features(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    model = Dinov2Model(cfg).eval()
    model.save_pretrained(tmp_path / "dino")
    proc = BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        image_mean=[0.4, 0.5, 0.6],
        image_std=[0.2, 0.25, 0.3],
    )
    proc.save_pretrained(tmp_path / "dino")
    ext = fx.parse_features_spec(f"hf:{tmp_path / 'dino'}")
    assert ext.dim == 16 and ext.preprocessing["pooling"] == "cls"
    assert ext.preprocessing["center_crop"] == [32, 32]
    assert ext.preprocessing["normalize"]["mean"] == [0.4, 0.5, 0.6]
    x = _images(2, 48)
    pix = ext.preprocess(x)
    assert pix.shape == (2, 3, 32, 32)
    with torch.no_grad():
        ref = model(pixel_values=pix).last_hidden_state[:, 0]
    torch.testing.assert_close(ext(x), ref)
    assert not ext.has_probabilities
    with pytest.raises(NotImplementedError):
        ext.probabilities(x)


def test_hf_without_image_processor_warns_and_records_defaults(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=32, patch_size=8)  # fmt: skip
    Dinov2Model(cfg).save_pretrained(tmp_path / "dino")  # no preprocessor_config.json
    with pytest.warns(fx.FallbackWarning, match="no image processor could be loaded"):
        ext = fx.parse_features_spec(f"hf:{tmp_path / 'dino'}")
    assert ext.preprocessing["image_processor"].startswith("defaults")
    assert ext.preprocessing["normalize"]["mean"] == [0.5, 0.5, 0.5]
    assert ext.preprocessing["resize"]["size"] == (32, 32)
    desc = ext.describe()
    assert len(desc["warnings"]) == 1 and "using defaults" in desc["warnings"][0]


def test_hf_clip_image_embedding(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=99,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=8,
    )
    model = CLIPModel(cfg).eval()
    model.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    ext = fx.parse_features_spec(f"hf:{tmp_path / 'clip'}")
    assert ext.dim == 8 and ext.preprocessing["pooling"].startswith("image embedding")
    x = _images(2, 40)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=ext.preprocess(x))
        ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    torch.testing.assert_close(ext(x), ref)


def test_hf_not_a_model_dir(tmp_path):
    with pytest.raises(UnicxrError, match="no config.json"):
        fx.parse_features_spec(f"hf:{tmp_path}")


# -- (d) Inception-v3 / exported networks -----------------------------------------------------------
class _TinyInception(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1).flatten(1)


def test_torchscript_inception_extractor(tmp_path):
    torch.manual_seed(0)
    net = _TinyInception().eval()
    path = tmp_path / "inception.pt"
    torch.jit.script(net).save(str(path))
    ext = fx.parse_features_spec(f"inception:{path}?size=64&range=255")
    assert ext.dim == 6 and ext.preprocessing["value_range"] == [0.0, 255.0]
    x = _images(2, 50)
    xin = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True).clamp(0, 1) * 255
    with torch.no_grad():
        torch.testing.assert_close(ext(x), net(xin.expand(-1, 3, -1, -1)))
    with pytest.raises(UnicxrError, match="range must be"):
        fx.parse_features_spec(f"inception:{path}?range=7")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(UnicxrError, match="TorchScript"):
        fx.parse_features_spec(f"inception:{junk}")


def test_torch_export_pt2_extractor(tmp_path):
    torch.manual_seed(0)
    net = _TinyInception().eval()
    ep = torch.export.export(
        net, (torch.rand(4, 3, 64, 64),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    path = tmp_path / "inception.pt2"
    torch.export.save(ep, str(path))
    ext = fx.parse_features_spec(f"inception:{path}?size=64")
    x = _images(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(ext(x), net(x.expand(-1, 3, -1, -1)))


def test_spec_errors():
    for bad, msg in [
        ("nocolon", "KIND:PATH"),
        ("foo:/x", "unknown kind"),
        ("own:", "missing path"),
        ("own:/does/not/exist", "not found"),
    ]:
        with pytest.raises(UnicxrError, match=msg):
            fx.parse_features_spec(bad)
