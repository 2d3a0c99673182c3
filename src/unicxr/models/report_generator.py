"""Report generation: a causal transformer decoder (with a KV cache) over report tokens, conditioned
on image tokens by cross-attention or as a prefix.

* :class:`CausalDecoder` — token + position embeddings, pre-norm blocks from
  :mod:`unicxr.models.layers` (optionally with cross-attention), final norm, tied LM head. Reused by
  the unified model. :func:`load_gpt2_weights` initialises it from a local Hugging Face GPT-2 directory.
* :class:`CXRReportGenerator` (``cxr_report_generator``) — image encoder → projected memory tokens
  (+ optional *label tokens* built from an auxiliary 14-way classifier head on the pooled image
  features) → decoder. The tokenizer is a component, so ``load_model(RUN/model)`` can write reports.
  ``generate(images, DecodeConfig)`` decodes with :mod:`unicxr.sampling.decoding`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from unicxr.config import StrictModel
from unicxr.labels import FINDINGS
from unicxr.models.base import ModelMixin, register_model
from unicxr.models.finding_tokens import label_token_embeddings, label_token_values, threshold_tensor
from unicxr.models.image_encoder import ImageEncoder, ImageEncoderConfig
from unicxr.models.layers import KVCache, TransformerBlock, make_norm, prefix_lm_mask
from unicxr.sampling.decoding import ReportWriter
from unicxr.utils.errors import UnicxrError

__all__ = ["CausalDecoder", "ReportGeneratorConfig", "CXRReportGenerator", "load_gpt2_weights", "hf_decoder_dims"]

LayerCache = list[tuple[KVCache | None, KVCache | None]]


class CausalDecoder(nn.Module):
    """Causal transformer language model with optional conditioning.

    Args:
        vocab_size: V; dim: D; depth: blocks; num_heads: heads; max_len: token positions.
        cross_dim: width of a cross-attention memory (None: no cross-attention, prefix only).
        norm / activation / bias / norm_eps: block options (GPT-2: layernorm, gelu_tanh, bias, 1e-5).
        dropout: inside blocks and on embeddings.
        tie_embeddings: LM head shares the token embedding matrix.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        max_len: int = 256,
        *,
        mlp_ratio: float = 4.0,
        cross_dim: int | None = None,
        norm: Literal["layernorm", "rmsnorm"] = "layernorm",
        activation: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu",
        bias: bool = True,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, num_heads, mlp_ratio=mlp_ratio, cross_dim=cross_dim, norm=norm, activation=activation,
                bias=bias, dropout=dropout, norm_eps=norm_eps,
            )
            for _ in range(depth)
        )
        self.norm = make_norm(norm, dim, norm_eps)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        if tie_embeddings:
            self.head.weight = self.tok.weight
        self._init(depth)

    def _init(self, depth: int) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:  # GPT-2 style scaled init of residual projections
            for lin in (blk.attn.proj, blk.mlp.fc2, *( [blk.cross.proj] if blk.cross is not None else [])):
                nn.init.normal_(lin.weight, std=0.02 / (2 * depth) ** 0.5)

    def forward(
        self,
        ids: torch.Tensor,
        *,
        memory: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        pos_offset: int = 0,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, LayerCache | None]:
        """Next-token logits.

        Args:
            ids: (B, T) token ids at positions ``pos_offset ..``.
            memory: (B, S, Dc) cross-attention memory (first call; later calls use the cache).
            prefix: (B, P, D) embeddings placed before the tokens (prefix-LM mask; first call only).
            cache: per-layer (self, cross) KV caches from a previous call.
            pos_offset: position of ``ids[:, 0]`` among the tokens (prefix not counted).
            use_cache: return the updated caches.

        Returns:
            (logits (B, T, V) for the token positions, caches or None).
        """
        t = ids.shape[1]
        if pos_offset + t > self.max_len:
            raise ValueError(f"sequence of {pos_offset + t} tokens exceeds max_len {self.max_len}")
        pos = torch.arange(pos_offset, pos_offset + t, device=ids.device)
        x = self.tok(ids) + self.pos(pos)[None]
        n_prefix = 0
        mask = None
        if prefix is not None and cache is None:
            n_prefix = prefix.shape[1]
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
            mask = prefix_lm_mask(n_prefix, n_prefix + t, ids.device)
        x = self.drop(x)
        new: LayerCache = []
        for j, blk in enumerate(self.blocks):
            c = cache[j] if cache is not None else None
            x, nc = blk(x, memory, mask=mask, causal=mask is None, cache=c, use_cache=use_cache)
            if use_cache:
                new.append(nc)  # type: ignore[arg-type]
        x = self.norm(x[:, n_prefix:])
        return self.head(x), (new if use_cache else None)


