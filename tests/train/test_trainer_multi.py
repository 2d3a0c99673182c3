"""The trainer's several-optimizer path (a regressor + a discriminator with a delayed start), media
hook and trainable-only EMA: exact resume after SIGKILL and 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import assert_same_optimizer_states, run_cli
from unicxr.train.checkpoint import list_checkpoints

BASE = [
    "train.max_steps=40",
    "train.ckpt_every=10",
    "train.keep_last=5",
    "train.log_every=5",
    "train.warmup_steps=5",
    "train.eval_every=0",
    "train.grad_accum=2",
    "train.ema_decay=0.9",
    "data.disc_start=12",
    "data.adv_weight=0.2",
]


def _args(run: Path, extra: list[str] = ()) -> list[str]:
    args = ["train", "toy_adversarial", "--out", str(run), "--no-progress"]
    for s in [*BASE, *extra]:
        args += ["--set", s]
    return args


def _ckpt(run: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = run / "checkpoints" / f"step_{step:06d}"
    return {f.name: load_file(str(f)) for f in folder.glob("*.safetensors")}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("adv") / "run"
    run_cli(*_args(run), check=True)
    return run


def test_two_optimizers_train_and_delayed_start(reference_run):
    log = [json.loads(x) for x in (reference_run / "log.jsonl").read_text().splitlines()]
    before = [r for r in log if r["step"] <= 12]
    after = [r for r in log if r["step"] > 15]
    assert before and all("loss_disc" not in r and "adv" not in r for r in before)
    assert after and all("loss_disc" in r and "grad_norm_disc" in r and "adv" in r for r in after)
    assert log[-1]["mse"] < log[0]["loss"]
    files = {p.name for p in (reference_run / "checkpoints" / "step_000040").iterdir()}
    assert {"model.safetensors", "disc.safetensors", "ema.safetensors", "optimizer.pt"} <= files
    # the discriminator is checkpointed but is not part of the saved model
    assert set(load_file(str(reference_run / "model" / "model.safetensors"))) == set(
        load_file(str(reference_run / "checkpoints" / "step_000040" / "model.safetensors"))
    )
    opt = torch.load(reference_run / "checkpoints" / "step_000040" / "optimizer.pt", weights_only=True)
    assert set(opt["optimizers"]) == {"main", "disc"}
    # the discriminator changed only after its start step
    d10, d20 = _ckpt(reference_run, 10)["disc.safetensors"], _ckpt(reference_run, 20)["disc.safetensors"]
    assert any(not torch.equal(d10[k], d20[k]) for k in d10)


def test_two_optimizers_sigkill_resume_bit_identical(reference_run, tmp_path):
    run = tmp_path / "run"
    args = _args(run, ["data.slow_ms=3"])
    proc = subprocess.Popen([sys.executable, "-m", "unicxr.cli", *args], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step_000020").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model").exists(), "run finished before it could be killed"
    assert max(s for s, _ in list_checkpoints(run)) < 40
    out = run_cli(*args, check=True)
    assert "resuming from" in out.stdout + out.stderr
    for name in ("model.safetensors", "disc.safetensors", "ema.safetensors"):
        _same(_ckpt(run, 40)[name], _ckpt(reference_run, 40)[name])
    _same(load_file(str(run / "model_ema" / "model.safetensors")),
          load_file(str(reference_run / "model_ema" / "model.safetensors")))
    assert_same_optimizer_states(run / "checkpoints" / "step_000040" / "optimizer.pt",
                                 reference_run / "checkpoints" / "step_000040" / "optimizer.pt", ("main", "disc"))  # fmt: skip


def test_two_optimizers_ddp_two_processes(tmp_path):
    run, single = tmp_path / "ddp", tmp_path / "single"
    extra = ["train.max_steps=20", "train.grad_accum=1", "data.n_val=0", "model.dropout=0", "data.jitter=0",
             "data.disc_start=5"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29523",
           "-m", "unicxr.cli", *_args(run, extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    d = summary["param_sha256_per_rank"]
    assert len(d) == 2 and d[0] == d[1]
    run_cli(*_args(single, extra), check=True)
    for name in ("model.safetensors", "disc.safetensors"):
        w2, w1 = _ckpt(run, 20)[name], _ckpt(single, 20)[name]
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], atol=5e-5, rtol=1e-4)
