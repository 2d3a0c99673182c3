from __future__ import annotations

import json

import pytest

from unicxr.text.tokenizer import SPECIAL_TOKENS, ReportTokenizer, train_tokenizer
from unicxr.utils import UnicxrError

CORPUS = [
    "FINDINGS: Moderate right pleural effusion with adjacent atelectasis. IMPRESSION: Effusion.",
    "The lungs are clear. Heart size is normal. No pneumothorax.",
    "Endotracheal tube terminates 4 cm above the carina. Nasogastric tube in the stomach.",
    "Mild pulmonary edema. Small bilateral pleural effusions. Stable cardiomegaly.",
    "Patchy opacity in the left lower lobe, possibly pneumonia. ___ was notified.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400, min_frequency=2)


def test_special_tokens(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.special_tokens == SPECIAL_TOKENS
    assert 300 <= tok.vocab_size <= 400


@pytest.mark.parametrize("text", [
    "Moderate right pleural effusion, 4.5 cm.",
    "New word never seen: pneumomediastinum; caf\u00e9 \u80ba\u708e \U0001f600!",
    "",
])
def test_encode_decode_round_trip(tok, text):
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == tok.normalize_text(text)


def test_training_is_deterministic():
    a = train_tokenizer(CORPUS, vocab_size=400)
    b = train_tokenizer(CORPUS, vocab_size=400)
    assert a.encode(CORPUS[0]) == b.encode(CORPUS[0])


def test_truncation_and_batch(tok):
    ids = tok.encode(" ".join(CORPUS[:5]), max_length=16)
    assert len(ids) == 16 and ids[-1] == tok.eos_id
    batch, mask = tok.encode_batch(["short", CORPUS[0]])
    assert len(batch[0]) == len(batch[1]) and batch[0][-1] == tok.pad_id and mask[0][-1] == 0
    assert tok.decode(batch[0]) == "short"


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    assert cfg["kind"] == "unicxr-bpe" and (tmp_path / "t" / "tokenizer.json").is_file()
    again = ReportTokenizer.from_pretrained(tmp_path / "t")
    for t in CORPUS[:5]:
        assert again.encode(t) == tok.encode(t)
    # the saved tokenizer.json also loads in transformers
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "t" / "tokenizer.json"))
    assert hf.encode(CORPUS[1], add_special_tokens=False) == tok.encode(CORPUS[1], add_special_tokens=False)


def test_load_local_hf_tokenizer_directory(tmp_path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "lungs", "are", "clear", ".", "no", "effusion"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=True).save_pretrained(tmp_path / "hf")
    tok = ReportTokenizer.from_pretrained(tmp_path / "hf")
    ids = tok.encode("The lungs are clear.")
    assert ids[0] == vocab.index("[CLS]") and ids[-1] == vocab.index("[SEP]")
    assert tok.decode(ids) == "the lungs are clear."
    assert tok.pad_id == 0


def test_errors(tmp_path):
    with pytest.raises(UnicxrError, match="not found"):
        ReportTokenizer.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(UnicxrError, match="invalid JSON"):
        ReportTokenizer.from_pretrained(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnicxrError, match="cannot load"):
        ReportTokenizer.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError):
        train_tokenizer(CORPUS, vocab_size=100)
