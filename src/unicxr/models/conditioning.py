"""Conditions for generators: structured findings and free-text reports → tokens for attention.

One condition encoder shared by every generator family (LDM-UNet cross-attention, latent DiT joint or
cross attention, CrossFlow's text variational encoder) and later the unified model:

* **Findings**: the 14 findings × {absent, present, uncertain, unspecified} (from the one label
  convention: 0, 1, −1, NaN), each a learned embedding plus a finding-position embedding, optionally
  with laterality (unspecified/left/right/bilateral) and severity (0..1, NaN = not given) → 14 tokens.
* **Report text**: the [text] BPE tokenizer and a small bidirectional transformer trained from scratch,
  or a frozen local Hugging Face text model (``hf_text_dir``; nothing downloaded). Reports longer than
  one context are split into up to ``max_chunks`` windows that are encoded separately and concatenated,
  so nothing is cut silently; what still does not fit is counted and reported by the caller.
* **Null condition** (classifier-free guidance): learned null tokens replace an item's condition when
  its drop flag is set (training: probability ``cond_drop``; sampling: the unconditional branch).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from unicxr.config import StrictModel
from unicxr.labels import FINDINGS, NUM_FINDINGS

__all__ = [
    "ConditionConfig",
    "ConditionEncoder",
    "finding_states",
    "tokenize_reports",
    "trim_token_ids",
    "parse_findings_prompt",
    "report_laterality",
    "report_severity",
    "LATERALITY",
]

LATERALITY = ("unspecified", "left", "right", "bilateral")
# finding state index: absent 0, present 1, uncertain 2, unspecified 3
_STATE_OF_VALUE = {0.0: 0, 1.0: 1, -1.0: 2}


class ConditionConfig(StrictModel):
    """How a generator is conditioned (saved in its config)."""

    kind: Literal["findings", "text", "both"] = Field("both", description="condition on findings, text or both")
    dim: int = Field(128, gt=0, description="width of the condition tokens")
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(4, ge=1)
    max_tokens: int = Field(96, ge=8, description="tokens per report window (bos/eos included)")
    max_chunks: int = Field(3, ge=1, description="report windows encoded per report (longer text is split)")
    vocab_size: int = Field(0, ge=0, description="tokenizer vocabulary (set from the tokenizer)")
    hf_text_dir: str | None = Field(None, description="frozen local Hugging Face text encoder directory")
    laterality: bool = Field(True, description="findings carry laterality tokens")
    severity: bool = Field(True, description="findings carry severity")
    report_laterality: bool = Field(
        False, description="read each finding's side from the report (unicxr.text.laterality) where a condition "
        "gives none: caches carry sides only in the report text, so without it the finding tokens and the pooled "
        "findings vector never see a side in training and left/right can only come through the text encoder")
    report_severity: bool = Field(
        False, description="read each finding's size from the report (unicxr.text.severity: small 1/3, moderate "
        "2/3, large 1) where a condition gives none, into the severity input of the finding tokens and the pooled "
        "findings vector: caches carry sizes only in the report text, so without it a size reaches the network "
        "only through the text encoder. False (default) keeps saved models unchanged")
    cond_drop: float = Field(0.1, ge=0.0, lt=1.0, description="training probability of the null condition")
    pooled: Literal["mean", "findings"] = Field(
        "mean", description="the pooled vector (B, D) for global paths (a DiT's adaLN, an LDM-UNet's "
        "global_condition): 'mean' of all condition tokens, where one finding's change is diluted ~1/N; "
        "'findings': a linear map of the one-hot finding states (and laterality, severity), plus the mean of "
        "the report tokens, so training moves each finding's effect directly, not through one token averaged with N")
    text_queries: int = Field(
        0, ge=0, description="0: every report token is a condition token; N > 0: N learned queries read the "
        "report through masked cross-attention, a fixed-width summary for networks whose attention has no key "
        "mask (MONAI's UNet), where hundreds of zeroed padding tokens would take most of the attention")


@functools.lru_cache(maxsize=1 << 16)
def _sides_of(text: str) -> tuple[int, ...]:
    """Laterality index (:data:`LATERALITY`) of each of the 14 findings in one report (cached: a
    training run sees each report once per epoch)."""
    from unicxr.text.laterality import all_sides

    sides = all_sides(text)
    return tuple(0 if i == 0 else LATERALITY.index(sides.get(f) or "unspecified") for i, f in enumerate(FINDINGS))


def report_laterality(reports: Sequence[str], given: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Laterality (B, 14) int64 read from each report (0 unspecified, 1 left, 2 right, 3 bilateral);
    where ``given`` (B, 14) names a side (non-zero), that side wins."""
    out = np.array([_sides_of(r or "") for r in reports], dtype=np.int64).reshape(len(reports), NUM_FINDINGS)
    if given is not None:
        g = given.cpu().numpy() if torch.is_tensor(given) else np.asarray(given)
        out = np.where(g != 0, g, out).astype(np.int64)
    return out


