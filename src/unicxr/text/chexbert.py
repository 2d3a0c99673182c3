"""Optional CheXbert-style neural labeler: a local BERT checkpoint with 14 linear heads.

Architecture (as in CheXbert): ``BertModel`` → dropout → the [CLS] hidden state feeds 14 linear
heads. Heads 0..12 are the 13 findings in CheXbert order (``FINDINGS[1:]``: Enlarged
Cardiomediastinum ... Support Devices) with 4 classes (0 blank, 1 positive, 2 negative, 3
uncertain); head 13 is No Finding with 2 classes (0 blank, 1 positive).

A checkpoint is a **local directory**: ``config.json`` (a ``BertConfig``), ``model.safetensors``
(keys ``bert.*`` and ``linear_heads.<i>.weight|bias``) and the tokenizer files. Nothing is
downloaded (``local_files_only=True``) and nothing is unpickled. Weights distributed as a pickled
``.pth`` must be converted to safetensors first by their owner.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unicxr.labels import FINDINGS, NUM_FINDINGS

__all__ = ["CHEXBERT_ORDER", "CheXbertLabeler", "build_chexbert_model", "WEIGHTS_NAME"]

# Head order of CheXbert: the 13 findings, then No Finding.
CHEXBERT_ORDER: tuple[str, ...] = (*FINDINGS[1:], FINDINGS[0])
WEIGHTS_NAME = "model.safetensors"
_CLASS_VALUE = np.array([np.nan, 1.0, 0.0, -1.0], dtype=np.float32)  # blank, positive, negative, uncertain


def build_chexbert_model(config: Any, dropout: float = 0.1):
    """Build the CheXbert module (BERT + 14 heads) for a ``transformers.BertConfig``.

    Returns:
        A ``torch.nn.Module`` whose ``forward(input_ids (B, L), attention_mask (B, L))`` returns a
        list of 14 logit tensors: 13 of shape (B, 4) then one of shape (B, 2).
    """
    import torch
    from transformers import BertModel

    class CheXbertModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(dropout)
            h = config.hidden_size
            self.linear_heads = torch.nn.ModuleList(
                [torch.nn.Linear(h, 4) for _ in range(NUM_FINDINGS - 1)] + [torch.nn.Linear(h, 2)]
            )

        def forward(self, input_ids, attention_mask):  # noqa: D401 - torch signature
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            cls = self.dropout(hidden[:, 0, :])
            return [head(cls) for head in self.linear_heads]

    return CheXbertModel()


class CheXbertLabeler:
    """Label reports with a local CheXbert-style checkpoint.

    Args:
        model: module from :func:`build_chexbert_model` with weights loaded.
        tokenizer: a ``transformers`` tokenizer.
        device: torch device string.
        max_length: truncation length in tokens (CheXbert used 512).
    """

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu", max_length: int = 512) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str = "cpu", max_length: int = 512) -> CheXbertLabeler:
        """Load ``config.json`` + ``model.safetensors`` + tokenizer from a local directory.

        Raises:
            unicxr.utils.UnicxrError: missing directory/files or weights that do not fit the config.
        """
        from unicxr.utils import UnicxrError

        p = Path(path)
        if not p.is_dir():
            raise UnicxrError(f"{p}: CheXbert checkpoint directory not found")
        for name in ("config.json", WEIGHTS_NAME):
            if not (p / name).is_file():
                raise UnicxrError(f"{p}: missing {name} (expected config.json, {WEIGHTS_NAME} and tokenizer files)")
        try:
            from safetensors.torch import load_file
            from transformers import AutoTokenizer, BertConfig
        except ImportError:  # pragma: no cover - optional extra
            raise UnicxrError("the CheXbert backend needs transformers and safetensors (pip install unicxr[hf])") from None
        try:
            config = BertConfig.from_pretrained(str(p), local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except Exception as exc:
            raise UnicxrError(f"{p}: cannot load config/tokenizer: {exc}") from None
        model = build_chexbert_model(config)
        state = load_file(str(p / WEIGHTS_NAME))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise UnicxrError(
                f"{p / WEIGHTS_NAME}: weights do not match the config "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
            )
        return cls(model, tokenizer, device=device, max_length=max_length)

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the tokenizer files to ``path``."""
        from safetensors.torch import save

        from unicxr.utils import atomic_write_bytes

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.model.bert.config.save_pretrained(str(p))
        self.tokenizer.save_pretrained(str(p))
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write_bytes(p / WEIGHTS_NAME, save(state))
        return p

    def predict_classes(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """Head classes per report: int64 (N, 14) in CheXbert head order."""
        import torch

        out: list[np.ndarray] = []
        clean = [t if isinstance(t, str) else "" for t in texts]
        with torch.inference_mode():
            for i in range(0, len(clean), batch_size):
                enc = self.tokenizer(
                    [" ".join(t.split()) for t in clean[i : i + batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
                out.append(torch.stack([lg.argmax(dim=-1) for lg in logits], dim=1).cpu().numpy())
        if not out:
            return np.zeros((0, NUM_FINDINGS), dtype=np.int64)
        return np.concatenate(out).astype(np.int64)

    def label_reports(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """Labels float32 (N, 14) in :data:`unicxr.labels.FINDINGS` order (1/0/-1/NaN)."""
        cls = self.predict_classes(texts, batch_size)
        labels = np.full((len(cls), NUM_FINDINGS), np.nan, dtype=np.float32)
        labels[:, 1:] = _CLASS_VALUE[cls[:, : NUM_FINDINGS - 1]]
        labels[:, 0] = np.where(cls[:, NUM_FINDINGS - 1] == 1, 1.0, np.nan)
        return labels
