"""CheXbert backend: a tiny random BERT + heads saved locally and loaded through the real code path."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from unicxr.labels import FINDINGS  # noqa: E402
from unicxr.text.chexbert import CHEXBERT_ORDER, WEIGHTS_NAME, CheXbertLabeler, build_chexbert_model  # noqa: E402
from unicxr.utils import UnicxrError  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "mild", "cardiomegaly", "."]


def _tiny(tmp_path, head_classes: list[int]):
    from transformers import BertConfig, BertTokenizerFast

    torch.manual_seed(0)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=True)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    model = build_chexbert_model(cfg)
    with torch.no_grad():  # make each head's output a fixed class regardless of the text
        for head, cls in zip(model.linear_heads, head_classes, strict=True):
            head.weight.zero_()
            head.bias.fill_(-5.0)
            head.bias[cls] = 5.0
    ckpt = tmp_path / "ckpt"
    CheXbertLabeler(model, tok).save_pretrained(ckpt)
    return ckpt


def test_order():
    assert CHEXBERT_ORDER[-1] == "No Finding" and CHEXBERT_ORDER[0] == "Enlarged Cardiomediastinum"
    assert len(CHEXBERT_ORDER) == 14


def test_load_and_label(tmp_path):
    classes = [0, 1, 2, 3] * 3 + [1, 1]  # 13 four-class heads + No Finding head (class 1)
    ckpt = _tiny(tmp_path, classes)
    assert (ckpt / WEIGHTS_NAME).is_file() and (ckpt / "config.json").is_file()
    lab = CheXbertLabeler.from_pretrained(ckpt)
    ids = lab.tokenizer("No pleural effusion.")["input_ids"]
    assert ids == [2, 5, 6, 7, 10, 3]  # the saved vocabulary is really used ([CLS] no pleural effusion . [SEP])
    out = lab.label_reports(["No pleural effusion.", "Mild cardiomegaly.", ""], batch_size=2)
    assert out.shape == (3, 14) and out.dtype == np.float32
    expect = {0: np.nan, 1: 1.0, 2: 0.0, 3: -1.0}
    for h in range(13):
        col = FINDINGS.index(CHEXBERT_ORDER[h])
        e = expect[classes[h]]
        assert (np.isnan(out[:, col]).all() if np.isnan(e) else (out[:, col] == e).all()), CHEXBERT_ORDER[h]
    assert (out[:, 0] == 1.0).all()
    assert lab.predict_classes(["x"]).shape == (1, 14)


def test_random_weights_roundtrip_deterministic(tmp_path):
    ckpt = _tiny(tmp_path, [0] * 14)
    a = CheXbertLabeler.from_pretrained(ckpt).predict_classes(["no pleural effusion ."])
    b = CheXbertLabeler.from_pretrained(ckpt).predict_classes(["no pleural effusion ."])
    np.testing.assert_array_equal(a, b)


def test_errors(tmp_path):
    with pytest.raises(UnicxrError, match="not found"):
        CheXbertLabeler.from_pretrained(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnicxrError, match="missing config.json"):
        CheXbertLabeler.from_pretrained(tmp_path / "empty")
    ckpt = _tiny(tmp_path, [0] * 14)
    from safetensors.torch import load_file, save_file

    state = load_file(str(ckpt / WEIGHTS_NAME))
    state.pop("linear_heads.3.weight")
    save_file(state, str(ckpt / WEIGHTS_NAME))
    with pytest.raises(UnicxrError, match="do not match"):
        CheXbertLabeler.from_pretrained(ckpt)
