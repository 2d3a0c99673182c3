"""End-to-end tests of the one training loop through `unicxr train` (toy recipe)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unicxr.train.checkpoint import list_checkpoints, load_checkpoint
from unicxr.train.sampler import StepBatchSampler, repeat_factors
from unicxr.train.schedule import lr_at

BASE = [
    "train.max_steps=60",
    "train.ckpt_every=10",
    "train.keep_last=3",
    "train.log_every=5",
    "train.warmup_steps=5",
    "train.eval_every=0",
    "train.grad_accum=2",
    "train.ema_decay=0.9",
]


def _args(run: Path, extra: list[str] = ()) -> list[str]:
    args = ["train", "toy", "--out", str(run), "--no-progress"]
    for s in [*BASE, *extra]:
        args += ["--set", s]
    return args


def _weights(run: Path, name: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(run / name / "model.safetensors"))


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"tensor {k} differs"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run, shared by the resume tests."""
    from tests.conftest import run_cli

    run = tmp_path_factory.mktemp("ref") / "run"
    run_cli(*_args(run), check=True)
    return run


def test_schedule_and_sampler_units():
    lrs = [lr_at(s, lr=1.0, max_steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] >= 0.1
    s = StepBatchSampler(100, batch_size=8, grad_accum=2, world_size=2, rank=1, seed=3, start_step=0, max_steps=30)
    s0 = StepBatchSampler(100, batch_size=8, grad_accum=2, world_size=2, rank=0, seed=3, start_step=0, max_steps=30)
    one = StepBatchSampler(100, batch_size=8, grad_accum=1, world_size=1, rank=0, seed=3, start_step=0, max_steps=30)
    for step in range(30):
        parts = [x for m in range(2) for x in s0.indices_for(step, m) + s.indices_for(step, m)]
        assert len(parts) == 8 and len(set(parts)) == 8
        assert sorted(parts) == sorted(one.indices_for(step, 0))
    # every item once per epoch (12 steps of 8 from 100 items, tail dropped)
    seen = [i for st in range(12) for i in one.indices_for(st, 0)]
    assert len(set(seen)) == 96
    resumed = StepBatchSampler(100, batch_size=8, grad_accum=1, world_size=1, rank=0, seed=3, start_step=7, max_steps=30)
    assert list(resumed)[0] == one.indices_for(7, 0)


def test_repeat_factor_sampler():
    # 10 images: finding 0 positive in 1 (f = 0.1), finding 1 in 5 (f = 0.5), finding 2 never
    labels = np.zeros((10, 3), dtype=np.float32)
    labels[0, 0] = 1.0
    labels[:5, 1] = 1.0
    labels[5, 2] = np.nan
    labels[6, 2] = -1.0
    r = repeat_factors(labels, 0.4)
    assert r[0] == pytest.approx(2.0)  # sqrt(0.4 / 0.1), its rarest finding
    assert np.all(r[1:] == 1.0)  # sqrt(0.4 / 0.5) < 1; uncertain and NaN do not count
    explicit = repeat_factors(labels, None, {1: 3.0})  # images positive for finding 1: x3, others once
    assert explicit.tolist() == [3.0] * 5 + [1.0] * 5
    both = repeat_factors(labels, 0.4, {1: 1.5})  # the larger factor of either rule
    assert both.tolist() == [2.0] + [1.5] * 4 + [1.0] * 5
    assert np.all(repeat_factors(labels, None) == 1.0)
    with pytest.raises(ValueError):
        repeat_factors(labels, None, {1: 0.5})
    kw = dict(batch_size=4, grad_accum=1, world_size=1, rank=0, seed=5, start_step=0, max_steps=60)
    plain = StepBatchSampler(10, **kw)
    ones = StepBatchSampler(10, **kw, repeat=np.ones(10))
    assert [plain.indices_for(s, 0) for s in range(60)] == [ones.indices_for(s, 0) for s in range(60)]
    rep = np.array([2.5] + [1.0] * 9)
    s1 = StepBatchSampler(10, **kw, repeat=rep)
    seen = [i for st in range(60) for i in s1.indices_for(st, 0)]
    # item 0 is drawn 2.5x as often as the others on average (12 items per epoch on average)
    others = np.mean([seen.count(i) for i in range(1, 10)])
    assert 2.0 < seen.count(0) / others < 3.0
    resumed = StepBatchSampler(10, **{**kw, "start_step": 37}, repeat=rep)
    assert list(resumed) == [s1.indices_for(s, 0) for s in range(37, 60)]  # epochs located from scratch
    a = StepBatchSampler(10, **{**kw, "world_size": 2, "rank": 0}, repeat=rep)
    b = StepBatchSampler(10, **{**kw, "world_size": 2, "rank": 1}, repeat=rep)
    for st in range(60):
        assert sorted(a.indices_for(st, 0) + b.indices_for(st, 0)) == sorted(s1.indices_for(st, 0))
    with pytest.raises(ValueError):
        StepBatchSampler(10, **kw, repeat=np.full(10, 0.5))


def test_repeat_threshold_needs_labels(tmp_path):
    from tests.conftest import run_cli

    res = run_cli(*_args(tmp_path / "r", ["train.repeat_threshold=0.3"]))
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "train.repeat_threshold" in res.stderr and "labels" in res.stderr
    res = run_cli(*_args(tmp_path / "r2", ["train.repeat_findings.Pneumothorax=2"]))
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "train.repeat_findings" in res.stderr and "labels" in res.stderr
    res = run_cli(*_args(tmp_path / "r3", ["train.repeat_findings.Pneumothoraz=2"]))
    assert res.returncode != 0 and "unknown finding 'Pneumothoraz'" in res.stderr
    assert not (tmp_path / "r3").exists() or not any((tmp_path / "r3").iterdir())


def test_train_outputs_and_loss_decreases(reference_run):
    run = reference_run
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(5, 61, 5))
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert all(r["img_per_s"] > 0 for r in log)
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps == [40, 50, 60]  # keep_last=3 rotation
    assert (run / "model" / "config.json").exists() and (run / "model_ema" / "model.safetensors").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    ema, raw = _weights(run, "model_ema"), _weights(run, "model")
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)
    from unicxr.models import load_model

    model = load_model(run / "model")
    assert model.config.in_dim == 8


