"""Shared test helpers: run the CLI in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None, check: bool = False):
    """Run ``python -m unicxr.cli ARGS`` in a subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "unicxr.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"unicxr {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_phantom_cache(tmp_path_factory) -> Path:
    """A 60-image 32 px phantom cache (all three splits), shared by the tests of a session."""
    root = tmp_path_factory.mktemp("tiny_phantom")
    run_cli("phantom", "--n", "60", "--size", "32", "--seed", "5", "--out", root / "ph", "--workers", "1", check=True)
    run_cli("prepare", "--format", "phantom", "--root", root / "ph", "--out", root / "cache", "--size", "32",
            "--workers", "0", check=True)
    return root / "cache"


def assert_same_optimizer_states(a_path: Path, b_path: Path, names: tuple[str, ...]) -> None:
    """Every state tensor of the named optimizers in two checkpoint ``optimizer.pt`` files is equal."""
    import torch

    a = torch.load(a_path, weights_only=True)["optimizers"]
    b = torch.load(b_path, weights_only=True)["optimizers"]
    for name in names:
        for k, st in a[name]["state"].items():
            for key, t in st.items():
                assert torch.equal(t, b[name]["state"][k][key]), (name, k, key)
