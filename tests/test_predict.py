"""`load_run(...).predict`, `hf-transfer predict` and `hf-transfer evaluate` reuse the run's own eval
preprocessing, so their results equal the run's evaluation."""

from __future__ import annotations

import json
import logging
import shutil

import artifact_runs as R
import pytest

from hf_transfer.cli import main
from hf_transfer.inference import load_run


@pytest.mark.parametrize("name", ["timm_full", "vit_lora"])
def test_load_run_predicts_what_evaluation_scored(tmp_path_factory, name):
    result = getattr(R, name)(tmp_path_factory)
    files = R.validation_files()
    run = load_run(result.output_dir, device="cpu")
    predictions = run.predict([str(f) for f in files], top_k=3)
    assert len(predictions) == 12 and all(len(p) == 3 for p in predictions)
    for ranked in predictions:
        scores = [p["score"] for p in ranked]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert {p["label"] for p in ranked} == set(result.labels)
    truth = [f.parent.name for f in files]
    accuracy = sum(p[0]["label"] == t for p, t in zip(predictions, truth, strict=True)) / len(truth)
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_predict_cli(tmp_path_factory, capsys):
    result = R.timm_full(tmp_path_factory)
    files = [str(f) for f in R.validation_files()[:3]]
    assert main(["predict", str(result.output_dir), *files, "--top-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = load_run(result.output_dir, device="cpu").predict(files, top_k=2)
    assert [p["input"] for p in printed] == files
    assert [[q["label"] for q in p["predictions"]] for p in printed] == [[q["label"] for q in e] for e in expected]
    assert main(["predict", str(result.output_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.split("\t")[1].split()[0] in result.labels for line in lines)


def test_predict_cli_missing_file(tmp_path_factory, capsys):
    result = R.timm_full(tmp_path_factory)
    assert main(["predict", str(result.output_dir), "/no/such/image.png"]) == 2
    assert "not found: /no/such/image.png" in capsys.readouterr().err


def test_evaluate_cli_writes_report(tmp_path_factory, capsys):
    result = R.vit_lora(tmp_path_factory)
    _, val_dir = R.image_data(tmp_path_factory)
    assert main(["evaluate", str(result.output_dir), "--data", str(val_dir), "--name", "heldout"]) == 0
    assert "-> " in capsys.readouterr().out
    report = json.loads((result.output_dir / "eval" / "heldout.json").read_text())
    assert report["metrics"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert report["metrics"]["loss"] == pytest.approx(result.metrics["loss"], rel=1e-4)
    assert set(report["per_class"]) == set(result.labels)
    assert sum(r["support"] for r in report["per_class"].values()) == 12
    assert sum(map(sum, report["confusion_matrix"])) == 12


def test_evaluate_rejects_unknown_labels(tmp_path_factory, tmp_path, capsys):
    result = R.timm_full(tmp_path_factory)
    _, val_dir = R.image_data(tmp_path_factory)
    data = shutil.copytree(val_dir, tmp_path / "new")
    (data / "purple").mkdir()
    shutil.copy(next((data / "red").glob("*.png")), data / "purple" / "x.png")
    assert main(["evaluate", str(result.output_dir), "--data", str(data)]) == 2
    assert "'purple', which is not in the training labels" in capsys.readouterr().err


def test_load_run_on_a_non_run(tmp_path):
    from hf_transfer.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not a finished hf-transfer run"):
        load_run(tmp_path)


class _Reports(logging.Handler):
    """transformers' load reports as they reach its loader's logger (its own handler writes to the stderr of
    the time it was imported, which pytest's capture fixtures do not see)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "LOAD REPORT" in record.getMessage():
            self.messages.append(record.getMessage())

    def __enter__(self) -> _Reports:
        logging.getLogger("transformers.modeling_utils").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("transformers.modeling_utils").removeHandler(self)


def test_loading_a_lora_run_prints_no_report_of_the_head_it_restores(tmp_path_factory):
    """The base is built with a new head, which the adapter then restores: transformers' LOAD REPORT of
    those head weights says nothing the user must act on, so it is not printed."""
    result = R.vit_lora(tmp_path_factory)
    with _Reports() as reports:
        load_run(result.output_dir, device="cpu")
    assert reports.messages == []


def test_a_checkpoint_missing_backbone_weights_is_still_reported(tmp_path):
    """Only the head's report is expected: a checkpoint that lacks a backbone weight is still reported."""
    from conftest import write_tiny_vit
    from safetensors.torch import load_file, save_file

    from hf_transfer import ADAPTERS, load_config

    write_tiny_vit(tmp_path / "vit")
    weights = load_file(str(tmp_path / "vit" / "model.safetensors"))
    missing = next(key for key in weights if "encoder.layer.0" in key)
    save_file({k: v for k, v in weights.items() if k != missing}, str(tmp_path / "vit" / "model.safetensors"))
    config = load_config(None, [f"model={tmp_path / 'vit'}", "task=image-classification"])
    with _Reports() as reports:
        ADAPTERS.get("image-classification")(config).models.build_model(["a", "b", "c"])
    assert (
        len(reports.messages) == 1 and "MISSING" in reports.messages[0] and "classifier.weight" in reports.messages[0]
    )
