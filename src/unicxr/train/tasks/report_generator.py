"""Task ``report_generator``: train :class:`~unicxr.models.report_generator.CXRReportGenerator`.

Teacher forcing: cross-entropy of the next report token (``FINDINGS: ... IMPRESSION: ...`` text of
each cache item, padding ignored) plus ``aux_weight`` × masked BCE of the auxiliary 14-way head on the
pooled image features (labels under the recipe's uncertainty policy). The tokenizer is trained on the
training split's reports when training starts (or loaded from ``data.tokenizer``) and saved as the
model's ``tokenizer`` component. Validation: token loss, aux macro AUROC, and greedy reports for a
fixed set of validation images scored by CE micro-F1 over the 14 findings (rule labeler).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.data.augment import Augment
from unicxr.data.dataset import CXRDataset
from unicxr.labels import UncertainPolicy
from unicxr.models.finding_metrics import ThresholdObjective
from unicxr.models.finding_tokens import teacher_labels
from unicxr.models.report_generator import (
    CXRReportGenerator,
    ReportGeneratorConfig,
    hf_decoder_dims,
    load_gpt2_weights,
)
from unicxr.train.tasks import Media, Task, register_task, with_cache_image_size
from unicxr.train.tasks.finding_classifier import weighted_masked_bce
from unicxr.utils.errors import UnicxrError

__all__ = ["ReportDataConfig", "ReportGeneratorTask", "ReportItems", "ce_micro_f1", "report_text"]


class ReportDataConfig(StrictModel):
    """Data section of a report-generator recipe."""

    cache: str = Field(..., description="cache directory written by `unicxr prepare`")
    train_split: str = "train"
    val_split: str | None = "validate"
    tokenizer: str | None = Field(None, description="saved tokenizer directory (null: train one on the train split)")
    vocab_size: int = Field(1000, ge=300, description="BPE vocabulary when training the tokenizer")
    max_tokens: int = Field(160, ge=4, description="report tokens per item (bos/eos included; longer ones are cut)")
    section: Literal["findings_impression", "full"] = Field(
        "findings_impression", description="report text learned: FINDINGS/IMPRESSION only, or the cleaned whole text"
    )
    uncertain_policy: UncertainPolicy = UncertainPolicy.IGNORE
    blank_as_negative: bool = True
    aux_weight: float = Field(0.5, ge=0, description="weight of the auxiliary classification loss")
    label_teacher_forcing: float = Field(
        0.0, ge=0, le=1,
        description="per-item probability that the decoder's label tokens carry the true findings (training only)",
    )
    choose_thresholds: bool = Field(True, description="store F1-maximising validation thresholds of the aux head")
    threshold_objective: ThresholdObjective = Field(
        "micro_f1", description="f1: each finding's own F1 optimum; micro_f1: maximise the F1 pooled over findings"
    )
    max_items: int | None = Field(None, gt=0)
    augment: bool = True
    rotate_deg: float = Field(5.0, ge=0)
    scale: float = Field(0.05, ge=0, lt=0.5)
    translate: float = Field(0.04, ge=0, lt=0.5)
    intensity: float = Field(0.1, ge=0, lt=1)
    eval_reports: int = Field(96, ge=0, description="validation images given greedy reports at each evaluation")
    eval_min_count: int = Field(20, ge=1)
    media_n: int = Field(4, ge=0, description="validation images shown with generated and reference reports")


def report_text(text: str, section: str) -> str:
    """The part of a report the generator learns."""
    if section == "findings_impression":
        from unicxr.data.reports import findings_impression

        return findings_impression(text)
    from unicxr.data.reports import clean_report

    return clean_report(text)


class ReportItems(Dataset):
    """Wraps a :class:`CXRDataset`: adds ``input_ids`` of the selected report section."""

    def __init__(self, base: CXRDataset, tokenizer: Any, max_tokens: int, section: str) -> None:
        self.base = base
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.section = section

    def __len__(self) -> int:
        return len(self.base)

    def text(self, i: int) -> str:
        return report_text(self.base.report(i), self.section)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        ids = self.tokenizer.encode(self.text(i), max_length=self.max_tokens)
        item["input_ids"] = torch.tensor(ids, dtype=torch.long)
        item.pop("report", None)
        return item


def ce_micro_f1(pred: np.ndarray, ref: np.ndarray, policy: UncertainPolicy) -> float:
    """Micro-F1 over the 14 findings of labeler outputs (N, 14) (blank = negative) under ``policy``.

    A quick validation figure; ``unicxr eval reports`` gives the full clinical-efficacy table.
    """
    from unicxr.labels import apply_policy

    p, r = apply_policy(pred, policy) == 1, apply_policy(ref, policy) == 1
    tp, fp, fn = int((p & r).sum()), int((p & ~r).sum()), int((~p & r).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


@register_task("report_generator")
class ReportGeneratorTask(Task):
    """Image → report with an auxiliary finding head (multi-task)."""

    ModelConfig = ReportGeneratorConfig
    DataConfig = ReportDataConfig

    def __init__(self, model_cfg: ReportGeneratorConfig, data_cfg: ReportDataConfig) -> None:
        super().__init__(with_cache_image_size(model_cfg, data_cfg.cache), data_cfg)
        cfg = data_cfg
        self.augmenter = Augment(
            rotate_deg=cfg.rotate_deg, scale=cfg.scale, translate=cfg.translate,
            contrast=cfg.intensity, brightness=cfg.intensity / 2,
        )
        self.tokenizer: Any = None

    # -- building -----------------------------------------------------------------------------------
    def _load_tokenizer(self) -> Any:
        from unicxr.text.tokenizer import ReportTokenizer, train_tokenizer

        if self.tokenizer is not None:
            return self.tokenizer
        cfg = self.data_cfg
        init = self.model_cfg.decoder_init
        if cfg.tokenizer or init:
            # a GPT-2 initialisation brings its own vocabulary
            self.tokenizer = ReportTokenizer.from_pretrained(cfg.tokenizer or init)
        else:
            base = CXRDataset(cfg.cache, cfg.train_split, max_items=cfg.max_items, fields=("report",))
            texts = [report_text(base.report(i), cfg.section) for i in range(len(base))]
            self.tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size, max_length=cfg.max_tokens)
        return self.tokenizer

    def build_model(self) -> CXRReportGenerator:
        tok = self._load_tokenizer()
        cfg = self.model_cfg
        update: dict[str, Any] = {}
        if cfg.decoder_init:
            dims = hf_decoder_dims(cfg.decoder_init)
            update.update({k: v for k, v in dims.items() if k != "vocab_size"})
            update["vocab_size"] = max(dims["vocab_size"], tok.vocab_size)
            update["max_len"] = min(dims["max_len"], max(cfg.max_len, self.data_cfg.max_tokens))
        else:
            update["vocab_size"] = tok.vocab_size
        if self.data_cfg.max_tokens > update.get("max_len", cfg.max_len):
            raise UnicxrError(f"data.max_tokens ({self.data_cfg.max_tokens}) exceeds model.max_len")
        self.model_cfg = cfg.model_copy(update=update)
        model = CXRReportGenerator(self.model_cfg, components={"tokenizer": tok})
        if cfg.decoder_init:
            load_gpt2_weights(model.decoder, cfg.decoder_init)
        return model

    def _dataset(self, split: str) -> ReportItems:
        cfg = self.data_cfg
        base = CXRDataset(
            cfg.cache, split, size=self.model_cfg.image_size, policy=cfg.uncertain_policy,
            blank_as_negative=cfg.blank_as_negative, max_items=cfg.max_items, fields=("image", "report", "index"),
        )
        return ReportItems(base, self._load_tokenizer(), cfg.max_tokens, cfg.section)

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        val = self._dataset(self.data_cfg.val_split) if self.data_cfg.val_split else None
        return self._dataset(self.data_cfg.train_split), val

    # -- data ---------------------------------------------------------------------------------------
    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack images/targets; right-pad ``input_ids`` and build ``labels`` (-100 on padding)."""
        from unicxr.train.tasks import collate_items

        ids = [it["input_ids"] for it in items]
        rest = collate_items([{k: v for k, v in it.items() if k != "input_ids"} for it in items])
        width = max(len(x) for x in ids)
        pad = max(int(self._load_tokenizer().pad_id), 0)
        batch = torch.full((len(ids), width), pad, dtype=torch.long)
        labels = torch.full((len(ids), width), -100, dtype=torch.long)
        for i, x in enumerate(ids):
            batch[i, : len(x)] = x
            labels[i, : len(x)] = x
        rest["input_ids"] = batch
        rest["labels"] = labels
        return rest

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        if not self.data_cfg.augment:
            return batch
        return {**batch, "image": self.augmenter.batch(batch["image"], generator)}

    # -- loss ---------------------------------------------------------------------------------------
    def _losses(
        self, model: torch.nn.Module, batch: dict[str, Any], train: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(token CE, aux BCE or None, aux logits (B, 14) or None) of one batch."""
        ids, labels = batch["input_ids"], batch["labels"]
        teacher = teacher_labels(batch["target"], self.data_cfg.label_teacher_forcing) if train else None
        logits, aux = model(batch["image"], ids[:, :-1], teacher)
        tok_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        aux_loss = weighted_masked_bce(aux, batch["target"], None) if aux is not None else None
        return tok_loss, aux_loss, aux

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        tok_loss, aux_loss, _ = self._losses(model, batch)
        if aux_loss is None or self.data_cfg.aux_weight == 0:
            return tok_loss, {"token_loss": float(tok_loss.detach())}
        return tok_loss + self.data_cfg.aux_weight * aux_loss, {"token_loss": float(tok_loss.detach()), "aux_loss": float(aux_loss.detach())}

    # -- validation ---------------------------------------------------------------------------------
    def _generate(self, model: torch.nn.Module, dataset: ReportItems, n: int, batch_size: int = 32) -> tuple[list[str], list[str], np.ndarray | None]:
        raw = self.unwrap(model)
        hyps, refs, probs = [], [], []
        for s in range(0, n, batch_size):
            idx = list(range(s, min(n, s + batch_size)))
            x = torch.stack([dataset.base.image(i) for i in idx])
            out = raw.generate(x)
            hyps += out["reports"]
            refs += [dataset.text(i) for i in idx]
            if out["probabilities"] is not None:
                probs.append(out["probabilities"].numpy())
        return hyps, refs, (np.concatenate(probs) if probs else None)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        from unicxr.models.classifier import classifier_metrics

        assert isinstance(dataset, ReportItems)
        raw = self.unwrap(model)
        dev = next(raw.parameters()).device
        tl, al, nb = 0.0, 0.0, 0
        probs, targets = [], []
        for s in range(0, len(dataset), 64):
            batch = self.collate([dataset[i] for i in range(s, min(len(dataset), s + 64))])
            batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            tok_loss, aux_loss, aux = self._losses(raw, batch, train=False)
            tl += float(tok_loss)
            al += float(aux_loss) if aux_loss is not None else 0.0
            nb += 1
            if aux is not None:  # the head's logits of the pass above, not a second encoder run
                probs.append(torch.sigmoid(aux.float()).cpu().numpy())
                targets.append(batch["target"].cpu().numpy())
        out = {"token_loss": tl / max(nb, 1)}
        if probs:
            from unicxr.models.finding_metrics import choose_thresholds

            out["aux_loss"] = al / max(nb, 1)
            pa, ta = np.concatenate(probs), np.concatenate(targets)
            m = classifier_metrics(pa, ta, min_count=self.data_cfg.eval_min_count)
            out["aux_macro_auroc"] = m["macro_auroc"]
            if self.data_cfg.choose_thresholds:
                # chosen before the validation reports below are written, saved with the model
                raw.config = raw.config.model_copy(update={"thresholds": tuple(choose_thresholds(pa, ta, objective=self.data_cfg.threshold_objective))})
        n = min(self.data_cfg.eval_reports, len(dataset))
        if n:
            from unicxr.text.labeler import label_reports

            hyps, refs, _ = self._generate(raw, dataset, n)
            pl, rl = label_reports(hyps), label_reports(refs)
            out["ce_micro_f1_14"] = ce_micro_f1(pl, rl, UncertainPolicy.AS_NEGATIVE)
            out["ce_micro_f1_14_upos"] = ce_micro_f1(pl, rl, UncertainPolicy.AS_POSITIVE)
        return out

    @torch.no_grad()
    def log_media(self, model: torch.nn.Module, dataset: Dataset | None, step: int) -> Media | None:
        if dataset is None or not self.data_cfg.media_n:
            return None
        assert isinstance(dataset, ReportItems)
        n = min(self.data_cfg.media_n, len(dataset))
        hyps, refs, _ = self._generate(model, dataset, n)
        x = torch.stack([dataset.base.image(i) for i in range(n)])
        text = "\n\n".join(f"[{i}] generated: {h}\n[{i}] reference: {r}" for i, (h, r) in enumerate(zip(hyps, refs, strict=True)))
        return Media(images={"validation": x}, texts={"reports": text}, synthetic=False)