@functools.lru_cache(maxsize=1 << 16)
def _sizes_of(text: str) -> tuple[float, ...]:
    """Size (NaN: not said) of each of the 14 findings in one report (cached like :func:`_sides_of`)."""
    from unicxr.text.severity import all_severities

    sizes = all_severities(text)
    return tuple(float(sizes.get(f, float("nan"))) for f in FINDINGS)


def report_severity(reports: Sequence[str], given: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Severity (B, 14) float32 in (0, 1] read from each report (NaN: not said; see
    :mod:`unicxr.text.severity`); where ``given`` (B, 14) has a value, that value wins."""
    out = np.array([_sizes_of(r or "") for r in reports], dtype=np.float32).reshape(len(reports), NUM_FINDINGS)
    if given is not None:
        g = np.asarray(given.cpu() if torch.is_tensor(given) else given, dtype=np.float32)
        out = np.where(np.isfinite(g), g, out).astype(np.float32)
    return out


def finding_states(labels: torch.Tensor) -> torch.Tensor:
    """Labels (B, 14) in the one convention (1, 0, −1, NaN) → state indices (B, 14) long
    (absent 0, present 1, uncertain 2, unspecified 3)."""
    states = torch.full(labels.shape, 3, dtype=torch.long, device=labels.device)
    states[labels == 0] = 0
    states[labels == 1] = 1
    states[labels == -1] = 2
    return states


def tokenize_reports(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, max_chunks: int
) -> tuple[torch.Tensor, int]:
    """Token ids (B, C, L) of reports split into ≤ ``max_chunks`` windows of ≤ ``max_tokens`` tokens
    (each window with bos/eos; pad id elsewhere), and the number of reports whose text still did not
    fit (so the caller can say so instead of cutting silently)."""
    body = max_tokens - 2
    pad, bos, eos = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
    out = torch.full((len(texts), max_chunks, max_tokens), pad, dtype=torch.long)
    overflow = 0
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text or "", add_special_tokens=False, max_length=10**9)
        if len(ids) > body * max_chunks:
            overflow += 1
        for c in range(max_chunks):
            piece = ids[c * body : (c + 1) * body]
            if not piece and c > 0:
                break
            seq = [bos, *piece, eos]
            out[i, c, : len(seq)] = torch.tensor(seq)
    return out, overflow


def trim_token_ids(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the trailing windows and positions of ids (B, C, L) that are padding in every row.

    Only for consumers that mask padding out of attention: their output is then unchanged, at a
    cost that follows the batch's longest report instead of ``max_chunks × max_tokens``.
    """
    keep = ids != pad_id
    if keep.all():
        return ids
    chunks = int(keep.any(2).any(0).nonzero().max()) + 1 if keep.any() else 1
    length = int(keep.any(1).any(0).nonzero().max()) + 1 if keep.any() else 1
    return ids[:, :chunks, :length]


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens: tokens (B, N, D), mask (B, N) bool → (B, D) (zeros if none are real)."""
    w = mask.unsqueeze(-1).float()
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


class _TextTransformer(nn.Module):
    """Bidirectional transformer over token windows: ids (B, C, L) → tokens (B, C·L, D), mask (B, C·L)."""

    def __init__(self, cfg: ConditionConfig, pad_id: int = 0) -> None:
        super().__init__()
        from unicxr.models.layers import TransformerBlock, make_norm

        self.pad_id = pad_id
        self.tok = nn.Embedding(max(cfg.vocab_size, 1), cfg.dim)
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_tokens, cfg.dim))
        self.chunk = nn.Parameter(torch.zeros(1, cfg.max_chunks, 1, cfg.dim))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.chunk, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(cfg.dim, cfg.text_heads) for _ in range(cfg.text_layers))
        self.norm = make_norm("layernorm", cfg.dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, length = ids.shape
        flat = ids.reshape(b * c, length)
        keep = flat != self.pad_id
        h = self.tok(flat) + self.pos[:, :length]
        mask = keep[:, None, None, :]  # (B·C, 1, 1, L) keys allowed
        mask = mask | ~keep.any(1)[:, None, None, None]  # all-pad windows attend to something
        for blk in self.blocks:
            h, _ = blk(h, mask=mask)
        h = self.norm(h).view(b, c, length, -1) + self.chunk[:, :c]
        return h.reshape(b, c * length, -1), keep.view(b, c * length)


class _HFText(nn.Module):
    """A frozen local Hugging Face encoder (e.g. a BERT-style report model) + a trainable projection."""

    def __init__(self, cfg: ConditionConfig) -> None:
        super().__init__()
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(cfg.hf_text_dir, local_files_only=True)
        self.model.requires_grad_(False)
        self.model.eval()
        self.proj = nn.Linear(int(self.model.config.hidden_size), cfg.dim)

    def train(self, mode: bool = True) -> _HFText:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, length = ids.shape
        flat = ids.reshape(b * c, length)
        keep = flat != pad_id
        with torch.no_grad():
            h = self.model(input_ids=flat, attention_mask=keep.long()).last_hidden_state
        return self.proj(h).reshape(b, c * length, -1), keep.view(b, c * length)


class _TextResampler(nn.Module):
    """N learned queries read the report tokens through one transformer block with masked
    cross-attention: tokens (B, S, D) with mask (B, S) → (B, N, D) and an all-True mask (B, N). The
    width no longer depends on the report length or padding, so a network without a key mask sees no
    padding at all."""

    def __init__(self, cfg: ConditionConfig) -> None:
        super().__init__()
        from unicxr.models.layers import TransformerBlock

        self.queries = nn.Parameter(torch.randn(1, cfg.text_queries, cfg.dim) * 0.02)
        self.block = TransformerBlock(cfg.dim, cfg.text_heads, cross_dim=cfg.dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = tokens.shape[0]
        # an item without any real token (empty report) reads its padding rather than nothing
        allowed = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]  # (B, 1, 1, S)
        h, _ = self.block(self.queries.expand(b, -1, -1), tokens, context_mask=allowed)
        return h, torch.ones(b, h.shape[1], dtype=torch.bool, device=tokens.device)


class ConditionEncoder(nn.Module):
    """Condition dict → tokens for attention.

    The condition dict holds any of ``labels`` (B, 14) (1/0/−1/NaN), ``laterality`` (B, 14) long
    (index into :data:`LATERALITY`), ``severity`` (B, 14) float (NaN = not given) and ``input_ids``
    (B, C, L) from :func:`tokenize_reports`.

    ``forward(cond, drop)`` returns ``tokens`` (B, N, D), ``mask`` (B, N) bool (True = real token) and
    ``pooled`` (B, D); items with ``drop`` True get the learned null condition instead. With
    ``trim`` the report windows and positions that are padding in every row are left out
    (:func:`trim_token_ids`), so N follows the batch's longest report.
    """

    def __init__(self, cfg: ConditionConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.pad_id = pad_id
        d = cfg.dim
        self.use_findings = cfg.kind in ("findings", "both")
        self.use_text = cfg.kind in ("text", "both")
        if self.use_findings:
            self.state = nn.Embedding(NUM_FINDINGS * 4, d)
            self.finding_pos = nn.Parameter(torch.randn(1, NUM_FINDINGS, d) * 0.02)
            self.later = nn.Embedding(NUM_FINDINGS * len(LATERALITY), d) if cfg.laterality else None
            self.sev = nn.Linear(1, d) if cfg.severity else None
            self.null_findings = nn.Parameter(torch.randn(1, NUM_FINDINGS, d) * 0.02)
            if cfg.pooled == "findings":
                n_in = NUM_FINDINGS * (4 + (len(LATERALITY) if cfg.laterality else 0) + (2 if cfg.severity else 0))
                self.findings_vec = nn.Linear(n_in, d)
                self.null_pooled = nn.Parameter(torch.zeros(1, d))
        if self.use_text:
            self.text = _HFText(cfg) if cfg.hf_text_dir else _TextTransformer(cfg, pad_id)
            self.null_text = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.resampler = _TextResampler(cfg) if cfg.text_queries else None
        self.out_norm = nn.LayerNorm(d)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    @staticmethod
    def _labels(cond: dict[str, Any], b: int, device: torch.device) -> torch.Tensor:
        """The condition's labels (B, 14) on ``device``; all unspecified (NaN) when it has none."""
        labels = cond.get("labels")
        if labels is None:
            return torch.full((b, NUM_FINDINGS), float("nan"), device=device)
        return labels.to(device)

    def _findings(self, cond: dict[str, Any], b: int, device: torch.device) -> torch.Tensor:
        labels = self._labels(cond, b, device)
        offs = torch.arange(NUM_FINDINGS, device=device) * 4
        h = self.state(finding_states(labels) + offs) + self.finding_pos
        if self.later is not None and cond.get("laterality") is not None:
            lat = cond["laterality"].to(device).long().clamp(0, len(LATERALITY) - 1)
            h = h + self.later(lat + torch.arange(NUM_FINDINGS, device=device) * len(LATERALITY))
        if self.sev is not None and cond.get("severity") is not None:
            sev = cond["severity"].to(device).float()
            given = torch.isfinite(sev)
            h = h + self.sev(torch.nan_to_num(sev, nan=0.0).unsqueeze(-1)) * given.unsqueeze(-1)
        return h

    def _findings_onehot(self, cond: dict[str, Any], b: int, device: torch.device) -> torch.Tensor:
        """(B, 14·(4 [+ 4 laterality] [+ 2 severity])) float: one-hot state (and laterality) per finding,
        severity value and a given-flag; the input of the ``pooled: findings`` map."""
        import torch.nn.functional as F

        parts = [F.one_hot(finding_states(self._labels(cond, b, device)), 4).float().flatten(1)]
        if self.cfg.laterality:
            lat = cond.get("laterality")
            lat = torch.zeros(b, NUM_FINDINGS, dtype=torch.long, device=device) if lat is None else lat.to(device)
            parts.append(F.one_hot(lat.long().clamp(0, len(LATERALITY) - 1), len(LATERALITY)).float().flatten(1))
        if self.cfg.severity:
            sev = cond.get("severity")
            sev = torch.full((b, NUM_FINDINGS), float("nan"), device=device) if sev is None else sev.to(device).float()
            given = torch.isfinite(sev)
            parts += [torch.nan_to_num(sev, nan=0.0), given.float()]
        return torch.cat(parts, dim=1)

    def forward(
        self, cond: dict[str, Any], drop: torch.Tensor | None = None, trim: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ref = cond.get("labels") if cond.get("labels") is not None else cond.get("input_ids")
        if ref is None:
            raise ValueError("condition needs 'labels' and/or 'input_ids'")
        b, device = ref.shape[0], ref.device
        parts, masks = [], []
        drop = torch.zeros(b, dtype=torch.bool, device=device) if drop is None else drop.to(device)
        keep = (~drop).view(b, 1, 1).float()
        if self.use_findings:
            f = self._findings(cond, b, device)
            f = f * keep + self.null_findings * (1 - keep)
            parts.append(f)
            masks.append(torch.ones(b, NUM_FINDINGS, dtype=torch.bool, device=device))
        if self.use_text:
            ids = cond.get("input_ids")
            if ids is None:  # no report: the null report (as wide as a resampled one, so widths match)
                n = self.cfg.text_queries or 1
                t = self.null_text.expand(b, n, -1)
                m = torch.ones(b, n, dtype=torch.bool, device=device)
            else:
                if trim:
                    ids = trim_token_ids(ids, self.pad_id)
                t, m = (self.text(ids, self.pad_id) if isinstance(self.text, _HFText) else self.text(ids))
                if self.resampler is not None:
                    t, m = self.resampler(t, m)
                null = self.null_text.expand(b, t.shape[1], -1)
                t = t * keep + null * (1 - keep)
                if self.resampler is None:
                    first = torch.zeros_like(m)
                    first[:, 0] = True
                    m = torch.where(drop.view(b, 1), first, m)  # a dropped report is one null token
            parts.append(t)
            masks.append(m)
        tokens = self.out_norm(torch.cat(parts, dim=1))
        mask = torch.cat(masks, dim=1)
        if self.cfg.pooled == "findings" and self.use_findings:
            pooled = self.findings_vec(self._findings_onehot(cond, b, device))
            if self.use_text:  # plus the mean of the (normalised) report tokens
                pooled = pooled + _masked_mean(tokens[:, NUM_FINDINGS:], mask[:, NUM_FINDINGS:])
            k = keep.view(b, 1)
            pooled = pooled * k + self.null_pooled * (1 - k)
        else:
            pooled = _masked_mean(tokens, mask)
        return tokens, mask, pooled


def parse_findings_prompt(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``"Cardiomegaly, left Pleural Effusion, no Pneumothorax, possible Edema"`` → labels (14,)
    (1 present, 0 after ``no``, −1 after ``possible``; NaN unspecified) and laterality (14,) ints."""
    from unicxr.utils.errors import UnicxrError

    labels = np.full(NUM_FINDINGS, np.nan, np.float32)
    lat = np.zeros(NUM_FINDINGS, np.int64)
    lower = {f.lower(): i for i, f in enumerate(FINDINGS)}
    for raw in text.split(","):
        words = raw.strip()
        if not words:
            continue
        value, side = 1.0, 0
        low = words.lower()
        for prefix, v in (("no ", 0.0), ("possible ", -1.0)):
            if low.startswith(prefix):
                value, low = v, low[len(prefix) :]
        for k, name in enumerate(LATERALITY[1:], start=1):
            if low.startswith(name + " "):
                side, low = k, low[len(name) + 1 :]
        if low not in lower:
            raise UnicxrError(f"--findings: unknown finding {words!r} (known: {', '.join(FINDINGS)})")
        labels[lower[low]] = value
        lat[lower[low]] = side
    return labels, lat
