from __future__ import annotations

import pytest
import torch

from unicxr.models.toy import ToyMLP, ToyMLPConfig
from unicxr.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from unicxr.utils.errors import UnicxrError


def _saved(tmp_path, step=3):
    torch.manual_seed(0)
    model = ToyMLP(ToyMLPConfig(in_dim=4, hidden=8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt, save_checkpoint(tmp_path, step, model, opt, extra={"ema_updates": 0})


def test_round_trip_and_rotation(tmp_path):
    model, opt, path = _saved(tmp_path)
    m2 = ToyMLP(ToyMLPConfig(in_dim=4, hidden=8))
    o2 = torch.optim.AdamW(m2.parameters(), lr=1e-2)
    assert load_checkpoint(path, m2, o2)["step"] == 3
    for a, b in zip(model.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], o2.state_dict()["state"][0]["exp_avg"])
    for s in (4, 5, 6):
        save_checkpoint(tmp_path, s, model, opt)
    rotate_checkpoints(tmp_path, 2)
    assert latest_checkpoint(tmp_path).name == "step_000006"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000005", "step_000006"]


@pytest.mark.parametrize(
    "damage,pattern",
    [
        (lambda p: (p / "state.json").write_text("{oops"), r"state\.json: unreadable or corrupt"),
        (lambda p: (p / "state.json").unlink(), r"state\.json: missing"),
        (lambda p: (p / "optimizer.pt").unlink(), r"optimizer\.pt: missing"),
        (lambda p: (p / "optimizer.pt").write_bytes((p / "optimizer.pt").read_bytes()[::-1]), r"optimizer\.pt: corrupt"),
    ],
)
def test_damage_is_named(tmp_path, damage, pattern):
    _, _, path = _saved(tmp_path)
    damage(path)
    with pytest.raises(UnicxrError, match=pattern):
        verify_checkpoint(path)