def test_sigkill_resume_bit_identical(reference_run, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # slow data so the kill lands mid-run, between checkpoints
    args = _args(run, ["data.slow_ms=3"])
    proc = subprocess.Popen([sys.executable, "-m", "unicxr.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step_000020").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model").exists(), "run finished before it could be killed"
    done = [s for s, _ in list_checkpoints(run)]
    assert done and max(done) < 60
    from tests.conftest import run_cli

    out = run_cli(*args, check=True)
    assert "resuming from" in out.stdout + out.stderr
    _assert_identical(_weights(run), _weights(reference_run))
    _assert_identical(_weights(run, "model_ema"), _weights(reference_run, "model_ema"))
    # the log has each step once, as if never interrupted
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 61, 5))


def test_corrupt_newest_checkpoint(reference_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    shutil.rmtree(run / "model")  # pretend the run stopped right after its last checkpoint
    newest = run / "checkpoints" / "step_000060" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    from tests.conftest import run_cli

    out = run_cli(*_args(run))
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(newest) in lines[0] and "truncated" in lines[0]
    assert "step_000050" in lines[0]  # points to the intact previous checkpoint
    # the previous checkpoint is still loadable, and resuming from it reproduces the run
    from unicxr.models.toy import ToyMLP, ToyMLPConfig

    state = load_checkpoint(run / "checkpoints" / "step_000050", ToyMLP(ToyMLPConfig()))
    assert state["step"] == 50
    run_cli(*_args(run), "--resume-from", str(run / "checkpoints" / "step_000050"), check=True)
    _assert_identical(_weights(run), _weights(reference_run))


def test_ddp_two_processes(tmp_path):
    run = tmp_path / "ddp"
    single = tmp_path / "single"
    extra = ["train.record_indices=true", "train.max_steps=20", "train.grad_accum=1", "data.n_val=0",
             "model.dropout=0", "data.jitter=0"]  # no per-rank noise, so 2 ranks must match 1 rank
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "unicxr.cli", *_args(run, extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    d = summary["param_sha256_per_rank"]
    assert len(d) == 2 and d[0] == d[1]
    recs = {r: [json.loads(x) for x in (run / f"indices_rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    assert len(recs[0]) == len(recs[1]) == 20
    from tests.conftest import run_cli

    run_cli(*_args(single, extra), check=True)
    one = [json.loads(x) for x in (single / "indices_rank0.jsonl").read_text().splitlines()]
    for step in range(20):
        a, b = recs[0][step]["indices"], recs[1][step]["indices"]
        assert len(a) == len(b) == 16 and not set(a) & set(b)
        assert sorted(a + b) == sorted(one[step]["indices"])  # the global batch, split across ranks
    # gradient all-reduce: 2 ranks x 16 == 1 rank x 32 up to float rounding
    w2, w1 = _weights(run), _weights(single)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=2e-5, rtol=1e-4)


def test_max_minutes_stops_early_with_a_model(tmp_path):
    """train.max_minutes: a wall-clock budget ends the run at a step boundary, with a checkpoint, the
    final model and a summary that says so (for same-budget comparisons)."""
    from tests.conftest import run_cli

    run = tmp_path / "run"
    run_cli(*_args(run, ["train.max_steps=100000", "train.max_minutes=0.001", "data.slow_ms=1"]), check=True)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by_time"] is True and 1 <= summary["steps"] < 100000
    assert (run / "model" / "model.safetensors").exists()
    assert [s for s, _ in list_checkpoints(run)][-1] == summary["steps"]


def test_init_from_loads_weights_at_a_fresh_start_and_rejects_other_shapes(tmp_path, capsys):
    """``train.init_from`` (generic stage chaining): a run folder's evaluated weights (its EMA when it kept
    one, else model/) are the start of a new run (with a negligible learning rate they survive its
    steps), a new key is reported, a key with another shape is a one-line error."""
    from unicxr.cli import main

    first = tmp_path / "first"
    assert main(["train", "toy", "--out", str(first), "--no-progress", "--set", "train.max_steps=3",
                 "--set", "train.tensorboard=false"]) == 0
    second = tmp_path / "second"
    assert main(["train", "toy", "--out", str(second), "--no-progress", "--set", "train.max_steps=1",
                 "--set", "train.lr=1e-12", "--set", "train.tensorboard=false", "--set", "train.ema_decay=null",
                 "--set", f"train.init_from={first}"]) == 0
    assert (first / "model_ema").is_dir()  # the toy recipe keeps an EMA: that is what the next run starts from
    a, b, raw = _weights(first, "model_ema"), _weights(second), _weights(first)
    assert a.keys() == b.keys() and any(not torch.equal(a[k], raw[k]) for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-8, rtol=0)
    info = json.loads((second / "init_from.json").read_text())
    assert info["loaded"] == len(a) and info["missing"] == [] and info["unexpected"] == []
    assert info["source"] == str(first / "model_ema" / "model.safetensors")
    # a run without an EMA: its model/
    third = tmp_path / "third"
    assert main(["train", "toy", "--out", str(third), "--no-progress", "--set", "train.max_steps=1",
                 "--set", "train.lr=1e-12", "--set", "train.tensorboard=false", "--set", "train.ema_decay=null",
                 "--set", f"train.init_from={second}"]) == 0
    assert json.loads((third / "init_from.json").read_text())["source"] == str(second / "model" / "model.safetensors")
    capsys.readouterr()
    rc = main(["train", "toy", "--out", str(tmp_path / "bad"), "--no-progress", "--set", "train.max_steps=1",
               "--set", "model.hidden=16", "--set", f"train.init_from={first}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "shapes differ" in err[0]
    rc = main(["train", "toy", "--out", str(tmp_path / "bad2"), "--no-progress", "--set", "train.max_steps=1",
               "--set", f"train.init_from={tmp_path / 'nowhere'}"])
    assert rc == 2 and "train.init_from" in capsys.readouterr().err


def test_snapshot_minutes_save_the_weights_at_a_wall_clock_mark(tmp_path):
    """train.snapshot_minutes: the model (and EMA) as they were at the first step past each mark, in a
    run-like folder with its step; a mark the run never reaches writes nothing."""
    from tests.conftest import run_cli

    run = tmp_path / "run"
    run_cli(*_args(run, ["train.max_steps=6", "train.ckpt_every=1", "train.keep_last=10",
                         "train.snapshot_minutes=[0.0,1000.0]"]), check=True)
    snap = run / "snapshots" / "min0"
    rec = json.loads((snap / "snapshot.json").read_text())
    assert rec["step"] == 1 and rec["minutes"] == 0.0 and rec["seconds"] >= 0.0
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["min0"]
    first, final = _weights(snap), _weights(run)
    assert first.keys() == final.keys() and any(not torch.equal(first[k], final[k]) for k in first)
    assert (snap / "model_ema" / "model.safetensors").exists()
    # the snapshot is step 1: the same weights as the step-1 checkpoint
    _assert_identical(first, load_file(str(run / "checkpoints" / "step_000001" / "model.safetensors")))


def test_a_nan_gradient_with_a_finite_loss_stops_with_one_line(tmp_path, capsys):
    """A loss term whose gradient is undefined (``sqrt`` at 0) leaves the loss finite but would write nan
    into every weight: the trainer stops at that step with a one-line error instead of training on."""
    import yaml

    from unicxr.cli import main
    from unicxr.train.tasks import register_task
    from unicxr.train.tasks.toy import ToyRegressionTask

    @register_task("toy_nan_grad")
    class _NanGrad(ToyRegressionTask):
        def loss(self, model, batch):
            loss, extra = super().loss(model, batch)
            pred = model(batch["x"])
            return loss + 0.0 * (pred - pred.detach()).abs().sqrt().sum(), extra

    from importlib import resources

    raw = yaml.safe_load((resources.files("unicxr.train") / "recipes" / "toy.yaml").read_text())
    raw["task"] = "toy_nan_grad"
    recipe = tmp_path / "nan_grad.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    rc = main(["train", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
               "--set", "train.max_steps=3", "--set", "train.tensorboard=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "gradient norm (main) is nan at step 0" in err[0]
    assert not (tmp_path / "run" / "model").exists()
