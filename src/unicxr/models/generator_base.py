"""What every CXR generator shares: its latent space, its condition encoder, its components.

A generator holds (as components, see :mod:`unicxr.models.base`) a frozen autoencoder
(``model.autoencoder``: a saved ``autoencoder_kl``/``vqvae`` directory) and the report tokenizer, so
one saved folder is enough to sample. With ``autoencoder: null`` it works in pixel space (the image
mapped to [−1, 1]), which keeps tests and tiny configs free of a trained autoencoder.

A family implements :meth:`GeneratorBase.forward` (the training loss on clean latents, so DDP wraps
it) and :meth:`GeneratorBase.sample_latents`; :meth:`GeneratorBase.generate` reads top to bottom:
condition → latents → images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from unicxr.config import StrictModel
from unicxr.labels import NUM_FINDINGS
from unicxr.models.base import ModelMixin
from unicxr.models.conditioning import (
    LATERALITY,
    ConditionConfig,
    ConditionEncoder,
    report_laterality,
    report_severity,
    tokenize_reports,
)
from unicxr.sampling.guidance import APG_OFF

__all__ = ["GeneratorConfig", "FlowGeneratorConfig", "SideMapConfig", "GeneratorBase", "findings_off"]


class GeneratorConfig(StrictModel):
    """Fields every generator config has (families add their own)."""

    image_size: int | None = Field(None, ge=8, description="image side (null: the cache's size)")
    autoencoder: str | None = Field(None, description="saved autoencoder directory (null: pixel space)")
    tokenizer: str | None = Field(None, description="saved tokenizer directory (null: trained on the training split)")
    latent_channels: int = Field(1, ge=1, description="set from the autoencoder")
    latent_size: int = Field(0, ge=0, description="latent side (set from the autoencoder / image size)")
    condition: ConditionConfig = Field(default_factory=ConditionConfig)
    default_steps: int = Field(25, ge=1, description="sampling steps when none are given")
    default_sampler: str = Field("euler", description="sampler when none is given")
    default_guidance: float = Field(2.0, ge=0.0, description="guidance scale when none is given")
    default_apg: tuple[float, float] | None = Field(
        None,
        description=(
            "adaptive projected guidance (eta, r) when none is given (unicxr.sampling.apg_combine; families "
            "with guidance branches to shape: ldm_unet, latent_dit); null: plain guidance"
        ),
    )

    @field_validator("default_apg")
    @classmethod
    def _check_apg(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and any(not x >= 0 for x in v):
            raise ValueError(f"default_apg {list(v)}: eta and r must both be >= 0")
        return v


class FlowGeneratorConfig(GeneratorConfig):
    """Generator config of the flow families: how training times t in (0, 1) are drawn
    (:func:`unicxr.sampling.sample_flow_t`; t = 1 is the source: noise, or CrossFlow's text latent)."""

    t_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    t_mean: float = 0.0
    t_std: float = Field(1.0, gt=0)


class SideMapConfig(StrictModel):
    """Fields of the families that can take a side map (LDM-UNet, latent DiT): where the condition puts
    each finding, as a map over the latent grid (:meth:`GeneratorBase.finding_sides`)."""

    side_map: bool = Field(
        False, description="give the network a side map: two planes per finding that are 1 over the image half "
        "where the condition places that finding (patient's right = image left half, as a PA film is read; "
        "bilateral: both halves), 0.5 when it is uncertain, 0 where it is absent, has no side or the condition "
        "is dropped (LDM-UNet: concatenated to the UNet input; latent DiT: a zero-initialised per-patch "
        "embedding added to the patch tokens). The side then reaches every latent position directly instead of "
        "through attention, which has no notion of where a token's finding belongs. Needs condition.laterality "
        "(condition.report_laterality reads sides from reports). False (default) keeps saved models unchanged")
    side_map_unsided: bool = Field(
        False, description="with side_map: a present (or uncertain) finding the condition gives no side fills "
        "both halves (it may be anywhere) instead of neither, so every finding's presence, not only a sided "
        "one's, reaches every latent position (Support Devices, Cardiomegaly, Fracture, ...). "
        "False (default) keeps saved models unchanged")


class GeneratorBase(ModelMixin):
    """Base of the generator families (see module docstring).

    Subclasses call ``super().__init__(config, components)`` (which attaches the autoencoder and
    tokenizer and builds ``self.cond``), then build their network.
    """

    default_samplers: tuple[str, ...] = ()
    #: build ``self.cond`` (a :class:`ConditionEncoder`); a family that reads its prompt with its own
    #: network (the unified model) sets False and overrides :meth:`condition_batch`.
    uses_condition_encoder: bool = True
    #: leave out report padding that every row of a batch has (see :func:`trim_token_ids`). Only for
    #: networks that mask padding out of attention, so that an item's output does not depend on the
    #: rest of its batch.
    trims_padding: bool = True

    def __init__(self, config: GeneratorConfig, components: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        comps = dict(components or {})
        cfg = self.config
        if "autoencoder" not in comps and cfg.autoencoder is not None:
            from unicxr.models.autoencoder import load_autoencoder

            comps["autoencoder"], ae_dir = load_autoencoder(cfg.autoencoder)
            self._ae_source = str(ae_dir)
        else:
            self._ae_source = None
        self.has_ae = "autoencoder" in comps
        if self.has_ae:
            self.register_component("autoencoder", comps["autoencoder"], source=self._ae_source, frozen=True)
        if "tokenizer" not in comps and cfg.tokenizer is not None:
            from unicxr.text.tokenizer import ReportTokenizer

            comps["tokenizer"] = ReportTokenizer.from_pretrained(cfg.tokenizer)
        self.tokenizer = comps.get("tokenizer")
        if self.tokenizer is not None:
            self.register_component("tokenizer", self.tokenizer)
        if cfg.condition.kind != "findings" and self.tokenizer is None and not cfg.condition.hf_text_dir:
            raise ValueError("a text-conditioned generator needs a tokenizer component")
        if self.uses_condition_encoder:
            pad = self.tokenizer.pad_id if self.tokenizer is not None else 0
            self.cond = ConditionEncoder(cfg.condition, pad_id=pad)
        if self.side_map:
            if not (cfg.condition.laterality and cfg.condition.kind != "text"):
                raise ValueError("side_map needs findings with laterality (condition.kind findings/both, "
                                 "laterality true)")
        elif getattr(cfg, "side_map_unsided", False):
            raise ValueError("side_map_unsided needs side_map: true")
        if cfg.default_apg is not None and not self.contrast_guidance_ok:
            raise ValueError(f"default_apg: {self.model_type} has no guidance branches to shape (ldm_unet and "
                             "latent_dit have)")

    def resolve_apg(self, apg: tuple[float, float] | None) -> tuple[float, float] | None:
        """The APG (eta, r) a sampling call uses: ``apg``, or the config's ``default_apg`` when None; (1, 0)
        (plain guidance, what ``--apg off`` parses to) → None."""
        eta_r = self.config.default_apg if apg is None else apg
        return None if eta_r is None or tuple(float(v) for v in eta_r) == APG_OFF else tuple(eta_r)

    @property
    def side_map(self) -> bool:
        """Whether the network takes the side map (:class:`SideMapConfig`)."""
        return bool(getattr(self.config, "side_map", False))

    # -- latent space -------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latents this generator draws."""
        return (self.config.latent_channels, self.config.latent_size, self.config.latent_size)

    @torch.no_grad()
    def to_latent(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] → latents (B, C, h, w) (scaled autoencoder latents, or
        pixels in [−1, 1]). ``size``: resize the images to this side first (a low-resolution
        training phase); default: as given with an autoencoder, the latent side in pixel space."""
        from unicxr.utils.tensor_image import resize_square

        if size is not None and images.shape[-1] != size:
            images = resize_square(images, size)
        if self.has_ae:
            return self.autoencoder.encode(images)
        if size is None and images.shape[-1] != self.config.latent_size:
            images = resize_square(images, self.config.latent_size)
        return images * 2.0 - 1.0

    @torch.no_grad()
    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) → images (B, 1, H, W) in [0, 1]."""
        x = self.autoencoder.decode(z) if self.has_ae else (z + 1.0) / 2.0
        return x.clamp(0.0, 1.0)

    # -- conditions ---------------------------------------------------------------------------------
    def condition_batch(
        self,
        labels: torch.Tensor | np.ndarray | None = None,
        reports: Sequence[str] | None = None,
        laterality: torch.Tensor | np.ndarray | None = None,
        severity: torch.Tensor | np.ndarray | None = None,
        *,
        mirrored: bool = False,
    ) -> dict[str, Any]:
        """A condition dict for :class:`~unicxr.models.conditioning.ConditionEncoder` (reports are
        tokenized into windows; ``overflow`` counts reports longer than all windows). With
        ``condition.report_laterality`` each finding's side is read from the report where ``laterality``
        (B, 14) gives none, with ``condition.report_severity`` its size where ``severity`` gives none.
        ``mirrored``: the same condition on the patient's other side, ``left`` and
        ``right`` swapped in every report and in ``laterality`` (bilateral and unspecified stay)."""
        if mirrored:
            reports, laterality = _mirror(reports, laterality)
        ccfg = self.config.condition
        device = next(self.parameters()).device
        cond: dict[str, Any] = {}
        if labels is not None:
            cond["labels"] = torch.as_tensor(np.asarray(labels, np.float32) if not torch.is_tensor(labels) else labels,
                                             dtype=torch.float32).to(device)
        if reports is not None and ccfg.report_laterality and ccfg.laterality:
            laterality = report_laterality(list(reports), laterality)
        if reports is not None and ccfg.report_severity and ccfg.severity:
            severity = report_severity(list(reports), severity)
        if laterality is not None:
            cond["laterality"] = torch.as_tensor(laterality, dtype=torch.long).to(device)
        if severity is not None:
            cond["severity"] = torch.as_tensor(severity, dtype=torch.float32).to(device)
        if reports is not None and ccfg.kind != "findings" and self.tokenizer is not None:
            ids, overflow = tokenize_reports(self.tokenizer, list(reports), ccfg.max_tokens, ccfg.max_chunks)
            cond["input_ids"] = ids.to(device)
            cond["overflow"] = overflow
        return cond

    @staticmethod
    def batch_size_of(cond: dict[str, Any]) -> int:
        for key in ("labels", "input_ids"):
            if cond.get(key) is not None:
                return int(cond[key].shape[0])
        raise ValueError("empty condition")

    # -- family API ---------------------------------------------------------------------------------
    def forward(self, z0: torch.Tensor, cond: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on clean latents z0 (B, C, h, w) with condition dropout; returns (loss, logs)."""
        raise NotImplementedError

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
        contrasts: Sequence[tuple[dict[str, Any], float]] = (),
    ) -> tuple[torch.Tensor, int]:
        """Latents (B, C, h, w) for the condition, starting from :meth:`initial_noise` of ``seeds``
        (one per item); ``generator`` drives stochastic sampler steps; ``contrasts`` (conditions and
        scales): see :meth:`guided_fn` (only families with :attr:`contrast_guidance_ok`). Returns
        (latents, network evaluations)."""
        raise NotImplementedError

    #: whether :meth:`sample_latents` takes ``contrasts`` (side and finding guidance): its guidance
    #: combines network branches of one condition encoder (LDM-UNet, latent DiT)
    contrast_guidance_ok: bool = False

    #: network passes per item of the last sampling run's guided function (see :meth:`guided_fn`)
    network_passes: int | None = None

    #: set by :meth:`forced_drop`: every item's condition kept (False) or nulled (True)
    _forced_drop: bool | None = None

    def drop_mask(self, b: int, device: torch.device, p: float | None = None) -> torch.Tensor:
        """Training-time condition dropout with probability ``p`` (default ``condition.cond_drop``;
        global torch RNG, seeded per step by the trainer), unless :meth:`forced_drop` fixes it."""
        from unicxr.sampling import drop_condition

        if self._forced_drop is not None:
            return torch.full((b,), self._forced_drop, dtype=torch.bool, device=device)
        return drop_condition(b, self.config.condition.cond_drop if p is None else p, device)

    @contextmanager
    def forced_drop(self, null: bool) -> Iterator[None]:
        """Within the block the training loss keeps every item's condition (``null=False``) or gives
        every item the null condition (``null=True``) instead of drawing the dropout (diagnostics)."""
        self._forced_drop = bool(null)
        try:
            yield
        finally:
            self._forced_drop = None

    def encode_condition(self, cond: dict[str, Any], drop: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(tokens, mask, pooled), plus with ``side_map`` the sides (B, 2, 14) of :meth:`finding_sides`
        (extras after the first three batch with them: :func:`concat_tokens`)."""
        out = self.cond(cond, drop, trim=self.trims_padding)
        if not self.side_map:
            return out
        return (*out, self.finding_sides(cond, drop, unsided=self.config.side_map_unsided))

    @staticmethod
    def finding_sides(cond: dict[str, Any], drop: torch.Tensor | None, unsided: bool = False) -> torch.Tensor:
        """Float (B, 2, 14): row 0 the patient's right, row 1 the left; 1 where the condition's finding is
        present on that side (bilateral: both rows; with ``unsided`` also a finding without a side),
        0.5 where it is uncertain, 0 otherwise and for dropped items (the null condition has no sides)."""
        labels = cond.get("labels")
        lat = cond.get("laterality")
        ref = labels if labels is not None else cond["input_ids"]
        b, device = ref.shape[0], ref.device
        if labels is None:
            return torch.zeros(b, 2, NUM_FINDINGS, device=device)
        labels = labels.to(device).float()
        weight = torch.where(labels == 1, 1.0, torch.where(labels == -1, 0.5, 0.0))  # NaN → 0
        # no laterality given (a findings-only negative prompt): every finding unsided
        unspecified, both = LATERALITY.index("unspecified"), LATERALITY.index("bilateral")
        lat = (lat.to(device).long() if lat is not None
               else torch.full(labels.shape, unspecified, dtype=torch.long, device=device))
        if unsided:
            lat = torch.where(lat == unspecified, both, lat)
        right = (lat == LATERALITY.index("right")) | (lat == both)
        left = (lat == LATERALITY.index("left")) | (lat == both)
        sides = torch.stack([right, left], 1).float() * weight.unsqueeze(1)
        if drop is not None:
            sides = sides * (~drop.to(device)).view(b, 1, 1).float()
        return sides

    @staticmethod
    def side_planes(sides: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Sides (B, 2, 14) → map (B, 28, h, w): the right-side row over the image's left half
        (columns < w/2), the left-side row over its right half."""
        b = sides.shape[0]
        cols = torch.arange(w, device=sides.device) + 0.5
        halves = torch.stack([cols < w / 2, cols > w / 2]).to(sides.dtype)  # (2, w): image left, right
        planes = sides.unsqueeze(-1) * halves.view(1, 2, 1, w)  # (B, 2, 14, w)
        return planes.reshape(b, 2 * NUM_FINDINGS, 1, w).expand(b, 2 * NUM_FINDINGS, h, w)

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor | np.ndarray | None = None,
        reports: Sequence[str] | None = None,
        *,
        laterality: torch.Tensor | np.ndarray | None = None,
        severity: torch.Tensor | np.ndarray | None = None,
        negative_labels: torch.Tensor | np.ndarray | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        seed: int | Sequence[int] = 0,
        progress: bool = False,
        side_guidance: float = 0.0,
        finding_guidance: float = 0.0,
        guidance_rescale: float = 0.0,
        guidance_interval: tuple[float, float] | None = None,
        guidance_apg: tuple[float, float] | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Images (B, 1, H, W) in [0, 1] for B conditions, and the network evaluations used.

        ``seed``: one seed for the batch, or one per item (each item's starting noise then depends
        only on its own seed). ``negative_labels`` (B, 14): a negative prompt (the other branch of
        guidance is conditioned on these findings instead of the null condition). ``side_guidance`` s > 0
        adds s · (conditional − mirrored) to the guided output, where the mirror is the same condition
        with left and right swapped (in the report text and in ``laterality``): guidance along the side
        alone, one more network pass per step (LDM-UNet and latent DiT). ``finding_guidance`` s > 0 adds
        s · (conditional − the condition with its present and uncertain findings set absent): guidance along
        what the condition's findings alone change (the findings path: labels, pooled findings, side map;
        the report text stays), one more network pass per step (same families). ``guidance_rescale`` phi
        in [0, 1] rescales the guided output to the conditional output's spread
        (:func:`unicxr.sampling.cfg_rescale`), against blown-out images at large scales;
        ``guidance_interval`` (lo, hi) applies guidance only at noise levels in [lo, hi] (same families);
        ``guidance_apg`` (eta, r) shapes the guidance term by adaptive projected guidance
        (:func:`unicxr.sampling.apg_combine`; same families); None: the config's ``default_apg``; (1, 0):
        plain guidance.
        """
        self.eval()
        cond = self.condition_batch(labels, reports, laterality, severity)
        negative = self.condition_batch(negative_labels) if negative_labels is not None else None
        contrasts: list[tuple[dict[str, Any], float]] = []
        shaping = {k: v for k, v in (("rescale", float(guidance_rescale)), ("interval", guidance_interval),
                                     ("apg", self.resolve_apg(guidance_apg))) if v}
        if side_guidance or finding_guidance or shaping:
            if not self.contrast_guidance_ok:
                raise ValueError(f"side/finding guidance, guidance rescale, interval and APG: {self.model_type} has no "
                                 "guidance branches to shape (ldm_unet and latent_dit have)")
        if not 0.0 <= float(guidance_rescale) <= 1.0:
            raise ValueError(f"guidance rescale must be in [0, 1], got {guidance_rescale}")
        if side_guidance:
            contrasts.append((self.condition_batch(labels, reports, laterality, severity, mirrored=True),
                              float(side_guidance)))
        if finding_guidance:
            if labels is None:
                raise ValueError("finding guidance needs the condition's findings (labels)")
            contrasts.append((self.condition_batch(findings_off(labels), reports, laterality, severity),
                              float(finding_guidance)))
        b = self.batch_size_of(cond)
        seeds = [int(seed) + i for i in range(b)] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != b:
            raise ValueError(f"{len(seeds)} seeds for {b} conditions")
        z, nfe = self.sample_latents(
            cond,
            steps=steps or self.config.default_steps,
            sampler=sampler or self.config.default_sampler,
            guidance=self.config.default_guidance if guidance is None else guidance,
            generator=torch.Generator().manual_seed(seeds[0]),
            seeds=seeds,
            negative=negative,
            progress=progress,
            **({"contrasts": contrasts} if contrasts else {}),
            **shaping,
        )
        return self.from_latent(z), nfe

    def initial_noise(self, seeds: Sequence[int], shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Gaussian noise (B, *shape) (default shape: the latent's), item ``i`` from a CPU generator
        seeded with ``seeds[i]``: same seed ⇒ same noise on any device, whatever the batch."""
        device = next(self.parameters()).device
        shape = tuple(shape or self.latent_shape)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)

    def noise_level(self, t: torch.Tensor) -> float:
        """The noise level in [0, 1] (1: pure noise, 0: clean) of the sampler's time ``t`` (B,), as
        :func:`unicxr.sampling.in_interval` reads it (families with :attr:`contrast_guidance_ok`)."""
        raise NotImplementedError

    def x0_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b), each (B, 1, …, 1) like the latent, with the denoised estimate x0 = a·x_t + b·output of
        the network at time ``t`` (B,): what APG (:func:`unicxr.sampling.apg_combine`) projects in."""
        raise NotImplementedError

    def guided_fn(self, net, cond: dict[str, Any], negative: dict[str, Any] | None, guidance: float,
                  contrasts: Sequence[tuple[dict[str, Any], float]] = (), rescale: float = 0.0,
                  interval: tuple[float, float] | None = None, apg: tuple[float, float] | None = None):
        """``f(x, t)`` = guided output of ``net(x, t, tokens, mask, pooled, ...)`` for ``cond`` (the other
        branch: the null condition, or ``negative``); guidance 1 runs the conditional branch only. Each
        contrast (a condition c' such as the prompt mirrored, and its scale s) adds
        s · (net(cond) − net(c')) from one more branch of the same batch. ``rescale``: guidance rescale
        phi (:func:`unicxr.sampling.cfg_rescale`). ``interval`` (lo, hi): every guidance term applies
        only at noise levels lo ≤ :meth:`noise_level` ≤ hi; elsewhere ``f`` is the conditional output
        (one pass). ``apg`` (eta, r): adaptive projected guidance for the null branch's term, in the
        denoised space of :meth:`x0_coefficients`. :attr:`network_passes` counts the passes per item of
        the last ``f`` made."""
        from unicxr.sampling import guided, in_interval

        c = self.encode_condition(cond, None)
        extra = [(self.encode_condition(k, None), float(s)) for k, s in contrasts if s]
        self.network_passes = 0

        def plain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.network_passes += 1
            return net(x, t, *c)

        if guidance == 1.0 and not extra:
            return plain
        if negative is not None:
            u = self.encode_condition(negative, None)
        else:
            b = self.batch_size_of(cond)
            u = self.encode_condition(cond, torch.ones(b, dtype=torch.bool, device=c[0].device))
        branches = 1 + (guidance != 1.0) + len(extra)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if interval is not None and not in_interval(self.noise_level(t), interval):
                return plain(x, t)
            self.network_passes += branches
            return guided(lambda xx, tt, cc: net(xx, tt, *cc), x, t, c, u, guidance, concat=concat_tokens,
                          contrasts=extra, rescale=rescale, apg=apg,
                          to_x0=self.x0_coefficients(t) if apg is not None else None)

        return fn


def findings_off(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Labels (B, 14) with every present (1) and uncertain (−1) finding set absent (0); absent and
    unspecified (NaN) stay: the contrast of finding guidance."""
    lab = np.array(labels.detach().cpu() if torch.is_tensor(labels) else labels, dtype=np.float32)
    lab[(lab == 1) | (lab == -1)] = 0.0
    return lab


def _mirror(reports: Sequence[str] | None, laterality: Any) -> tuple[list[str] | None, torch.Tensor | None]:
    """Reports and laterality codes (B, 14) with left and right swapped (see ``condition_batch``)."""
    from unicxr.models.conditioning import LATERALITY
    from unicxr.text.laterality import mirror_sides

    if reports is None and laterality is None:
        raise ValueError("side guidance needs reports or laterality to mirror")
    if laterality is not None:
        lat = torch.as_tensor(laterality).long()
        left, right = LATERALITY.index("left"), LATERALITY.index("right")
        laterality = torch.where(lat == left, right, torch.where(lat == right, left, lat))
    return ([mirror_sides(r) for r in reports] if reports is not None else None), laterality


def concat_tokens(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Batch two encoded conditions (tokens, mask, pooled, *per-item extras such as an LDM-UNet's sides)
    whose token counts may differ (padding tokens are masked out)."""
    n = max(a[0].shape[1], b[0].shape[1])

    def pad(x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        tok, mask, *rest = x
        extra = n - tok.shape[1]
        if extra:
            tok = torch.cat([tok, tok.new_zeros(tok.shape[0], extra, tok.shape[2])], 1)
            mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)
        return (tok, mask, *rest)

    return tuple(torch.cat([x, y]) for x, y in zip(pad(a), pad(b), strict=True))


def load_generator(path: str | Path, device: str = "cpu") -> tuple[GeneratorBase, Path]:
    """(generator, its directory) of a saved generator model or training run folder; a one-line
    error for anything else."""
    from unicxr.models import load_model, resolve_model_dir
    from unicxr.utils.errors import UnicxrError

    model_dir = resolve_model_dir(path)
    model = load_model(model_dir, device=device)
    if not isinstance(model, GeneratorBase):
        raise UnicxrError(f"{model_dir}: model type {model.model_type!r} is not a generator")
    return model, model_dir
