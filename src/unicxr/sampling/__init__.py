"""Sampling: autoregressive decoding (:mod:`unicxr.sampling.decoding`) and, later, diffusion/flow samplers."""

from __future__ import annotations

__all__: list[str] = []
