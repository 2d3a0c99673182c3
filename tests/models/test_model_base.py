from __future__ import annotations

import json
import pickle

import pytest
import torch

from unicxr.models import load_model
from unicxr.models.toy import ToyMLP, ToyMLPConfig
from unicxr.utils.errors import UnicxrError


def _model():
    torch.manual_seed(0)
    return ToyMLP(ToyMLPConfig(in_dim=4, hidden=8, depth=2))


def test_round_trip_equal(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "toy_mlp" and cfg["config"]["hidden"] == 8
    m2 = load_model(tmp_path / "m")
    assert isinstance(m2, ToyMLP) and m2.config == m.config
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(3, 4)
    m.eval()
    assert torch.equal(m(x), m2(x))
    # no temp files left behind
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_truncated_weights_named(tmp_path):
    _model().save_pretrained(tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(UnicxrError, match=r"model\.safetensors") as info:
        load_model(tmp_path / "m")
    assert "\n" not in str(info.value)


def test_foreign_pickle_never_unpickled(tmp_path):
    _model().save_pretrained(tmp_path / "m")

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(UnicxrError, match="not a readable safetensors"):
        load_model(tmp_path / "m")


def test_config_errors(tmp_path):
    with pytest.raises(UnicxrError, match="model directory not found"):
        load_model(tmp_path / "nope")
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(UnicxrError, match="config.json: missing"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(UnicxrError, match="not valid JSON"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({"model_type": "martian", "config": {}}))
    with pytest.raises(UnicxrError, match="unknown model_type 'martian'"):
        load_model(d)
    (d / "config.json").write_text(json.dumps({"model_type": "toy_mlp", "config": {"hidden": -1}}))
    with pytest.raises(UnicxrError, match=r"config\.hidden"):
        load_model(d)


def test_shape_mismatch(tmp_path):
    _model().save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["hidden"] = 16
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UnicxrError, match="do not fit|do not match"):
        load_model(tmp_path / "m")
