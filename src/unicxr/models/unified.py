"""The unified model (``unified``): one transformer that reads and draws chest X-rays.

A **mixture of transformers** (UniX-style): every layer has two experts with separate weights —

* the *understanding* expert (norms, QKV, output projection, MLP) for report text tokens and image
  patch tokens (from the understanding ViT, :class:`~unicxr.models.image_encoder.ImageEncoder`,
  projected to the model width);
* the *generation* expert (the same parts, plus adaLN modulation by the flow time) for patchified
  latent tokens (2D sinusoidal positions computed for any grid, so the resolution may change between
  training stages) —

and both experts feed **one** scaled-dot-product attention over the packed sequence. Two sequences:

* understanding ``[image patch tokens | label tokens | report text]``: image and label tokens form a
  bidirectional prefix, text is causal and sees the whole prefix; the LM head gives next-token
  logits (report writing). The 14 *label tokens* (:mod:`unicxr.models.finding_tokens`, as in the
  report generator) carry the findings of an auxiliary 14-way head on the encoder's pooled image
  features: its probabilities (``label_input: soft``), its 0/1 decisions at validation ``thresholds``
  (``hard``), or in training the true findings where the task teacher-forces them;
* generation ``[prompt text | latent tokens]``: text is causal and never sees latents; latents see
  every (non-padding) prompt token and each other. The target image's understanding tokens are never
  part of it. Condition dropout replaces the prompt by the null prompt (BOS only) for CFG.

Because prompt text never attends to latents, its keys/values per layer do not depend on the
latents: sampling computes them once per prompt (and once for the null prompt) and reuses them at
every flow step (``kv_cache``; ``kv_cache=False`` recomputes the whole sequence, same result).

Losses (:meth:`UnifiedModel.forward`): next-token cross-entropy on report tokens, rectified-flow
velocity MSE (:mod:`unicxr.sampling.flow`, the generators' code) and an optional REPA term
(generation hidden states at layer ``repa_layer`` → a small MLP → negative cosine to the ViT's patch
features of the clean image, pooled to the latent grid). ``freeze_und`` freezes the understanding
side (its expert in every layer, the image encoder, aux head and label embeddings, text embeddings
and LM head).

Latent space, autoencoder/tokenizer components, ``initial_noise`` and ``generate`` come from
:class:`~unicxr.models.generator_base.GeneratorBase`, so ``unicxr generate --model`` works as for the
specialists; :meth:`UnifiedModel.generate_reports` (with :meth:`UnifiedModel.step_fn` for
:mod:`unicxr.sampling.decoding`) serves ``unicxr report --model``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unicxr.labels import FINDINGS
from unicxr.models.base import register_model
from unicxr.models.dit import FinalLayer, PatchEmbed, modulate, unpatchify
from unicxr.models.finding_tokens import label_token_embeddings, label_token_values, threshold_tensor
from unicxr.models.generator_base import GeneratorBase, GeneratorConfig
from unicxr.models.image_encoder import ImageEncoder, ImageEncoderConfig
from unicxr.models.latent_dit import resolution_shift
from unicxr.models.layers import MLP, Attention, KVCache, causal_mask, make_norm, prefix_lm_mask
from unicxr.sampling import (
    FLOW_SAMPLERS,
    TimestepEmbedder,
    cfg_combine,
    flow_interpolate,
    flow_sample,
    flow_target,
    sample_flow_t,
)
from unicxr.sampling.decoding import ReportWriter

__all__ = ["UnifiedConfig", "UnifiedModel", "MoTLayer", "prompt_text"]


def _default_encoder() -> ImageEncoderConfig:
    return ImageEncoderConfig(arch="vit", patch_size=8, dim=64, depth=2, num_heads=2, class_token=False)


class UnifiedConfig(GeneratorConfig):
    """Config of :class:`UnifiedModel`. Of the inherited ``condition`` section only ``cond_drop`` (the
    probability of the null prompt in training) is read: the prompt goes through the model itself."""

    encoder: ImageEncoderConfig = Field(default_factory=_default_encoder, description="understanding image encoder")
    vocab_size: int | None = Field(None, gt=0, description="filled from the tokenizer")
    dim: int = Field(128, ge=8)
    depth: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    max_len: int = Field(192, gt=1, description="text positions (bos/eos included)")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    qk_norm: bool = True
    patch: int = Field(2, ge=1, description="latent patch size of the generation tokens")
    freeze_und: bool = Field(False, description="freeze the understanding side (stage 2: generation pre-training)")
    repa_layer: int = Field(0, ge=0, description="layer (1-based) whose generation states REPA aligns (0: no REPA head)")
    repa_hidden: int = Field(256, ge=8)
    t_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    t_mean: float = 0.0
    t_std: float = Field(1.0, gt=0)
    shift: float | None = Field(None, ge=1.0, description="time shift (null: resolution_shift of the latent)")
    kv_cache: bool = Field(True, description="sampling reuses the prompt's keys/values at every flow step")
    aux_classifier: bool = Field(True, description="14-way finding head on the pooled understanding image features")
    label_tokens: bool = Field(
        True, description="14 label tokens (the aux head's findings) between the image tokens and the text"
    )
    label_input: Literal["soft", "hard"] = Field(
        "hard", description="label tokens from the aux probabilities (soft) or from 0/1 decisions at `thresholds` (hard)"
    )
    thresholds: tuple[float, ...] | None = Field(
        None, description="per-finding decision thresholds of the aux head (chosen on validation; default 0.5)"
    )


def prompt_text(report: str) -> str:
    """The text the unified model reads/writes for a report: its cleaned FINDINGS/IMPRESSION part
    (:func:`unicxr.data.reports.findings_impression`; header-less text is kept whole, a report with
    only meta sections such as INDICATION gives "")."""
    from unicxr.data.reports import findings_impression

    return findings_impression(report)


class _Expert(nn.Module):
    """One expert's parts of a layer: pre-norms, attention projections, MLP (+ adaLN for generation)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, norm: str, qk_norm: bool, adaln: bool) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim, affine=not adaln)  # type: ignore[arg-type]
        self.attn = Attention(dim, heads, qk_norm=qk_norm)
        self.norm2 = make_norm(norm, dim, affine=not adaln)  # type: ignore[arg-type]
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation="gelu_tanh")
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if adaln else None


