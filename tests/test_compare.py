"""`hf-transfer compare`: every strategy as a normal run, shared work done once, one table."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import failure_lines, tiny_image_overrides

from hf_transfer import load_config, train
from hf_transfer.adapters.image import ImageClassificationAdapter
from hf_transfer.cli import main
from hf_transfer.compare import compare
from hf_transfer.core.errors import ConfigError, TrainingDiverged

COMMON = {"train.epochs": 2, "lp_ft.probe_epochs": 2}


def _config(train_dir, val_dir, out, cache, **extra):
    return load_config(None, tiny_image_overrides(train_dir, val_dir, out, **{"data.cache_dir": str(cache), **extra}))


def test_compare_runs_each_strategy_once_on_shared_work(color_data, tmp_path, monkeypatch):
    train_dir, val_dir = color_data
    builds = {"n": 0}
    original = ImageClassificationAdapter.models_type.build_model

    def counting(self, labels):
        builds["n"] += 1
        return original(self, labels)

    monkeypatch.setattr(ImageClassificationAdapter.models_type, "build_model", counting)
    cache = tmp_path / "cache"
    comparison = compare(_config(train_dir, val_dir, tmp_path / "cmp", cache, **COMMON))
    assert builds["n"] == 1  # the model was built once; each run trained a copy
    rows = {r.strategy: r for r in comparison.rows}
    assert list(rows) == ["linear_probe", "lora", "full", "lp_ft"]
    for name, row in rows.items():
        assert (tmp_path / "cmp" / name / "run_info.json").is_file()
        assert all(math.isfinite(v) for v in (row.accuracy, row.f1_macro, row.wall_seconds, row.peak_memory_mb))
    params = [rows[n].trainable_parameters for n in ("linear_probe", "lora", "full")]
    assert params == sorted(params) and params[0] < params[2]
    # linear_probe and LP-FT's probe stage computed the backbone's features once between them.
    assert len(list((cache / "features").glob("*.safetensors"))) == 2
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["strategy"] for r in saved["rows"]] == list(rows)
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "| lp_ft |" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_a_compared_run_is_the_run_train_makes(color_data, tmp_path):
    """Same seed, same data: the `lora` run of a comparison ends exactly where a separate run ends."""
    train_dir, val_dir = color_data
    cache = tmp_path / "cache"
    comparison = compare(_config(train_dir, val_dir, tmp_path / "cmp", cache, **COMMON), ["full", "lora"])
    alone = train(_config(train_dir, val_dir, tmp_path / "alone", cache, **COMMON, strategy="lora"))
    row = comparison.rows[1]
    assert row.accuracy == alone.metrics["accuracy"]
    ours, theirs = (load_config(tmp_path / run / "config.yaml") for run in ("cmp/lora", "alone"))
    assert ours.strategy == theirs.strategy == "lora" and ours.train == theirs.train
    from safetensors.torch import load_file

    compared = load_file(str(tmp_path / "cmp" / "lora" / "adapter_model.safetensors"))
    separate = load_file(str(tmp_path / "alone" / "adapter_model.safetensors"))
    assert compared.keys() == separate.keys()
    assert all(torch.allclose(compared[k], separate[k], atol=1e-6) for k in compared)


def test_compare_overwrite_with_a_failing_strategy_keeps_its_old_run_and_says_so(color_data, tmp_path, monkeypatch):
    """Run again with --overwrite, `full` fails before its first checkpoint: its earlier run stays, and the
    new comparison.md lists what ran (linear_probe), that full failed and why, and what was not run."""
    train_module = importlib.import_module("hf_transfer.train")  # `hf_transfer.train` is the function
    train_dir, val_dir = color_data
    cache, out = tmp_path / "cache", tmp_path / "cmp"
    compare(_config(train_dir, val_dir, out, cache, **{"train.epochs": 1}), ["linear_probe", "full", "lora"])
    before = (out / "full" / "model.safetensors").read_bytes()

    original = train_module._fit_stage

    def failing(plan, *args, **kwargs):
        if plan.config.strategy == "full":
            raise TrainingDiverged("The training loss became NaN/inf at optimizer step 1 (epoch 0).")
        return original(plan, *args, **kwargs)

    monkeypatch.setattr(train_module, "_fit_stage", failing)
    config = _config(train_dir, val_dir, out, cache, **{"train.epochs": 1, "overwrite": True})
    with pytest.raises(TrainingDiverged, match=r"compare: strategy 'full' failed: The training loss.*comparison.md"):
        compare(config, ["linear_probe", "full", "lora"])
    assert (out / "full" / "model.safetensors").read_bytes() == before  # the old run, untouched
    assert (out / "full" / "run_info.json").is_file() and not (out / "full" / ".hf_transfer.previous").exists()
    table = (out / "comparison.md").read_text()
    assert "| linear_probe |" in table and "| full |" not in table and "| lora |" not in table
    assert "**full failed** (not in the table): The training loss became NaN/inf" in table
    assert "Not run (after the failure): lora." in table
    saved = json.loads((out / "comparison.json").read_text())
    assert [r["strategy"] for r in saved["rows"]] == ["linear_probe"]
    assert list(saved["failed"]) == ["full"] and saved["not_run"] == ["lora"]


def test_unknown_strategy_is_named_before_any_run(color_data, tmp_path):
    train_dir, val_dir = color_data
    with pytest.raises(ConfigError, match="Unknown strategy 'lorra'.*Did you mean 'lora'"):
        compare(_config(train_dir, val_dir, tmp_path / "cmp", tmp_path / "cache"), ["full", "lorra"])
    assert not (tmp_path / "cmp" / "full").exists()


def test_compare_command_prints_the_table(color_data, tmp_path, capsys):
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "cmp", **{"train.epochs": 1})
    assert main(["compare", "--strategies", "linear_probe,full", *overrides]) == 0
    out = capsys.readouterr().out
    assert "| linear_probe |" in out and "| full |" in out and "comparison.md" in out


def test_compare_under_two_processes(color_data, tmp_path):
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "cmp", **{"train.epochs": 1, "train.batch_size": 4})
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hf_transfer"]
    cmd += ["compare", "--strategies", "linear_probe,full", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, failure_lines(out.stderr)
    assert out.stdout.count("| full |") == 1  # printed once, by the main process
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["linear_probe", "full"]