def hf_decoder_dims(path: str | Path) -> dict[str, Any]:
    """Decoder sizes of a local HF GPT-2 directory (``dim``, ``depth``, ``num_heads``, ``max_len``, ...)."""
    from transformers import AutoConfig

    p = Path(path)
    if not (p / "config.json").is_file():
        raise UnicxrError(f"decoder_init: {p}: not a local Hugging Face model directory (no config.json)")
    cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
    if cfg.model_type != "gpt2":
        raise UnicxrError(f"decoder_init: {p}: model_type {cfg.model_type!r}; only GPT-2 checkpoints can initialise the decoder")
    inner = cfg.n_inner or 4 * cfg.n_embd
    return {
        "dim": cfg.n_embd, "depth": cfg.n_layer, "num_heads": cfg.n_head, "max_len": cfg.n_positions,
        "mlp_ratio": inner / cfg.n_embd, "norm": "layernorm", "activation": "gelu_tanh", "bias": True,
        "norm_eps": cfg.layer_norm_epsilon, "vocab_size": cfg.vocab_size,
    }


@torch.no_grad()
def load_gpt2_weights(decoder: CausalDecoder, path: str | Path) -> None:
    """Copy a local HF GPT-2's weights into ``decoder`` (same sizes; cross-attention stays as built).

    GPT-2 stores its projections as ``Conv1D`` (in, out) matrices; they are transposed into
    ``nn.Linear`` (out, in). Fused ``c_attn`` splits into our query and key/value projections.
    """
    from transformers import GPT2LMHeadModel

    try:
        hf = GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise UnicxrError(f"decoder_init: {path}: cannot load GPT-2: {str(exc).splitlines()[0]}") from None
    sd = hf.transformer.state_dict()
    d = decoder.tok.weight.shape[1]
    n_vocab = min(decoder.tok.weight.shape[0], sd["wte.weight"].shape[0])
    decoder.tok.weight[:n_vocab].copy_(sd["wte.weight"][:n_vocab])
    decoder.pos.weight.copy_(sd["wpe.weight"][: decoder.max_len])
    for i, blk in enumerate(decoder.blocks):
        g = f"h.{i}."
        blk.norm1.weight.copy_(sd[g + "ln_1.weight"])
        blk.norm1.bias.copy_(sd[g + "ln_1.bias"])
        w, b = sd[g + "attn.c_attn.weight"].t(), sd[g + "attn.c_attn.bias"]
        blk.attn.q.weight.copy_(w[:d])
        blk.attn.q.bias.copy_(b[:d])
        blk.attn.kv.weight.copy_(w[d:])
        blk.attn.kv.bias.copy_(b[d:])
        blk.attn.proj.weight.copy_(sd[g + "attn.c_proj.weight"].t())
        blk.attn.proj.bias.copy_(sd[g + "attn.c_proj.bias"])
        blk.norm2.weight.copy_(sd[g + "ln_2.weight"])
        blk.norm2.bias.copy_(sd[g + "ln_2.bias"])
        blk.mlp.fc1.weight.copy_(sd[g + "mlp.c_fc.weight"].t())
        blk.mlp.fc1.bias.copy_(sd[g + "mlp.c_fc.bias"])
        blk.mlp.fc2.weight.copy_(sd[g + "mlp.c_proj.weight"].t())
        blk.mlp.fc2.bias.copy_(sd[g + "mlp.c_proj.bias"])
    decoder.norm.weight.copy_(sd["ln_f.weight"])
    decoder.norm.bias.copy_(sd["ln_f.bias"])


