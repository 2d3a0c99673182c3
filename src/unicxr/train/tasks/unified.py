"""Task ``unified``: train :class:`~unicxr.models.unified.UnifiedModel` (reads and draws CXRs).

Each item is an image and its report. The report is cleaned with :mod:`unicxr.data.reports`
(:func:`~unicxr.models.unified.prompt_text`: FINDINGS/IMPRESSION, de-identification markers and
whitespace removed); items whose report is empty after cleaning are dropped, and the counts
(cleaned, dropped, truncated to ``data.max_tokens``) are printed and reported by ``evaluate``. The
cleaned report is both the text the understanding branch learns to write and the prompt of the
generation branch. Loss ``w_text · CE + w_flow · velocity MSE + w_repa · REPA + w_aux · BCE`` (weights
in the recipe's ``data`` section; a zero weight skips that branch's computation). The BCE trains the
model's auxiliary 14-way finding head on ``target`` (labels under ``uncertain_policy``, NaN masked);
its findings are the model's label tokens, which carry the true findings instead for a random
``label_teacher_forcing`` share of the training items. ``evaluate`` chooses the head's decision
thresholds on the validation split (``threshold_objective``) before it writes the validation
reports, and stores them in the model config (the trainer's final evaluation saves them). With
``model.freeze_und`` the understanding side is frozen, and its thresholds are kept: they come from
``train.init_from`` when the recipe leaves ``model.thresholds`` null.

Like the generator tasks: image size from the cache unless ``model.image_size`` is set, latent shape
from the autoencoder (``model.autoencoder: null`` = pixel space), the training split encoded once into
``RUN/latents/`` when a flow or REPA loss is on (the items then carry ``latent`` beside ``image``), ``data.latents`` (a ``unicxr
encode`` cache; text and REPA need images, so only with ``w_text = w_repa = 0``), and with
``train.init_from`` the tokenizer/autoencoder left null come from the init model, and so does the
architecture (:attr:`UnifiedTask.ARCH_KEYS`) the recipe leaves out. Stages: see the ``unified_phantom_*``
recipes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.data.dataset import CXRDataset
from unicxr.labels import UncertainPolicy
from unicxr.models.finding_metrics import ThresholdObjective
from unicxr.models.finding_tokens import teacher_labels
from unicxr.models.unified import UnifiedConfig, UnifiedModel, prompt_text
from unicxr.train.tasks import Media, collate_items, register_task
from unicxr.train.tasks.finding_classifier import weighted_masked_bce
from unicxr.train.tasks.generator import GeneratorDataConfig, GeneratorTask, _LatentItems
from unicxr.utils.errors import UnicxrError

__all__ = ["UnifiedDataConfig", "UnifiedTask", "UnifiedItems", "clean_reports"]


class UnifiedDataConfig(GeneratorDataConfig):
    """Data section of a unified recipe (loss weights included, as ``aux_weight`` of the report task)."""

    max_tokens: int = Field(160, ge=4, description="report tokens per item (bos/eos included; longer ones are cut)")
    w_text: float = Field(1.0, ge=0, description="weight of the report cross-entropy")
    w_flow: float = Field(1.0, ge=0, description="weight of the velocity loss")
    w_repa: float = Field(0.0, ge=0, description="weight of the REPA alignment (needs model.repa_layer)")
    w_aux: float = Field(1.0, ge=0, description="weight of the aux finding head's masked BCE (needs model.aux_classifier)")
    label_teacher_forcing: float = Field(
        0.0, ge=0, le=1,
        description="per-item probability that the label tokens carry the true findings (training only)",
    )
    uncertain_policy: UncertainPolicy = UncertainPolicy.IGNORE
    blank_as_negative: bool = True
    choose_thresholds: bool = Field(True, description="store validation thresholds of the aux head (not with freeze_und)")
    threshold_objective: ThresholdObjective = Field(
        "micro_f1", description="f1: each finding's own F1 optimum; micro_f1: maximise the F1 pooled over findings"
    )
    eval_min_count: int = Field(20, ge=1, description="positives/negatives a finding needs to enter the aux macro AUROC")
    eval_reports: int = Field(16, ge=0, description="validation images given greedy reports at each evaluation")
    media_n: int = Field(4, ge=0)


def clean_reports(raw: Sequence[str], tokenizer: Any | None, max_tokens: int) -> tuple[list[str], list[int], dict[str, int]]:
    """Cleaned texts, the indices kept (non-empty after cleaning) and the counts ``items``, ``cleaned``
    (text changed by cleaning), ``dropped`` (empty after cleaning), ``truncated`` (longer than
    ``max_tokens`` tokens; needs ``tokenizer``)."""
    texts = [prompt_text(r or "") for r in raw]
    keep = [i for i, t in enumerate(texts) if t]
    counts = {
        "items": len(raw),
        "cleaned": sum(1 for r, t in zip(raw, texts, strict=True) if t != (r or "").strip()),
        "dropped": len(raw) - len(keep),
        "truncated": 0,
    }
    if tokenizer is not None:
        counts["truncated"] = sum(1 for i in keep if len(tokenizer.encode(texts[i], max_length=10**9)) > max_tokens)
    return texts, keep, counts


class UnifiedItems(Dataset):
    """Items (image or latent, labels, index) of kept reports with ``input_ids`` of the cleaned report
    and ``report`` = the cleaned text."""

    def __init__(self, base: Any, raw_reports: Sequence[str], tokenizer: Any, max_tokens: int) -> None:
        self.base = base
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.texts, self.keep, self.counts = clean_reports(raw_reports, tokenizer, max_tokens)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = self.keep[j]
        item = dict(self.base[i])
        item["report"] = self.texts[i]
        item["input_ids"] = torch.tensor(self.tokenizer.encode(self.texts[i], max_length=self.max_tokens), dtype=torch.long)
        return item


class _ImagesWithLatents(Dataset):
    """Image items of the training split, each with ``latent`` (C, h, w) from the latents encoded once
    (:meth:`GeneratorTask._encode_once`, same items in the same order), so the flow loss does not run
    the autoencoder's encoder at every step while the text, REPA and aux losses still see the image."""

    def __init__(self, images: CXRDataset, encoded: _LatentItems) -> None:
        if len(images) != len(encoded):
            raise UnicxrError(f"{encoded.cache.root}: {len(encoded)} encoded items, but the training split has "
                              f"{len(images)}")
        self.images, self.latents = images, encoded.cache

    def __len__(self) -> int:
        return len(self.images)

    def report(self, i: int) -> str:
        return self.images.report(i)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.images[i], "latent": self.latents.latent(i)}


