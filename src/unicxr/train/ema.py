"""Exponential moving average of the *trainable* parameters of a model.

Frozen parts (a frozen autoencoder or text encoder, components) are never copied: the shadow holds one
float32 tensor per parameter with ``requires_grad``. Buffers (BatchNorm statistics) are not averaged;
the live model's buffers are used when the EMA weights are swapped in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["EMA"]


class EMA:
    """EMA weights: ``shadow = d * shadow + (1 - d) * param`` after each optimizer step.

    ``d = min(decay, (1 + n) / (10 + n))`` with warmup (n = number of updates), else ``decay``.

    Args:
        model: the (unwrapped) model being trained; its trainable parameters are tracked by name.
        decay: the EMA decay.
        warmup: use the warmup formula above.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow: dict[str, torch.Tensor] = {n: params[n].detach().float().clone() for n in self.names}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {n: t.to(device) for n, t in self.shadow.items()}
        return self

    def _params(self, model: torch.nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        shadow = [self.shadow[n] for n in self.names]
        params = [p.detach().float() for p in self._params(model)]
        torch._foreach_mul_(shadow, d)
        torch._foreach_add_(shadow, params, alpha=1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def restart(self, model: torch.nn.Module) -> None:
        """Start over from the live weights (``shadow = param``, update count 0, so the warmup runs
        again): for a new training phase whose weights an average with the old phase's would blur."""
        for n, p in zip(self.names, self._params(model), strict=True):
            self.shadow[n].copy_(p.detach().float())
        self.num_updates = 0

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Context in which ``model`` carries the EMA weights (restored on exit)."""
        params = self._params(model)
        backup = [p.detach().clone() for p in params]
        for p, n in zip(params, self.names, strict=True):
            p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield model
        finally:
            for p, b in zip(params, backup, strict=True):
                p.copy_(b)

    def save(self, path: str | Path) -> None:
        """Write the shadow tensors to a safetensors file (atomically)."""
        from safetensors.torch import save

        from unicxr.utils.io import atomic_write_bytes

        atomic_write_bytes(
            path, save({n: t.detach().cpu().contiguous() for n, t in self.shadow.items()})
        )

    def load(self, path: str | Path) -> None:
        """Read shadow tensors written by :meth:`save`; one-line error when they do not match."""
        from safetensors.torch import load_file

        from unicxr.utils.errors import UnicxrError

        try:
            data = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
            raise UnicxrError(f"{path}: not a readable EMA file ({str(exc).splitlines()[0]})") from None
        if set(data) != set(self.names):
            raise UnicxrError(f"{path}: EMA tensors do not match the model's trainable parameters")
        device = next(iter(self.shadow.values())).device if self.shadow else "cpu"
        self.shadow = {n: data[n].to(device=device, dtype=torch.float32) for n in self.names}
