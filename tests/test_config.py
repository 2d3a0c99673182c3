from __future__ import annotations

import math

import pytest

from unicxr.config import apply_overrides, load_yaml, parse_override
from unicxr.train.config import load_recipe, shipped_recipes
from unicxr.utils.errors import UnicxrError


def test_overrides_typed():
    keys, v = parse_override("train.lr=1e-3")
    assert keys == ["train", "lr"] and v == pytest.approx(1e-3)
    assert math.isnan(parse_override("train.lr=nan")[1])
    data = apply_overrides({"train": {"lr": 1}}, ["train.lr=2", "model.hidden=4", "train.betas=[0.8, 0.9]"])
    assert data == {"train": {"lr": 2, "betas": [0.8, 0.9]}, "model": {"hidden": 4}}
    with pytest.raises(UnicxrError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_shipped_recipe_loads():
    assert "toy" in shipped_recipes()
    r = load_recipe("toy", ["train.max_steps=30"])
    assert r.recipe.train.max_steps == 30 and r.model_cfg.in_dim == 8


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("train.lrr=1", r"train\.lrr: unknown key"),
        ("train.batch_size=abc", r"train\.batch_size: .*integer"),
        ("train.lr=nan", r"train\.lr: .*finite"),
        ("train.lr=-0.1", r"train\.lr: .*greater than 0"),
        ("model.hiddn=4", r"model\.hiddn: unknown key"),
        ("data.n_train=0", r"data\.n_train: .*greater than 0"),
        ("task=nope", r"unknown task 'nope'"),
    ],
)
def test_recipe_errors_are_one_line(override, pattern):
    with pytest.raises(UnicxrError, match=pattern) as info:
        load_recipe("toy", [override])
    assert "\n" not in str(info.value)


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: toy_regression\ntrain: [1, 2\n")
    with pytest.raises(UnicxrError, match=r"bad\.yaml: invalid YAML at line"):
        load_yaml(bad)
    with pytest.raises(UnicxrError, match="file not found"):
        load_yaml(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UnicxrError, match="mapping"):
        load_yaml(lst)


@pytest.mark.parametrize(
    "override,needle",
    [("train.lrr=1", "train.lrr: unknown key"), ("train.max_steps=ten", "train.max_steps"),
     ("train.lr=nan", "train.lr")],
)
def test_cli_config_errors(cli, tmp_path, override, needle):
    out = cli("train", "toy", "--out", tmp_path / "run", "--set", override)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in out.stderr
