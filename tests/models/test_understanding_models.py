"""Image encoder, finding classifier and report generator: tiny configs, save/load, HF paths."""

from __future__ import annotations

import pytest
import torch

from unicxr.models import load_model
from unicxr.models.finding_classifier import CXRFindingClassifier, FindingClassifierConfig
from unicxr.models.image_encoder import ImageEncoder, ImageEncoderConfig
from unicxr.models.report_generator import (
    CausalDecoder,
    CXRReportGenerator,
    ReportGeneratorConfig,
    load_gpt2_weights,
)
from unicxr.sampling.decoding import DecodeConfig

TINY = {
    "vit": {"arch": "vit", "patch_size": 8, "dim": 16, "depth": 1, "num_heads": 2},
    "densenet": {"arch": "densenet", "init_features": 8, "growth_rate": 4, "block_config": (1, 1), "bn_size": 2},
    "resnet": {"arch": "resnet", "resnet_widths": (8, 8, 8, 16)},
}
TEXTS = [
    "FINDINGS: The heart is enlarged. No pleural effusion. IMPRESSION: Cardiomegaly.",
    "FINDINGS: There is a small left pleural effusion. No pneumothorax. IMPRESSION: Left effusion.",
    "FINDINGS: Lungs are clear. No pneumothorax. IMPRESSION: No acute cardiopulmonary abnormality.",
] * 4


@pytest.fixture(scope="module")
def tok():
    from unicxr.text.tokenizer import train_tokenizer

    return train_tokenizer(TEXTS, vocab_size=300)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_image_encoder_tokens(arch):
    enc = ImageEncoder(ImageEncoderConfig(image_size=32, **TINY[arch])).eval()
    tokens, pooled = enc(torch.rand(2, 1, 40, 40))  # resized to 32 inside
    assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[2] == enc.dim == pooled.shape[1]
    if arch == "vit":
        assert tokens.shape[1] == 16  # (32 / 8)^2 patch tokens


@pytest.mark.parametrize("arch", sorted(TINY))
def test_finding_classifier_save_load_equal(arch, tmp_path):
    torch.manual_seed(0)
    cfg = FindingClassifierConfig(image_size=32, encoder=ImageEncoderConfig(**TINY[arch]), thresholds=(0.3,) * 14)
    m = CXRFindingClassifier(cfg).eval()
    x = torch.rand(3, 1, 32, 32)
    m.save_pretrained(tmp_path / "m")
    m2 = load_model(tmp_path / "m")
    assert isinstance(m2, CXRFindingClassifier) and m2.config.thresholds == (0.3,) * 14
    assert torch.equal(m(x), m2(x))
    assert m2.predict_labels(x).shape == (3, 14)


def _hf_vit_dir(path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    image_size=32, patch_size=8, num_channels=3)  # fmt: skip
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    return path


def test_hf_vit_encoder_rebuilds_without_its_directory(tmp_path):
    import shutil

    hf = _hf_vit_dir(tmp_path / "hfvit")
    cfg = FindingClassifierConfig(image_size=32, encoder=ImageEncoderConfig(arch="hf", pretrained=str(hf)))
    m = CXRFindingClassifier(cfg).eval()
    assert m.config.encoder.hf_config["hidden_size"] == 16
    tokens, _ = m.encoder(torch.rand(1, 1, 32, 32))
    assert tokens.shape == (1, 16, 16)  # CLS removed
    m.save_pretrained(tmp_path / "m")
    shutil.rmtree(hf)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(load_model(tmp_path / "m")(x), m(x))


def _generator(tok, conditioning="cross", arch="densenet", **kw):
    torch.manual_seed(0)
    cfg = ReportGeneratorConfig(image_size=32, encoder=ImageEncoderConfig(**TINY[arch]), vocab_size=tok.vocab_size,
                                dim=32, depth=2, num_heads=2, max_len=48, dropout=0.0, conditioning=conditioning, **kw)  # fmt: skip
    return CXRReportGenerator(cfg, components={"tokenizer": tok}).eval()