class ReportGeneratorConfig(StrictModel):
    """Config of :class:`CXRReportGenerator`."""

    image_size: int | None = Field(None, ge=16, le=2048, description="input side (null: the cache's size)")
    encoder: ImageEncoderConfig = Field(default_factory=ImageEncoderConfig)
    vocab_size: int | None = Field(None, gt=0, description="filled from the tokenizer")
    conditioning: Literal["cross", "prefix"] = "cross"
    dim: int = Field(256, gt=0)
    depth: int = Field(3, gt=0)
    num_heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    max_len: int = Field(256, gt=1, description="token positions (bos/eos included)")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    activation: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu"
    bias: bool = True
    norm_eps: float = Field(1e-5, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    tie_embeddings: bool = True
    aux_classifier: bool = Field(True, description="14-way head on the pooled image features (multi-task)")
    label_tokens: bool = Field(
        True, description="feed the aux head's (detached) probabilities to the decoder as 14 memory tokens"
    )
    label_input: Literal["soft", "hard"] = Field(
        "soft", description="label tokens from the aux probabilities (soft) or from 0/1 decisions at `thresholds` (hard)"
    )
    thresholds: tuple[float, ...] | None = Field(
        None, description="per-finding decision thresholds of the aux head (chosen on validation; default 0.5)"
    )
    label_names: tuple[str, ...] = FINDINGS
    decoder_init: str | None = Field(None, description="local HF GPT-2 directory the decoder was initialised from")


@register_model
class CXRReportGenerator(ReportWriter, ModelMixin):
    """Images (B, 1, H, W) in [0, 1] → report token logits; ``generate`` writes reports.

    Components: ``tokenizer`` (:class:`~unicxr.text.tokenizer.ReportTokenizer`).
    """

    model_type = "cxr_report_generator"
    config_class = ReportGeneratorConfig

    def __init__(self, config: ReportGeneratorConfig, components: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.image_size is None or cfg.vocab_size is None:
            raise ValueError("CXRReportGenerator: image_size and vocab_size must be set (the task fills them)")
        if components and "tokenizer" in components:
            self.register_component("tokenizer", components["tokenizer"])
        self.encoder = ImageEncoder(cfg.encoder.model_copy(update={"image_size": cfg.image_size}))
        if self.encoder.config.hf_config != cfg.encoder.hf_config:
            self.config = cfg = cfg.model_copy(update={"encoder": self.encoder.config})
        with torch.no_grad():
            was = self.encoder.training
            self.encoder.eval()
            n_mem = self.encoder(torch.zeros(1, 1, cfg.image_size, cfg.image_size))[0].shape[1]
            self.encoder.train(was)
        self.n_image_tokens = int(n_mem)
        self.mem_proj = nn.Sequential(nn.Linear(self.encoder.dim, cfg.dim), make_norm(cfg.norm, cfg.dim))
        self.mem_pos = nn.Parameter(torch.randn(1, self.n_image_tokens, cfg.dim) * 0.02)
        n_labels = len(cfg.label_names)
        self.aux_head = nn.Linear(self.encoder.dim, n_labels) if cfg.aux_classifier else None
        if cfg.label_tokens and self.aux_head is not None:
            self.label_emb = nn.Parameter(torch.randn(2, n_labels, cfg.dim) * 0.02)  # [absent, present]
        else:
            self.label_emb = None
        self.decoder = CausalDecoder(
            cfg.vocab_size, cfg.dim, cfg.depth, cfg.num_heads, cfg.max_len, mlp_ratio=cfg.mlp_ratio,
            cross_dim=cfg.dim if cfg.conditioning == "cross" else None, norm=cfg.norm, activation=cfg.activation,
            bias=cfg.bias, norm_eps=cfg.norm_eps, dropout=cfg.dropout, tie_embeddings=cfg.tie_embeddings,
        )

    @property
    def tokenizer(self) -> Any:
        return self.component("tokenizer") if "tokenizer" in self.component_names else None

    # -- conditioning -------------------------------------------------------------------------------
    def threshold_tensor(self) -> torch.Tensor:
        """(14,) decision thresholds of the aux head (0.5 where none were chosen)."""
        return threshold_tensor(self.config.thresholds, len(self.config.label_names))

    def label_values(self, aux: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The values the 14 label tokens carry, (B, 14) in [0, 1]: the aux head's (detached)
        probabilities, or its 0/1 decisions when ``label_input="hard"``; where ``labels`` (B, 14) is
        not NaN its value is used instead (teacher forcing of the findings during training). See
        :func:`unicxr.models.finding_tokens.label_token_values`."""
        cfg = self.config
        return label_token_values(aux, labels, hard=cfg.label_input == "hard", thresholds=cfg.thresholds)

    def encode(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """images (B, 1, H, W) → (memory (B, M, dim), aux logits (B, 14) or None); ``labels``
        (B, 14) optional teacher-forced finding values for the label tokens (NaN: use the head's)."""
        tokens, pooled = self.encoder(images)
        mem = self.mem_proj(tokens) + self.mem_pos
        aux = self.aux_head(pooled) if self.aux_head is not None else None
        if self.label_emb is not None and aux is not None:
            lab = label_token_embeddings(self.label_values(aux, labels), self.label_emb)  # (B, 14, dim)
            mem = torch.cat([mem, lab.to(mem.dtype)], dim=1)
        return mem, aux

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: images (B, 1, H, W), input_ids (B, T), optional finding values ``labels``
        (B, 14) for the label tokens → (logits (B, T, V), aux logits (B, 14) or None)."""
        mem, aux = self.encode(images, labels)
        if self.config.conditioning == "cross":
            logits, _ = self.decoder(input_ids, memory=mem)
        else:
            logits, _ = self.decoder(input_ids, prefix=mem)
        return logits, aux

    # -- decoding -----------------------------------------------------------------------------------
    def step_fn(self) -> Any:
        """``step(ids, cache) -> (logits (B, V), cache)`` for :mod:`unicxr.sampling.decoding`; the
        initial cache is ``{"memory": (B, M, dim), "layers": None, "pos": 0}``."""

        def step(ids: torch.Tensor, cache: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
            first = cache["layers"] is None
            mem = cache["memory"] if first else None
            kw = {"memory": mem} if self.config.conditioning == "cross" else {"prefix": mem}
            logits, layers = self.decoder(ids, cache=cache["layers"], pos_offset=cache["pos"], use_cache=True, **kw)
            return logits[:, -1], {"memory": None, "layers": layers, "pos": cache["pos"] + ids.shape[1]}

        return step

    def report_start(self, images: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor | None]:
        """The decoding cache of :meth:`step_fn` for images (B, 1, H, W), and the aux logits (B, 14) or None."""
        mem, aux = self.encode(images)
        return {"memory": mem, "layers": None, "pos": 0}, aux

    def teacher_forced_logits(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) under teacher forcing (see :meth:`forward`)."""
        return self.forward(images, ids)[0]

    def generate(
        self, images: torch.Tensor, decode_cfg: Any = None, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Write reports for images (B, 1, H, W) in [0, 1]: :meth:`generate_reports`."""
        return self.generate_reports(images, decode_cfg, generator)
