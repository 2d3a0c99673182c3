"""Report tokenizer: a byte-level BPE trained on report text (``tokenizers``), or any local HF tokenizer.

A saved :class:`ReportTokenizer` is a directory with ``tokenizer.json`` (the ``tokenizers`` model)
and ``tokenizer_config.json`` (special tokens, lower-casing, max length), so it also loads with
``transformers.PreTrainedTokenizerFast(tokenizer_file=...)``. :meth:`ReportTokenizer.from_pretrained`
also accepts any local Hugging Face tokenizer directory (loaded with ``AutoTokenizer`` and
``local_files_only=True``; nothing is downloaded).

Special tokens: ``<pad>`` (id 0), ``<bos>``, ``<eos>``, ``<unk>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ReportTokenizer", "SPECIAL_TOKENS", "train_tokenizer"]

SPECIAL_TOKENS: dict[str, str] = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>"}
_CONFIG = "tokenizer_config.json"
_MODEL = "tokenizer.json"


class ReportTokenizer:
    """Encode/decode report text to token ids.

    Build one with :func:`train_tokenizer` / :meth:`train`, or load with :meth:`from_pretrained`.

    Args:
        backend: a ``tokenizers.Tokenizer`` (our BPE) or a ``transformers`` tokenizer (local HF dir).
        config: ``lowercase``, ``max_length`` and the special token strings.
    """

    def __init__(self, backend: Any, config: dict[str, Any]) -> None:
        self._tok = backend
        self.config = dict(config)
        self._hf = not _is_tokenizers(backend)
        self.max_length: int = int(self.config.get("max_length", 256))
        self.lowercase: bool = bool(self.config.get("lowercase", True))
        sp = {**SPECIAL_TOKENS, **self.config.get("special_tokens", {})}
        self.special_tokens = sp
        self.pad_id = self._id(sp["pad"])
        self.bos_id = self._id(sp["bos"])
        self.eos_id = self._id(sp["eos"])
        self.unk_id = self._id(sp["unk"])

    # ------------------------------------------------------------------ construction
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 4000,
        min_frequency: int = 2,
        lowercase: bool = True,
        max_length: int = 256,
        clean: bool = True,
    ) -> ReportTokenizer:
        """Train a byte-level BPE on report texts (deterministic for the same texts and settings).

        Args:
            texts: report strings (non-strings are skipped).
            vocab_size: target vocabulary size (special tokens and the 256 byte symbols included).
            min_frequency: minimum pair frequency for a merge.
            lowercase: lower-case text before encoding (recommended for reports).
            max_length: default truncation length of :meth:`encode` (bos/eos included).
            clean: remove de-identification markers (``___``, ``XXXX``) and collapse whitespace first
                (:func:`unicxr.data.reports.clean_report`).

        Returns:
            The trained tokenizer.
        """
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if vocab_size < 300:
            raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
        tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
        norms = [normalizers.NFKC()]
        if lowercase:
            norms.append(normalizers.Lowercase())
        tok.normalizer = normalizers.Sequence(norms)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS.values()),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        prep = _cleaner() if clean else (lambda s: s)
        tok.train_from_iterator((prep(t) for t in texts if isinstance(t, str) and t.strip()), trainer=trainer)
        config = {
            "kind": "unicxr-bpe",
            "lowercase": lowercase,
            "max_length": max_length,
            "clean": clean,
            "special_tokens": dict(SPECIAL_TOKENS),
        }
        return cls(tok, config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> ReportTokenizer:
        """Load a saved tokenizer directory (ours) or any local Hugging Face tokenizer directory.

        Raises:
            unicxr.utils.UnicxrError: the path is missing or holds no tokenizer.
        """
        from unicxr.utils import UnicxrError

        p = Path(path)
        if not p.is_dir():
            raise UnicxrError(f"{p}: tokenizer directory not found")
        cfg_path = p / _CONFIG
        cfg: dict[str, Any] = {}
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise UnicxrError(f"{cfg_path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if cfg.get("kind") == "unicxr-bpe":
            from tokenizers import Tokenizer

            if not (p / _MODEL).is_file():
                raise UnicxrError(f"{p}: missing {_MODEL}")
            try:
                tok = Tokenizer.from_file(str(p / _MODEL))
            except Exception as exc:  # tokenizers raises a plain Exception on a bad file
                raise UnicxrError(f"{p / _MODEL}: cannot load tokenizer: {exc}") from None
            return cls(tok, cfg)
        # any local HF tokenizer directory
        try:
            from transformers import AutoTokenizer
        except ImportError:  # pragma: no cover - transformers is an optional extra
            raise UnicxrError(f"{p}: not a unicxr tokenizer and transformers is not installed") from None
        try:
            hf = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except Exception as exc:
            raise UnicxrError(f"{p}: cannot load a tokenizer from this directory: {exc}") from None
        sp = {
            "pad": hf.pad_token or hf.eos_token or hf.unk_token or SPECIAL_TOKENS["pad"],
            "bos": hf.bos_token or hf.cls_token or SPECIAL_TOKENS["bos"],
            "eos": hf.eos_token or hf.sep_token or SPECIAL_TOKENS["eos"],
            "unk": hf.unk_token or SPECIAL_TOKENS["unk"],
        }
        lower = bool(getattr(hf, "do_lower_case", False))
        max_len = int(min(getattr(hf, "model_max_length", 512) or 512, 4096))
        return cls(hf, {"kind": "hf", "lowercase": lower, "max_length": max_len, "special_tokens": sp, "clean": False})

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Save as a directory (``tokenizer.json`` + ``tokenizer_config.json``), atomically per file."""
        from unicxr.utils import atomic_write_text

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        if self._hf:
            self._tok.save_pretrained(str(p))
            return p
        atomic_write_text(p / _MODEL, self._tok.to_str(pretty=False))
        atomic_write_text(p / _CONFIG, json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        return p

    # ------------------------------------------------------------------ encode / decode
    @property
    def vocab_size(self) -> int:
        """Number of token ids (including special tokens)."""
        return int(self._tok.get_vocab_size() if not self._hf else len(self._tok))

    def _id(self, token: str) -> int:
        if self._hf:
            i = self._tok.convert_tokens_to_ids(token)
            return -1 if i is None else int(i)
        i = self._tok.token_to_id(token)
        return -1 if i is None else int(i)

    def _prep(self, text: str) -> str:
        if not isinstance(text, str):
            return ""
        return _cleaner()(text) if self.config.get("clean") else text

    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        """Token ids of one text: ``[bos] + ids + [eos]`` truncated to ``max_length`` (eos kept)."""
        limit = self.max_length if max_length is None else int(max_length)
        t = self._prep(text)
        if self._hf:
            ids = list(self._tok.encode(t, add_special_tokens=False))
        else:
            ids = list(self._tok.encode(t, add_special_tokens=False).ids)
        if add_special_tokens:
            ids = ([self.bos_id] if self.bos_id >= 0 else []) + ids
            if limit > 0 and len(ids) >= limit:
                ids = ids[: limit - 1]
            ids = ids + ([self.eos_id] if self.eos_id >= 0 else [])
        elif limit > 0:
            ids = ids[:limit]
        return ids

    def encode_batch(
        self, texts: Sequence[str], max_length: int | None = None, pad: bool = True
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Encode many texts; with ``pad`` right-pad to the longest with ``pad_id``.

        Returns:
            ``(ids, attention_mask)``: two lists of N lists of equal length L (when padded).
        """
        seqs = [self.encode(t, max_length=max_length) for t in texts]
        if not pad or not seqs:
            return seqs, [[1] * len(s) for s in seqs]
        width = max(len(s) for s in seqs)
        ids = [s + [self.pad_id] * (width - len(s)) for s in seqs]
        mask = [[1] * len(s) + [0] * (width - len(s)) for s in seqs]
        return ids, mask

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of token ids (stops at the first eos when skipping special tokens)."""
        seq = [int(i) for i in ids]
        if skip_special_tokens and self.eos_id >= 0:
            first = 1 if seq and seq[0] == self.bos_id else 0  # bos may equal eos (GPT-2 style)
            if self.eos_id in seq[first:]:
                seq = seq[: seq.index(self.eos_id, first)]
        return self._tok.decode(seq, skip_special_tokens=skip_special_tokens)

    def normalize_text(self, text: str) -> str:
        """The text as the tokenizer sees it (cleaned, lower-cased when configured): what decode returns."""
        t = self._prep(text)
        return t.lower() if self.lowercase and not self._hf else t

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"ReportTokenizer(kind={self.config.get('kind')!r}, vocab_size={self.vocab_size})"


def _is_tokenizers(obj: Any) -> bool:
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Tokenizer)


def _cleaner():
    from unicxr.data.reports import clean_report

    return clean_report


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000, **kwargs: Any) -> ReportTokenizer:
    """Train a :class:`ReportTokenizer` (see :meth:`ReportTokenizer.train`)."""
    return ReportTokenizer.train(texts, vocab_size=vocab_size, **kwargs)
