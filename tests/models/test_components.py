"""Components: a model that holds a frozen saved model and an artifact (tokenizer) saves, references,
loads and trains them the way a generator holds its autoencoder and tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from unicxr.models import load_model
from unicxr.models.toy import ToyComposite, ToyCompositeConfig, ToyMLP, ToyMLPConfig
from unicxr.train.checkpoint import load_checkpoint, save_checkpoint
from unicxr.train.ema import EMA
from unicxr.utils.errors import UnicxrError


@pytest.fixture
def parts(tmp_path):
    from unicxr.text.tokenizer import train_tokenizer

    torch.manual_seed(0)
    enc = ToyMLP(ToyMLPConfig(in_dim=4, hidden=8, out_dim=3, dropout=0.0))
    enc.save_pretrained(tmp_path / "enc")
    tok = train_tokenizer(["no acute cardiopulmonary process", "small left pleural effusion"] * 20, vocab_size=300)
    return tmp_path, tok


def _composite(tmp_path, tok=None):
    cfg = ToyCompositeConfig(encoder=str(tmp_path / "enc"), out_dim=2)
    comps = {"tokenizer": tok} if tok is not None else None
    return ToyComposite(cfg, components=comps)


def test_embed_round_trip_and_frozen(parts):
    tmp_path, tok = parts
    model = _composite(tmp_path, tok)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    model.train()
    assert not model.encoder.training  # frozen components stay in eval mode
    out = model.save_pretrained(tmp_path / "saved")
    index = json.loads((out / "components.json").read_text())
    assert index["encoder"]["path"] == "encoder" and index["encoder"]["kind"] == "model"
    assert index["tokenizer"]["kind"] == "artifact" and "ReportTokenizer" in index["tokenizer"]["class"]
    from safetensors.torch import load_file

    assert set(load_file(str(out / "model.safetensors"))) == {"head.weight", "head.bias"}
    # rebuilt from the folder alone (the original encoder folder is gone)
    import shutil

    shutil.rmtree(tmp_path / "enc")
    back = load_model(out)
    assert isinstance(back, ToyComposite)
    x = torch.randn(5, 4)
    assert torch.equal(back(x), model.eval()(x))
    for (ka, a), (kb, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b)
    text = "small left pleural effusion"
    assert back.component("tokenizer").encode(text) == tok.encode(text)


def test_reference_mode_points_to_source(parts):
    tmp_path, _ = parts
    model = _composite(tmp_path)
    out = model.save_pretrained(tmp_path / "ref", components="reference")
    index = json.loads((out / "components.json").read_text())
    assert index["encoder"]["path"] == str((tmp_path / "enc").resolve())
    assert not (out / "encoder").exists()
    x = torch.randn(3, 4)
    assert torch.equal(load_model(out)(x), model.eval()(x))
    import shutil

    shutil.rmtree(tmp_path / "enc")
    with pytest.raises(UnicxrError, match="component folder .* not found"):
        load_model(out)


def test_checkpoint_and_ema_exclude_frozen_components(parts):
    tmp_path, _ = parts
    model = _composite(tmp_path)
    ema = EMA(model, 0.9)
    assert ema.names == ["head.weight", "head.bias"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(4, 4)).sum().backward()
    opt.step()
    ema.update(model)
    path = save_checkpoint(tmp_path / "run", 1, model, opt, ema)
    from safetensors.torch import load_file

    assert set(load_file(str(path / "model.safetensors"))) == {"head.weight", "head.bias"}
    assert set(load_file(str(path / "ema.safetensors"))) == {"head.weight", "head.bias"}
    other = _composite(tmp_path)
    ema2 = EMA(other, 0.9)
    load_checkpoint(path, other, None, ema2)
    assert torch.equal(other.head.weight, model.head.weight)
    assert torch.equal(ema2.shadow["head.weight"], ema.shadow["head.weight"])
    with ema.swapped(model) as m:
        assert torch.equal(m.head.weight, ema.shadow["head.weight"])
    assert not torch.equal(model.head.weight, ema.shadow["head.weight"])
    ema.restart(model)  # a new phase: the EMA starts over from the live weights, warmup included
    assert torch.equal(model.head.weight, ema.shadow["head.weight"]) and ema.num_updates == 0


def test_missing_component_config_is_one_line(tmp_path):
    with pytest.raises(UnicxrError, match="model.encoder"):
        ToyComposite(ToyCompositeConfig())
