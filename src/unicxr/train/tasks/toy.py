"""Toy regression task: a seeded synthetic data set for testing the training loop end to end."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.models.toy import ToyMLP, ToyMLPConfig
from unicxr.train.tasks import OptimizerSpec, Task, register_task

__all__ = ["ToyDataConfig", "ToyRegressionDataset", "ToyRegressionTask", "ToyAdversarialTask"]


class ToyDataConfig(StrictModel):
    """Synthetic data: y = sin(x·w) + noise with x ~ N(0, I)."""

    n_train: int = Field(256, gt=0)
    n_val: int = Field(64, ge=0)
    noise: float = Field(0.05, ge=0.0)
    jitter: float = Field(0.01, ge=0.0, description="std of seeded input noise added per batch")
    slow_ms: float = Field(0.0, ge=0.0, description="sleep per item (to make kill tests reliable)")


class ToyRegressionDataset(Dataset):
    """Items: ``{"x": (in_dim,), "y": (1,), "index": ()}``."""

    def __init__(self, n: int, in_dim: int, noise: float, seed: int, slow_ms: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, in_dim, generator=g)
        w = torch.randn(in_dim, 1, generator=torch.Generator().manual_seed(12345)) / in_dim**0.5
        self.y = torch.sin(self.x @ w) + noise * torch.randn(n, 1, generator=g)
        self.slow_ms = slow_ms

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.slow_ms:
            import time

            time.sleep(self.slow_ms / 1000.0)
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


@register_task("toy_regression")
class ToyRegressionTask(Task):
    """MSE regression with :class:`unicxr.models.toy.ToyMLP`."""

    ModelConfig = ToyMLPConfig
    DataConfig = ToyDataConfig

    def build_model(self) -> ToyMLP:
        return ToyMLP(self.model_cfg)

    def build_datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        cfg = self.data_cfg
        dim = self.model_cfg.in_dim
        train = ToyRegressionDataset(cfg.n_train, dim, cfg.noise, seed=1000 + seed, slow_ms=cfg.slow_ms)
        val = ToyRegressionDataset(cfg.n_val, dim, cfg.noise, seed=2000 + seed) if cfg.n_val else None
        return train, val

    def augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        # Tiny input jitter: exercises the seeded augmentation path.
        batch = dict(batch)
        batch["x"] = batch["x"] + self.data_cfg.jitter * torch.randn(batch["x"].shape, generator=generator)
        return batch

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        pred = model(batch["x"])
        loss = torch.nn.functional.mse_loss(pred.float(), batch["y"].float())
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        xs = torch.stack([dataset[i]["x"] for i in range(len(dataset))])
        ys = torch.stack([dataset[i]["y"] for i in range(len(dataset))])
        return {"val_mse": float(torch.nn.functional.mse_loss(model(xs), ys))}


class ToyAdversarialDataConfig(ToyDataConfig):
    """Toy data plus the adversarial schedule."""

    disc_start: int = Field(10, ge=0, description="step at which the discriminator and its loss start")
    adv_weight: float = Field(0.1, ge=0.0, description="weight of the generator's adversarial term")
    disc_hidden: int = Field(16, gt=0)
    disc_lr_scale: float = Field(0.5, gt=0.0)


@register_task("toy_adversarial")
class ToyAdversarialTask(ToyRegressionTask):
    """Two optimizers, as an autoencoder with a patch discriminator: the regressor (``main``) minimises
    MSE + ``adv_weight`` × a non-saturating adversarial term once the discriminator has started; the
    discriminator (``disc``, an auxiliary module) tells real (x, y) pairs from (x, ŷ). Exercises the
    trainer's several-optimizer path, delayed start, the shared per-micro-batch ``ctx`` and resume."""

    DataConfig = ToyAdversarialDataConfig

    def build_modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        d = self.model_cfg.in_dim + self.model_cfg.out_dim
        h = self.data_cfg.disc_hidden
        return {"disc": torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.LeakyReLU(0.2), torch.nn.Linear(h, 1))}

    def configure_optimizers(self, modules: dict[str, torch.nn.Module], cfg: Any) -> list[OptimizerSpec]:
        return [
            OptimizerSpec("main", list(modules["model"].parameters())),
            OptimizerSpec(
                "disc",
                list(modules["disc"].parameters()),
                lr_scale=self.data_cfg.disc_lr_scale,
                betas=(0.5, 0.9),
                start_step=self.data_cfg.disc_start,
            ),
        ]

    def training_loss(
        self, optimizer: str, modules: dict[str, torch.nn.Module], batch: dict[str, Any], ctx: dict[str, Any], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        x, y = batch["x"], batch["y"].float()
        if optimizer == "main":
            pred = modules["model"](x)
            ctx["pred"] = pred.detach()
            loss = torch.nn.functional.mse_loss(pred.float(), y)
            extras = {"mse": float(loss.detach())}
            if step >= self.data_cfg.disc_start:
                logits = modules["disc"](torch.cat([x, pred], 1))
                adv = bce(logits, torch.ones_like(logits))
                loss = loss + self.data_cfg.adv_weight * adv
                extras["adv"] = float(adv.detach())
            return loss, extras
        real = modules["disc"](torch.cat([torch.cat([x, y], 1), torch.cat([x, ctx["pred"]], 1)], 0))
        target = torch.cat([torch.ones(len(x), 1), torch.zeros(len(x), 1)]).to(real)
        return bce(real, target), {}
