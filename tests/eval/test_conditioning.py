"""The condition-use check: paired losses with true, shuffled and null conditions."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from unicxr.eval.conditioning import _derangement, condition_use, render_conditioning


class _Stub(torch.nn.Module):
    """A 'generator' whose loss is (mean image - label 0 + noise)^2, or ignores the label (uses=False);
    the null condition predicts 0.5."""

    def __init__(self, uses: bool) -> None:
        super().__init__()
        self.uses = uses
        self._null = False

    def to_latent(self, x):
        return x

    def condition_batch(self, labels, reports):
        return {"labels": torch.as_tensor(np.asarray(labels, np.float32))}

    @contextmanager
    def forced_drop(self, null):
        self._null = null
        try:
            yield
        finally:
            self._null = False

    def forward(self, z0, cond):
        noise = 0.1 * torch.randn(z0.shape[0])
        pred = torch.full((z0.shape[0],), 0.5) if (self._null or not self.uses) else cond["labels"][:, 0]
        loss = (z0.flatten(1).mean(1) - pred + noise).pow(2).mean()
        return loss, {"mse": float(loss)}


def _data(n=48):
    rng = np.random.default_rng(0)
    lab = np.zeros((n, 14), np.float32)
    lab[:, 0] = rng.integers(0, 2, n)
    images = torch.from_numpy(lab[:, 0]).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return images, lab, [f"report {i}" for i in range(n)]


def test_derangement_moves_every_item():
    for n in (2, 3, 10, 97):
        p = _derangement(n, seed=n)
        assert sorted(p.tolist()) == list(range(n)) and not np.any(p == np.arange(n))


def test_a_model_that_uses_its_condition_has_a_positive_gap():
    images, lab, reports = _data()
    res = condition_use(_Stub(uses=True), images, lab, reports, batch_size=8, repeats=2, seed=1)
    assert res["n_units"] == 12 and res["loss"]["true"] < res["loss"]["shuffled"]
    assert res["gap_shuffled"]["ci"][0] > 0 and res["gap_null"]["ci"][0] > 0
    assert "uses it" in render_conditioning(res)
    again = condition_use(_Stub(uses=True), images, lab, reports, batch_size=8, repeats=2, seed=1)
    assert again == res  # seeded


def test_a_model_that_ignores_its_condition_has_exactly_no_gap():
    """Same noise for every variant (paired): an ignored condition gives identical losses, not noise."""
    images, lab, reports = _data()
    res = condition_use(_Stub(uses=False), images, lab, reports, batch_size=8, repeats=2)
    assert res["gap_shuffled"]["mean"] == 0.0 and res["loss"]["true"] == res["loss"]["shuffled"]
    assert "ignored" in render_conditioning(res)


def test_needs_two_items():
    images, lab, reports = _data(1)
    with pytest.raises(ValueError, match="at least 2"):
        condition_use(_Stub(uses=True), images, lab, reports)
