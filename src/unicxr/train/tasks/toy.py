"""Toy regression task: a seeded synthetic data set for testing the training loop end to end."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset

from unicxr.config import StrictModel
from unicxr.models.toy import ToyMLP, ToyMLPConfig
from unicxr.train.tasks import Task, register_task

__all__ = ["ToyDataConfig", "ToyRegressionDataset", "ToyRegressionTask"]


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
