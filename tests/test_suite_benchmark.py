"""benchmarks/suite.py (issue 17): its quick run goes end to end and prints every row of the table (figures
are not checked: they belong in benchmarks/RESULTS.md, not in pass/fail tests); its data is deterministic;
a task whose fonts are not installed stops with the packages that install them."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def suite_tasks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("suite_tasks")


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_missing_fonts_name_the_packages_to_install(suite_tasks):
    fonts = {"fonts-dejavu-core": ["DejaVuSans.ttf"], "fonts-not-a-package": ["NoSuchFont-Regular.ttf"]}
    with pytest.raises(suite_tasks.MissingFonts, match=r"apt-get install fonts-not-a-package\b") as caught:
        suite_tasks.font_files(fonts)
    assert "--tasks" in str(caught.value)  # and how to run the suite without them


def test_missing_fontconfig_names_every_package(suite_tasks, monkeypatch):
    monkeypatch.setenv("PATH", "")  # no fc-list at all
    with pytest.raises(suite_tasks.MissingFonts, match="fonts-liberation") as caught:
        suite_tasks.font_files(suite_tasks.TRAIN_FONTS)
    assert all(package in str(caught.value) for package in suite_tasks.TRAIN_FONTS)


def test_task_data_is_deterministic_and_split_as_stated(suite_tasks, tmp_path):
    for name, task in suite_tasks.TASKS.items():
        if name.startswith("glyphs"):
            continue  # needs the system fonts (the suite checks them before it starts)
        first, second = tmp_path / name / "1", tmp_path / name / "2"
        task.build(first, True)
        task.build(second, True)
        files = digest(first)
        assert files and files == digest(second), name
        splits = {Path(path).parts[0] for path in files}
        assert splits == ({"train.csv", "validation.csv"} if task.modality == "text" else {"train", "validation"})


def test_text_validation_phrasings_are_unseen_in_training(suite_tasks, tmp_path):
    train = suite_tasks.write_intents_csv(tmp_path / "train.csv", "train", per_label=10, seed=0)
    validation = suite_tasks.write_intents_csv(tmp_path / "validation.csv", "validation", per_label=20, seed=1)
    for label, (train_phrasings, validation_phrasings) in suite_tasks.INTENTS.items():
        assert not set(train_phrasings.split("|")) & set(validation_phrasings.split("|")), label
    assert len(train.read_text().splitlines()) == 1 + 10 * len(suite_tasks.INTENTS)
    assert len(validation.read_text().splitlines()) == 1 + 20 * len(suite_tasks.INTENTS)


@pytest.mark.slow  # 4-15 minutes (quiet to busy machine): every row is a process importing torch (pytest -m slow)
def test_quick_run_prints_every_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    tasks, strategies = ["digits-5shot", "intents-10shot", "dyads-10shot"], ["linear_probe", "lp_ft"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--no-write", "--out", str(tmp_path)]
    cmd += ["--tasks", *tasks, "--strategies", *strategies]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("| task | strategy | row |") :]
    number = r"\d\.\d{4}"
    expected = [(task, "all", "(d) frozen features + LogisticRegression") for task in tasks]
    for task in tasks:
        for strategy in strategies:
            expected += [(task, strategy, "(a) package, zero-config"), (task, strategy, "(b) package, hand-written lr")]
            if strategy != "lp_ft":  # LP-FT has no hand-written loop of its own
                expected.append((task, strategy, "(c) hand-written loop"))
    for task, strategy, row in expected:
        line = rf"^\| {task} \| {strategy} \| {re.escape(row)} \| [^|]+ \| {number}[^|]* \| (—|{number}) \| {number} \|"
        assert re.search(line, table, re.M), f"no row {task} / {strategy} / {row} in:\n{table}"
        if "package" in row:  # every package row is held to a hand-written one, with its wall ratio
            assert re.search(rf"^\| {task} \| {strategy} \| {re.escape(row)} \|.* \| [\d.]+x \|$", table, re.M)
            assert re.search(rf"^- {task}, {strategy}, {re.escape(row)}: (meets|\*\*misses by)", table, re.M)
    rows = json.loads((tmp_path / "suite.json").read_text())
    assert len(rows) == len(expected)
    assert all({"task", "strategy", "row", "best_accuracy", "wall_s", "command"} <= set(row) for row in rows)