@register_task("unified")
class UnifiedTask(GeneratorTask):
    """Report cross-entropy + rectified-flow velocity (+ REPA) on one mixture-of-transformers model."""

    ModelConfig = UnifiedConfig
    DataConfig = UnifiedDataConfig
    model_class = UnifiedModel
    ARCH_KEYS = ("encoder", "dim", "depth", "heads", "mlp_ratio", "max_len", "norm", "qk_norm", "patch",
                 "repa_layer", "repa_hidden", "aux_classifier", "label_tokens", "label_input")

    def __init__(self, model_cfg: UnifiedConfig, data_cfg: UnifiedDataConfig) -> None:
        super().__init__(model_cfg, data_cfg)
        d = data_cfg
        if d.lowres_size is not None or d.lowres_steps:
            raise UnicxrError("data.lowres_size: the unified model changes resolution between stages "
                              "(unified_phantom_gen at 64 px, then unified_phantom_ft), not within a run")
        if d.latents is not None and (d.w_text > 0 or d.w_repa > 0):
            raise UnicxrError("data.latents: the text and REPA losses need images; use it with w_text=0 and w_repa=0")
        if d.latents is not None and d.w_aux > 0:
            raise UnicxrError("data.latents: the aux finding loss needs images; set data.w_aux=0")
        if d.w_aux > 0 and not model_cfg.aux_classifier:
            raise UnicxrError("data.w_aux > 0 needs model.aux_classifier: true")
        if d.w_text == d.w_flow == d.w_repa == d.w_aux == 0:
            raise UnicxrError("data.w_text, w_flow, w_repa and w_aux are all 0: nothing to train")
        self.cleaning: dict[str, dict[str, int]] = {}

    # -- building -----------------------------------------------------------------------------------
    def _load_tokenizer(self) -> Any:
        if self._tokenizer is not None:
            return self._tokenizer
        from unicxr.text.tokenizer import ReportTokenizer, train_tokenizer

        if self.model_cfg.tokenizer is not None:
            self._tokenizer = ReportTokenizer.from_pretrained(self.model_cfg.tokenizer)
        else:
            base = CXRDataset(self.data_cfg.cache, self.data_cfg.train_split, max_items=self.data_cfg.max_items,
                              fields=("report",))
            texts, keep, _ = clean_reports([base.report(i) for i in range(len(base))], None, 0)
            if not keep:
                raise UnicxrError(f"data.cache: {self.data_cfg.cache}: no reports left after cleaning")
            self._tokenizer = train_tokenizer([texts[i] for i in keep], vocab_size=self.data_cfg.tokenizer_vocab,
                                              max_length=self.data_cfg.max_tokens)
        return self._tokenizer

    def build_model(self) -> UnifiedModel:
        self._architecture_from_init()
        if self.data_cfg.w_repa > 0 and self.model_cfg.repa_layer == 0:
            raise UnicxrError("data.w_repa > 0 needs model.repa_layer (the layer whose states are aligned)")
        self._components_from_init()
        self._fill_latent()
        tok = self._load_tokenizer()
        if self.data_cfg.max_tokens > self.model_cfg.max_len:
            raise UnicxrError(f"data.max_tokens ({self.data_cfg.max_tokens}) exceeds model.max_len ({self.model_cfg.max_len})")
        self.model_cfg = self.model_cfg.model_copy(update={"vocab_size": tok.vocab_size})
        self._thresholds_from_init()
        model = UnifiedModel(self.model_cfg, components={"tokenizer": tok})
        self._freeze_unused(model)
        return model

    def _thresholds_from_init(self) -> None:
        """With ``freeze_und`` and ``train.init_from``: the aux head's thresholds (part of the frozen
        understanding side) come from the init model unless the recipe sets them."""
        cfg = self.model_cfg
        if self.init_from is None or not cfg.freeze_und or cfg.thresholds is not None:
            return
        from unicxr.train.init_from import init_config_values

        thr = init_config_values(self.init_from, ["thresholds"]).get("thresholds")
        if thr is not None:
            self.model_cfg = cfg.model_copy(update={"thresholds": tuple(thr)})

    def _freeze_unused(self, model: UnifiedModel) -> None:
        """Parts no loss of this stage reaches get ``requires_grad=False`` (they would get no gradient
        anyway, so training is unchanged; DDP then does not wait for their gradients): the generation
        side without flow/REPA loss, the REPA head without REPA loss, the aux head without aux loss (the
        label tokens read it detached), and the image projection, label embeddings and final text norm
        without text loss (the image encoder too without text and aux loss)."""
        d = self.data_cfg
        frozen: list[torch.nn.Parameter] = []
        if d.w_flow == 0 and d.w_repa == 0:
            und = {id(p) for p in model.und_parameters()}
            frozen += [p for p in model.parameters() if id(p) not in und]
        elif d.w_repa == 0 and model.repa is not None:
            frozen += list(model.repa.parameters())
        if d.w_aux == 0 and model.aux_head is not None:
            frozen += list(model.aux_head.parameters())
        if d.w_text == 0:
            frozen += [*model.img_proj.parameters(), model.img_type, *model.und_norm.parameters()]
            frozen += [model.label_emb] if model.label_emb is not None else []
            if d.w_aux == 0 or model.aux_head is None:
                frozen += list(model.encoder.parameters())
        for p in frozen:
            p.requires_grad_(False)

    def _dataset(self, split: str) -> Dataset:
        cfg = self.data_cfg
        if cfg.latents is not None and split == cfg.train_split:
            lc = self._latent_cache(split)
            base: Any = _LatentItems(lc, cfg.max_items)
            raw = [lc.report(i) for i in range(len(base))]
        else:
            base = CXRDataset(cfg.cache, split, size=self.model_cfg.image_size, max_items=cfg.max_items,
                              policy=cfg.uncertain_policy, blank_as_negative=cfg.blank_as_negative,
                              fields=("image", "labels", "report", "index"))
            raw = [base.report(i) for i in range(len(base))]
            if self._encoded is not None and split == cfg.train_split:
                base = _ImagesWithLatents(base, self._encoded)
        items = UnifiedItems(base, raw, self._load_tokenizer(), cfg.max_tokens)
        self.cleaning[split] = items.counts
        c = items.counts
        msg = (f"report cleaning ({split}): {c['items']} items, {c['cleaned']} cleaned, {c['dropped']} dropped "
               f"(empty), {c['truncated']} truncated to {cfg.max_tokens} tokens")
        if self.accelerator is not None:
            self.accelerator.print(msg)
        else:
            print(msg)
        return items

    def _encode_once(self) -> Dataset | None:
        """The generator tasks' encode-once latents, only when a loss uses latents (flow or REPA)."""
        d = self.data_cfg
        return super()._encode_once() if (d.w_flow > 0 or d.w_repa > 0) else None

    # -- data ---------------------------------------------------------------------------------------
    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack images/latents; right-pad ``input_ids`` (pad id) and give their ``lengths``."""
        ids = [it["input_ids"] for it in items]
        rest = collate_items([{k: v for k, v in it.items() if k != "input_ids"} for it in items])
        width = max(len(x) for x in ids)
        batch = torch.full((len(ids), width), max(int(self._load_tokenizer().pad_id), 0), dtype=torch.long)
        for i, x in enumerate(ids):
            batch[i, : len(x)] = x
        rest["input_ids"] = batch
        rest["lengths"] = torch.tensor([len(x) for x in ids], dtype=torch.long)
        return rest

    # -- loss ---------------------------------------------------------------------------------------
    def _parts(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raw: UnifiedModel = self.unwrap(model)
        d = self.data_cfg
        flow = d.w_flow > 0 or d.w_repa > 0
        z0 = None
        if flow:
            z0 = batch["latent"] if "latent" in batch else raw.to_latent(batch["image"])
        aux = d.w_aux > 0 and raw.aux_head is not None
        teacher = teacher_labels(batch["target"], self.data_cfg.label_teacher_forcing) if d.w_text > 0 and "target" in batch else None
        parts = model(batch.get("image"), batch["input_ids"], batch["lengths"], z0, text=d.w_text > 0, flow=flow,
                      repa=d.w_repa > 0, aux=aux, labels=teacher)
        if aux:
            parts["aux"] = weighted_masked_bce(parts.pop("aux_logits"), batch["target"], None)
        return parts

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        d = self.data_cfg
        parts = self._parts(model, batch)
        weights = {"text": d.w_text, "flow": d.w_flow, "repa": d.w_repa, "aux": d.w_aux}
        total = sum(weights[k] * v for k, v in parts.items() if weights[k] > 0)
        return total, {f"{k}_loss": float(v.detach()) for k, v in parts.items()}

    # -- validation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        """Validation text CE and velocity MSE on the first ``val_items`` items (fixed noise); the aux
        head's BCE and macro AUROC on the whole split, where its thresholds are chosen (unless the
        understanding side is frozen); CE micro-F1 of greedy reports for ``eval_reports`` items (written
        after the threshold choice); the report-cleaning counts."""
        from unicxr.labels import UncertainPolicy
        from unicxr.text.labeler import label_reports
        from unicxr.train.tasks.report_generator import ce_micro_f1

        raw: UnifiedModel = self.unwrap(model)
        dev = next(raw.parameters()).device
        n = min(self.data_cfg.val_items, len(dataset))
        out: dict[str, float] = {}
        state = torch.random.get_rng_state()
        torch.manual_seed(1234)
        try:
            for s in range(0, n, 32):
                batch = self.collate([dataset[i] for i in range(s, min(n, s + 32))])
                batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                z0 = raw.to_latent(batch["image"])
                parts = raw(batch["image"], batch["input_ids"], batch["lengths"], z0, text=True, flow=True)
                w = len(batch["lengths"]) / n
                for k, v in parts.items():
                    out[f"val_{k}_loss"] = out.get(f"val_{k}_loss", 0.0) + float(v) * w
        finally:
            torch.random.set_rng_state(state)
        if raw.aux_head is not None:
            out.update(self._aux_eval(raw, dataset))
        m = min(self.data_cfg.eval_reports, len(dataset))
        if m:
            hyps, refs = self._reports(raw, dataset, m)
            pl, rl = label_reports(hyps), label_reports(refs)
            out["ce_micro_f1_14"] = ce_micro_f1(pl, rl, UncertainPolicy.AS_NEGATIVE)
            out["ce_micro_f1_14_upos"] = ce_micro_f1(pl, rl, UncertainPolicy.AS_POSITIVE)
        for split, c in self.cleaning.items():
            for k in ("cleaned", "dropped", "truncated"):
                out[f"clean_{split}_{k}"] = float(c[k])
        return out

    def _aux_eval(self, raw: UnifiedModel, dataset: Dataset, batch_size: int = 64) -> dict[str, float]:
        """Aux head on every validation item: ``val_aux_loss``, ``aux_macro_auroc``; stores the chosen
        thresholds in ``raw.config`` (not when ``freeze_und``: the understanding side stays as it is)."""
        import numpy as np

        from unicxr.models.classifier import classifier_metrics
        from unicxr.models.finding_metrics import choose_thresholds

        dev = next(raw.parameters()).device
        probs, targets, loss, n = [], [], 0.0, len(dataset)
        for s in range(0, n, batch_size):
            items = [dataset[i] for i in range(s, min(n, s + batch_size))]
            if "target" not in items[0]:
                return {}
            x = torch.stack([it["image"] for it in items]).to(dev)
            tgt = torch.stack([it["target"] for it in items]).to(dev)
            logits = raw.aux_head(raw.encoder(x)[1]).float()
            loss += float(weighted_masked_bce(logits, tgt, None)) * len(items) / n
            probs.append(torch.sigmoid(logits).cpu().numpy())
            targets.append(tgt.cpu().numpy())
        if not probs:
            return {}
        pa, ta = np.concatenate(probs), np.concatenate(targets)
        out = {"val_aux_loss": loss,
               "aux_macro_auroc": classifier_metrics(pa, ta, min_count=self.data_cfg.eval_min_count)["macro_auroc"]}
        if self.data_cfg.choose_thresholds and not raw.config.freeze_und:
            thr = choose_thresholds(pa, ta, objective=self.data_cfg.threshold_objective)
            raw.config = raw.config.model_copy(update={"thresholds": tuple(float(t) for t in thr)})
        return out

    def _reports(self, raw: UnifiedModel, dataset: Dataset, n: int, batch_size: int = 32) -> tuple[list[str], list[str]]:
        hyps, refs = [], []
        for s in range(0, n, batch_size):
            items = [dataset[i] for i in range(s, min(n, s + batch_size))]
            out = raw.generate_reports(torch.stack([it["image"] for it in items]))
            hyps += out["reports"]
            refs += [it["report"] for it in items]
        return hyps, refs

    @torch.no_grad()
    def log_media(self, model: torch.nn.Module, dataset: Dataset | None, step: int) -> Media | None:
        if dataset is None or not self.data_cfg.media_n:
            return None
        raw: UnifiedModel = self.unwrap(model)
        n = min(self.data_cfg.media_n, len(dataset))
        items = [dataset[i] for i in range(n)]
        prompts = [it["report"] for it in items]
        images, nfe = raw.generate(reports=prompts, labels=None, steps=self.data_cfg.media_steps, seed=0)
        hyps, _ = self._reports(raw, dataset, n)
        real = torch.stack([it["image"] for it in items])
        text = "\n\n".join(f"[{i}] prompt/reference: {p}\n[{i}] generated report: {h}"
                           for i, (p, h) in enumerate(zip(prompts, hyps, strict=True)))
        return Media(images={"samples": images.cpu(), "real": real}, texts={"reports": text + f"\n(nfe={nfe})"})