class MoTLayer(nn.Module):
    """Mixture-of-transformers layer: understanding tokens ``xu`` and generation tokens ``xg`` go through
    their own expert's projections and MLP and meet in one attention over ``[cache | xu | xg]``.

    ``forward(xu, xg, c, mask, cache, use_cache)``: xu (B, Tu, D) or None, xg (B, Tg, D) or None,
    c (B, D) the flow-time vector (needed with xg), mask bool (Tu+Tg, K) or (B, 1, Tu+Tg, K) with K =
    cached + Tu + Tg keys (True = allowed), cache: this layer's understanding keys/values
    (:class:`KVCache`) from an earlier call. Returns (xu, xg, updated understanding cache or None).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, norm: str, qk_norm: bool) -> None:
        super().__init__()
        self.und = _Expert(dim, heads, mlp_ratio, norm, qk_norm, adaln=False)
        self.gen = _Expert(dim, heads, mlp_ratio, norm, qk_norm, adaln=True)

    def forward(
        self,
        xu: torch.Tensor | None,
        xg: torch.Tensor | None,
        c: torch.Tensor | None,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, KVCache | None]:
        nu = 0 if xu is None else xu.shape[1]
        qs: list[torch.Tensor] = []
        uk = [cache.k] if cache is not None else []
        uv = [cache.v] if cache is not None else []
        if nu:
            q, k, v = self.und.attn.project(self.und.norm1(xu))
            qs.append(q)
            uk.append(k)
            uv.append(v)
        ks, vs = list(uk), list(uv)
        if xg is not None:
            sh1, sc1, g1, sh2, sc2, g2 = self.gen.ada(c).chunk(6, dim=-1)
            q, k, v = self.gen.attn.project(modulate(self.gen.norm1(xg), sh1, sc1))
            qs.append(q)
            ks.append(k)
            vs.append(v)
        new_cache = KVCache(torch.cat(uk, dim=2), torch.cat(uv, dim=2)) if use_cache and uk else None
        out = F.scaled_dot_product_attention(
            torch.cat(qs, dim=2), torch.cat(ks, dim=2), torch.cat(vs, dim=2), attn_mask=mask
        )
        if nu:
            xu = xu + self.und.attn.merge(out[:, :, :nu])
            xu = xu + self.und.mlp(self.und.norm2(xu))
        if xg is not None:
            xg = xg + g1.unsqueeze(1) * self.gen.attn.merge(out[:, :, nu:])
            xg = xg + g2.unsqueeze(1) * self.gen.mlp(modulate(self.gen.norm2(xg), sh2, sc2))
        return xu, xg, new_cache


@register_model
class UnifiedModel(ReportWriter, GeneratorBase):
    """Reads (report writing) and draws (text-conditioned rectified flow) with one network; see the
    module docstring. Components: ``tokenizer`` (required) and ``autoencoder`` (null: pixel space)."""

    model_type = "unified"
    config_class = UnifiedConfig
    default_samplers = FLOW_SAMPLERS
    uses_condition_encoder = False

    def __init__(self, config: UnifiedConfig, components: dict[str, Any] | None = None) -> None:
        super().__init__(config, components)
        cfg = self.config
        if cfg.image_size is None or cfg.vocab_size is None or not cfg.latent_size:
            raise ValueError("UnifiedModel: image_size, latent_size and vocab_size must be set (the task fills them)")
        if self.tokenizer is None:
            raise ValueError("UnifiedModel needs a tokenizer component")
        if cfg.encoder.image_size is None:
            cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"image_size": cfg.image_size})})
        self.encoder = ImageEncoder(cfg.encoder)
        if self.encoder.config != cfg.encoder:
            cfg = cfg.model_copy(update={"encoder": self.encoder.config})
        self.config = cfg
        d, v = cfg.dim, cfg.vocab_size
        # understanding side
        self.img_proj = nn.Sequential(nn.Linear(self.encoder.dim, d), make_norm(cfg.norm, d))
        self.img_type = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.tok = nn.Embedding(v, d)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.und_norm = make_norm(cfg.norm, d)
        self.head = nn.Linear(d, v, bias=False)
        n_labels = len(FINDINGS)
        self.aux_head = nn.Linear(self.encoder.dim, n_labels) if cfg.aux_classifier else None
        self.label_emb = (
            nn.Parameter(torch.randn(2, n_labels, d) * 0.02) if cfg.label_tokens and cfg.aux_classifier else None
        )  # [absent, present] per finding
        # generation side
        c = cfg.latent_channels
        self.embed = PatchEmbed(c, cfg.latent_size, cfg.patch, d, positions="sincos")
        self.t_embed = TimestepEmbedder(d)
        self.final = FinalLayer(d, c * cfg.patch * cfg.patch)
        self.repa = (
            nn.Sequential(nn.Linear(d, cfg.repa_hidden), nn.SiLU(), nn.Linear(cfg.repa_hidden, self.encoder.dim))
            if cfg.repa_layer
            else None
        )
        if cfg.repa_layer > cfg.depth:
            raise ValueError(f"repa_layer {cfg.repa_layer} > depth {cfg.depth}")
        self.layers = nn.ModuleList(MoTLayer(d, cfg.heads, cfg.mlp_ratio, cfg.norm, cfg.qk_norm) for _ in range(cfg.depth))
        self._init()
        self.head.weight = self.tok.weight
        if cfg.freeze_und:
            for p in self.und_parameters():
                p.requires_grad_(False)

    def _init(self) -> None:
        for mod in (self.layers, self.img_proj, self.tok, self.pos, self.embed, self.repa, self.aux_head):
            if mod is None:
                continue
            for m in mod.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=0.02)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)
        scale = 0.02 / math.sqrt(2 * self.config.depth)
        for layer in self.layers:
            for e in (layer.und, layer.gen):
                nn.init.normal_(e.attn.proj.weight, std=scale)
                nn.init.normal_(e.mlp.fc2.weight, std=scale)
            nn.init.zeros_(layer.gen.ada[1].weight)  # adaLN-Zero: each generation expert starts as identity
            nn.init.zeros_(layer.gen.ada[1].bias)

    def train(self, mode: bool = True) -> UnifiedModel:
        """As ``nn.Module.train``; with ``freeze_und`` the understanding side stays in eval mode (no
        dropout, no batch-norm statistics updates), so its weights and buffers stay bit-identical."""
        super().train(mode)
        if self.config.freeze_und:
            for m in self.und_modules():
                m.eval()
        return self

    # -- parameter groups -----------------------------------------------------------------------------
    def und_modules(self) -> list[nn.Module]:
        """The understanding side: image encoder, its projection, aux head, text embeddings, the
        understanding expert of every layer, final norm and LM head (tied to the token embedding)."""
        aux = [self.aux_head] if self.aux_head is not None else []
        return [self.encoder, self.img_proj, *aux, self.tok, self.pos, self.und_norm, self.head,
                *(layer.und for layer in self.layers)]

    def und_parameters(self) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for m in self.und_modules():
            for p in m.parameters():
                seen[id(p)] = p
        for p in (self.img_type, self.label_emb):
            if p is not None:
                seen[id(p)] = p
        return list(seen.values())

    @property
    def shift(self) -> float:
        cfg = self.config
        return cfg.shift if cfg.shift is not None else resolution_shift(math.prod(self.latent_shape))

    # -- embeddings and masks -------------------------------------------------------------------------
    def image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W) in [0, 1] → (understanding tokens (B, N, D), encoder features (B, N, Dv))."""
        feats, _ = self.encoder(images)
        return self.img_proj(feats) + self.img_type, feats

    def threshold_tensor(self) -> torch.Tensor:
        """(14,) decision thresholds of the aux head (0.5 where none were chosen)."""
        return threshold_tensor(self.config.thresholds, len(FINDINGS))

    def und_prefix(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The understanding prefix of images (B, 1, H, W) in [0, 1]: (image tokens + label tokens
        (B, N [+ 14], D), aux logits (B, 14) or None). ``labels`` (B, 14): teacher-forced finding
        values for the label tokens (NaN: the head's own)."""
        feats, pooled = self.encoder(images)
        x = self.img_proj(feats) + self.img_type
        aux = self.aux_head(pooled) if self.aux_head is not None else None
        if self.label_emb is not None and aux is not None:
            cfg = self.config
            values = label_token_values(aux, labels, hard=cfg.label_input == "hard", thresholds=cfg.thresholds)
            x = torch.cat([x, label_token_embeddings(values, self.label_emb).to(x.dtype)], dim=1)
        return x, aux

    def text_embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """ids (B, T) at text positions ``offset ..`` → (B, T, D)."""
        t = ids.shape[1]
        if offset + t > self.config.max_len:
            raise ValueError(f"sequence of {offset + t} tokens exceeds max_len {self.config.max_len}")
        return self.tok(ids) + self.pos(torch.arange(offset, offset + t, device=ids.device))[None]

    @staticmethod
    def packed_mask(
        n_img: int, n_text: int, n_gen: int, lengths: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:
        """Bool attention mask (B|1, 1, L, L) of ``[image (n_img) | text (n_text) | latents (n_gen)]``:
        image tokens bidirectional, text causal + all image tokens, nothing of the understanding part
        sees latents; latents see every understanding token (text up to ``lengths`` (B,), the rest is
        padding) and each other."""
        tu = n_img + n_text
        total = tu + n_gen
        b = 1 if lengths is None else lengths.shape[0]
        m = torch.zeros(b, total, total, dtype=torch.bool, device=device)
        m[:, :tu, :tu] = prefix_lm_mask(n_img, tu, device)
        if n_gen:
            m[:, tu:, :tu] = UnifiedModel._key_valid(n_img, n_text, lengths, b, device)[:, None, :]
            m[:, tu:, tu:] = True
        return m[:, None]

    @staticmethod
    def _key_valid(n_img: int, n_text: int, lengths: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor:
        valid = torch.ones(b, n_img + n_text, dtype=torch.bool, device=device)
        if lengths is not None:
            valid[:, n_img:] = torch.arange(n_text, device=device)[None] < lengths.to(device)[:, None]
        return valid

    def _run(
        self,
        xu: torch.Tensor | None,
        xg: torch.Tensor | None,
        c: torch.Tensor | None,
        mask: torch.Tensor | None,
        cache: list[KVCache] | None = None,
        use_cache: bool = False,
        capture: int = 0,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[KVCache] | None, torch.Tensor | None]:
        new: list[KVCache] = []
        captured = None
        for j, layer in enumerate(self.layers):
            xu, xg, nc = layer(xu, xg, c, mask, cache[j] if cache is not None else None, use_cache)
            if use_cache:
                new.append(nc)  # type: ignore[arg-type]
            if capture and j + 1 == capture:
                captured = xg
        return xu, xg, (new if use_cache else None), captured

    def forward_packed(
        self,
        images: torch.Tensor | None,
        ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        xt: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        capture: int = 0,
        *,
        labels: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One packed sequence ``[image + label tokens of images | text ids | latent tokens of xt]``.

        Args:
            images: (B, 1, H, W) in [0, 1] or None (generation sequence: no image tokens).
            labels: (B, 14) teacher-forced values of the label tokens (NaN: the aux head's).
            prefix: a precomputed :meth:`und_prefix` (B, P, D) used instead of ``images``.
            ids: (B, T) text ids (right-padded; ``lengths`` (B,) real lengths, None = all real).
            xt: noisy latents (B, C, h, w) at flow times t (B,), or None (understanding sequence).
            capture: also return the generation states after this layer (1-based; 0: none).

        Returns:
            (text logits (B, T, V), velocity (B, C, h, w) or None, captured states (B, M, D) or None).
        """
        parts = []
        n_img = 0
        if prefix is None and images is not None:
            prefix, _ = self.und_prefix(images, labels)
        if prefix is not None:
            n_img = prefix.shape[1]
            parts.append(prefix)
        parts.append(self.text_embed(ids))
        xu = torch.cat(parts, dim=1)
        xg = c = None
        n_gen = 0
        if xt is not None:
            xg, c = self.embed(xt), self.t_embed(t)
            n_gen = xg.shape[1]
        mask = self.packed_mask(n_img, ids.shape[1], n_gen, lengths, ids.device)
        xu, xg, _, captured = self._run(xu, xg, c, mask, capture=capture)
        logits = self.head(self.und_norm(xu[:, n_img:]))
        vel = None
        if xg is not None:
            vel = self._velocity_out(xg, c, xt)
        return logits, vel, captured

    def _velocity_out(self, xg: torch.Tensor, c: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return unpatchify(self.final(xg, c), cfg.patch, xt.shape[1], xt.shape[2], xt.shape[3])

    # -- generation -----------------------------------------------------------------------------------
    def prompt_cache(self, ids: torch.Tensor) -> list[KVCache]:
        """Per-layer understanding keys/values (B, H, T, Dh) of prompts ids (B, T) (computed once per
        prompt: text never attends to latents, so they do not depend on them)."""
        xu = self.text_embed(ids)
        _, _, cache, _ = self._run(xu, None, None, causal_mask(ids.shape[1], ids.shape[1], ids.device), use_cache=True)
        return cache  # type: ignore[return-value]

    def velocity_cached(
        self, xt: torch.Tensor, t: torch.Tensor, cache: list[KVCache], lengths: torch.Tensor
    ) -> torch.Tensor:
        """Velocity (B, C, h, w) at xt, t (B,) with the prompt given by its cache and lengths (B,)."""
        xg, c = self.embed(xt), self.t_embed(t)
        n_text = cache[0].length
        b = xt.shape[0]
        valid = self._key_valid(0, n_text, lengths, b, xt.device)
        mask = torch.cat([valid, torch.ones(b, xg.shape[1], dtype=torch.bool, device=xt.device)], dim=1)
        _, xg, _, _ = self._run(None, xg, c, mask[:, None, None, :], cache=cache)
        return self._velocity_out(xg, c, xt)

    def null_prompt(
        self, ids: torch.Tensor, lengths: torch.Tensor, drop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the prompts of rows ``drop`` (B,) bool by the null prompt (BOS only)."""
        tok = self.tokenizer
        ids = ids.clone()
        ids[drop] = max(tok.pad_id, 0)
        ids[drop, 0] = tok.bos_id
        return ids, torch.where(drop.to(lengths.device), torch.ones_like(lengths), lengths)

    def condition_batch(self, labels=None, reports=None, laterality=None, severity=None) -> dict[str, Any]:
        """Prompts for sampling: ``{"input_ids": (B, T), "lengths": (B,)}`` of the reports' cleaned text
        (:func:`prompt_text`); without reports, null prompts (B from ``labels``). Labels, laterality and
        severity are not read: the model draws from text."""
        tok = self.tokenizer
        if reports is None:
            if labels is None:
                raise ValueError("condition_batch: give reports (or labels for null prompts)")
            rows = [[tok.bos_id] for _ in range(len(labels))]
        else:
            rows = [tok.encode(prompt_text(r or ""), max_length=self.config.max_len) for r in reports]
        return self._pad(rows)

    def _pad(self, rows: Sequence[Sequence[int]]) -> dict[str, Any]:
        device = next(self.parameters()).device
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), max(self.tokenizer.pad_id, 0), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return {"input_ids": ids.to(device), "lengths": torch.tensor([len(r) for r in rows], device=device)}

    @staticmethod
    def _join(a: dict[str, Any], b: dict[str, Any], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = max(a["input_ids"].shape[1], b["input_ids"].shape[1])

        def padded(x: torch.Tensor) -> torch.Tensor:
            return F.pad(x, (0, w - x.shape[1]), value=pad)

        return torch.cat([padded(a["input_ids"]), padded(b["input_ids"])]), torch.cat([a["lengths"], b["lengths"]])

    def velocity_fn(
        self,
        cond: dict[str, Any],
        guidance: float,
        negative: dict[str, Any] | None = None,
        kv_cache: bool | None = None,
    ) -> Any:
        """``v(x (B, C, h, w), t (B,))``: the guided velocity for prompts ``cond`` against the null
        prompt (or ``negative``); guidance 1 runs the conditional branch only. With ``kv_cache`` (default:
        the config's) the prompts' keys/values are computed here once and reused at every call."""
        use_kv = self.config.kv_cache if kv_cache is None else kv_cache
        ids, lengths = cond["input_ids"], cond["lengths"]
        b = ids.shape[0]
        if guidance != 1.0:
            if negative is None:
                all_drop = torch.ones(b, dtype=torch.bool, device=ids.device)
                nids, nlen = self.null_prompt(ids[:, :1], lengths, all_drop)
                negative = {"input_ids": nids, "lengths": nlen}
            ids, lengths = self._join(cond, negative, max(self.tokenizer.pad_id, 0))
        if use_kv:
            cache = self.prompt_cache(ids)

            def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return self.velocity_cached(x, t, cache, lengths)
        else:

            def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return self.forward_packed(None, ids, lengths, x, t)[1]  # type: ignore[return-value]

        if guidance == 1.0:
            return net

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            c, u = net(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
            return cfg_combine(c, u, guidance)

        return fn

    @torch.no_grad()
    def sample_latents(
        self,
        cond: dict[str, Any],
        *,
        steps: int,
        sampler: str,
        guidance: float,
        generator: torch.Generator,
        seeds: Sequence[int],
        negative: dict[str, Any] | None = None,
        progress: bool = False,
        kv_cache: bool | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Latents (B, C, h, w) for prompts ``cond`` (from :meth:`condition_batch`) with CFG against the
        null prompt (or ``negative``); ``kv_cache`` (default: the config's) reuses the prompts'
        keys/values at every step."""
        fn = self.velocity_fn(cond, guidance, negative, kv_cache)
        x1 = self.initial_noise(seeds)
        return flow_sample(fn, x1, steps=steps, sampler=sampler, shift=self.shift, progress=progress)

    # -- training -------------------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor | None,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        z0: torch.Tensor | None = None,
        *,
        text: bool = True,
        flow: bool = True,
        repa: bool = False,
        aux: bool = False,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses of one batch (global torch RNG for flow times, noise and prompt dropout).

        Args:
            images: (B, 1, H, W) in [0, 1] (needed for ``text`` and ``repa``).
            input_ids: (B, T) report ids (bos … eos, right-padded), lengths (B,) their real lengths;
                they are the report to write (understanding) and the prompt (generation).
            z0: clean latents (B, C, h, w) (needed for ``flow``).
            text / flow / repa: which losses to compute.
            aux: also return the aux head's logits (B, 14) under ``"aux_logits"`` (the task's BCE).
            labels: (B, 14) teacher-forced label-token values (NaN: the aux head's).

        Returns:
            ``{"text": CE, "flow": velocity MSE, "repa": −cosine}`` for the requested parts
            (+ ``"aux_logits"``).
        """
        out: dict[str, torch.Tensor] = {}
        aux_logits = None
        if text:
            prefix, aux_logits = self.und_prefix(images, labels)
            logits, _, _ = self.forward_packed(None, input_ids[:, :-1], prefix=prefix)
            target = input_ids[:, 1:].clone()
            pos = torch.arange(target.shape[1], device=target.device)[None]
            target[pos >= (lengths[:, None] - 1)] = -100
            out["text"] = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                          ignore_index=-100)
        if flow or repa:
            if z0 is None:
                raise ValueError("the flow loss needs clean latents z0")
            cfg = self.config
            b = z0.shape[0]
            noise = torch.randn_like(z0)
            t = sample_flow_t(b, mode=cfg.t_sampling, mean=cfg.t_mean, std=cfg.t_std, shift=self.shift, device=z0.device)
            xt = flow_interpolate(z0, noise, t)
            ids, lens = self.null_prompt(input_ids, lengths, self.drop_mask(b, z0.device))
            capture = cfg.repa_layer if repa else 0
            _, vel, states = self.forward_packed(None, ids, lens, xt, t, capture=capture)
            out["flow"] = F.mse_loss(vel.float(), flow_target(z0, noise).float())
            if repa:
                if self.repa is None or images is None:
                    raise ValueError("the REPA loss needs model.repa_layer > 0 and images")
                out["repa"] = self.repa_loss(states, images, z0.shape[-2:])
        if aux:
            if self.aux_head is None or images is None:
                raise ValueError("the aux logits need model.aux_classifier and images")
            out["aux_logits"] = aux_logits if aux_logits is not None else self.aux_head(self.encoder(images)[1])
        return out

    def repa_loss(self, states: torch.Tensor, images: torch.Tensor, latent_hw: Sequence[int]) -> torch.Tensor:
        """−cosine between ``repa(states)`` (B, M, Dv) and the encoder's patch features of the clean
        images (detached), average-pooled from the encoder grid to the latent token grid."""
        with torch.no_grad():
            _, feats = self.image_tokens(images)
        b, n, dv = feats.shape
        g = int(round(math.sqrt(n)))
        if g * g != n:
            raise ValueError(f"REPA needs a square encoder grid, got {n} tokens")
        gh, gw = latent_hw[0] // self.config.patch, latent_hw[1] // self.config.patch
        grid = feats.transpose(1, 2).reshape(b, dv, g, g)
        target = F.adaptive_avg_pool2d(grid, (gh, gw)).flatten(2).transpose(1, 2)
        pred = self.repa(states)
        return -F.cosine_similarity(pred.float(), target.float().detach(), dim=-1).mean()

    # -- report writing -------------------------------------------------------------------------------
    def step_fn(self) -> Any:
        """``step(ids, cache) -> (logits (B, V), cache)`` for :mod:`unicxr.sampling.decoding`; the initial
        cache is ``{"prefix": und_prefix(images)[0] (B, P, D), "layers": None, "pos": 0}``."""

        def step(ids: torch.Tensor, cache: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
            x = self.text_embed(ids, cache["pos"])
            if cache["layers"] is None:
                prefix = cache["prefix"]
                n = prefix.shape[1]
                x = torch.cat([prefix, x], dim=1)
                mask = prefix_lm_mask(n, n + ids.shape[1], ids.device)
            else:
                k_len = cache["layers"][0].length + ids.shape[1]
                mask = causal_mask(ids.shape[1], k_len, ids.device)
            xu, _, layers, _ = self._run(x, None, None, mask, cache["layers"], use_cache=True)
            logits = self.head(self.und_norm(xu[:, -1]))
            return logits, {"prefix": None, "layers": layers, "pos": cache["pos"] + ids.shape[1]}

        return step

    def report_start(self, images: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor | None]:
        """The decoding cache of :meth:`step_fn` for images (B, 1, H, W), and the aux logits (B, 14) or None."""
        prefix, aux = self.und_prefix(images)
        return {"prefix": prefix, "layers": None, "pos": 0}, aux

    def teacher_forced_logits(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) for images (B, 1, H, W) and tokens ``ids`` (B, T) (packed, causal)."""
        return self.forward_packed(images, ids)[0]