@pytest.mark.parametrize("conditioning", ["cross", "prefix"])
def test_report_generator_cache_matches_teacher_forcing(tok, conditioning):
    m = _generator(tok, conditioning, arch="vit")
    x = torch.rand(2, 1, 32, 32)
    out = m.generate(x, DecodeConfig(max_new_tokens=12))
    # decoding scores (incremental KV cache) equal teacher-forced log-likelihoods (one full forward)
    with torch.no_grad():
        ids = [s + [tok.eos_id] for s in out["ids"]]
        width = max(len(s) for s in ids)
        inp = torch.tensor([[tok.bos_id] + s[:-1] + [0] * (width - len(s)) for s in ids])
        full = torch.nn.functional.log_softmax(m(x, inp)[0], -1)
    for i in range(2):
        n = len(out["ids"][i])
        partial = full[i, :n].gather(1, torch.tensor(out["ids"][i], dtype=torch.long)[:, None]).sum()
        expect = partial + (full[i, n, tok.eos_id] if n < 12 else 0.0)
        assert float(out["scores"][i]) == pytest.approx(float(expect), abs=1e-3)


def test_report_generator_decoding_determinism_beam_and_save_load(tok, tmp_path):
    m = _generator(tok)
    x = torch.rand(3, 1, 32, 32)
    g1 = m.generate(x, DecodeConfig(max_new_tokens=16))
    g2 = m.generate(x, DecodeConfig(max_new_tokens=16))
    assert g1["reports"] == g2["reports"] and g1["probabilities"].shape == (3, 14)
    b = m.generate(x, DecodeConfig(method="beam", num_beams=4, max_new_tokens=16, length_penalty=0.0))
    assert (b["scores"] >= g1["scores"] - 1e-4).all()
    n1 = m.generate(x, DecodeConfig(method="nucleus", max_new_tokens=16), torch.Generator().manual_seed(5))
    n2 = m.generate(x, DecodeConfig(method="nucleus", max_new_tokens=16), torch.Generator().manual_seed(5))
    assert n1["reports"] == n2["reports"]
    m.save_pretrained(tmp_path / "rg")
    m2 = load_model(tmp_path / "rg")
    assert (tmp_path / "rg" / "tokenizer" / "tokenizer.json").is_file()
    assert m2.generate(x, DecodeConfig(max_new_tokens=16))["reports"] == g1["reports"]
    ids = torch.tensor([[tok.bos_id, 5, 6, 7]])
    assert torch.equal(m(x[:1], ids)[0], m2(x[:1], ids)[0])


def _tiny_gpt2(path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=320, n_positions=64, n_embd=32, n_layer=2, n_head=2)).save_pretrained(path)
    return path


def test_gpt2_weights_give_the_same_logits(tmp_path):
    from transformers import GPT2LMHeadModel

    path = _tiny_gpt2(tmp_path / "gpt2")
    dec = CausalDecoder(320, 32, 2, 2, 64, norm="layernorm", activation="gelu_tanh", norm_eps=1e-5).eval()
    load_gpt2_weights(dec, path)
    hf = GPT2LMHeadModel.from_pretrained(path, local_files_only=True).eval()
    ids = torch.randint(0, 320, (2, 10))
    ours, _ = dec(ids)
    assert torch.allclose(ours, hf(ids).logits, atol=1e-4)


def test_report_generator_label_tokens_teacher_forced_and_hard(tok, tmp_path):
    m = _generator(tok, label_input="hard", thresholds=(0.0,) * 7 + (1.01,) * 7)
    x = torch.rand(2, 1, 32, 32)
    aux = torch.randn(2, 14)
    # hard decisions at the stored thresholds: always present for the first 7, never for the last 7
    v = m.label_values(aux)
    assert torch.equal(v, torch.tensor([[1.0] * 7 + [0.0] * 7] * 2))
    # teacher-forced values win where given; NaN falls back to the head's decision
    lab = torch.full((2, 14), float("nan"))
    lab[0, 0], lab[1, 13] = 0.0, 1.0
    v2 = m.label_values(aux, lab)
    assert v2[0, 0] == 0 and v2[1, 13] == 1 and torch.equal(v2[0, 1:], v[0, 1:]) and torch.equal(v2[1, :13], v[1, :13])
    # the decoder sees them: flipping every label changes the logits; the same labels give the same logits
    ids = torch.tensor([[tok.bos_id, 5, 6, 7]] * 2)
    with torch.no_grad():
        a = m(x, ids, torch.zeros(2, 14))[0]
        b = m(x, ids, torch.ones(2, 14))[0]
        c = m(x, ids, torch.zeros(2, 14))[0]
    assert not torch.allclose(a, b) and torch.equal(a, c)
    # soft mode: probabilities; thresholds survive save/load
    assert torch.allclose(_generator(tok).label_values(aux), torch.sigmoid(aux))
    m.save_pretrained(tmp_path / "rg")
    assert load_model(tmp_path / "rg").config.thresholds == m.config.thresholds
