"""Every run's output opens in the standard loaders (timm, transformers, peft) and reproduces our
predictions; the model card is in the Hub's format with its two pictures; writes are atomic."""

from __future__ import annotations

import json
import re
import textwrap
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import artifact_runs as R
import pytest
import timm
import tomllib
import torch
from conftest import tiny_image_overrides
from huggingface_hub import ModelCard
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from hf_transfer import load_config, train
from hf_transfer.adapters.usage import BASE_PLACEHOLDER, LOCAL_FOLDER
from hf_transfer.artifacts import card as card_module
from hf_transfer.artifacts.model import save_model_artifact
from hf_transfer.artifacts.plots import plot_curves
from hf_transfer.inference import load_run


def _pixels(result, files: list[Path]) -> torch.Tensor:
    adapter = result.adapter
    batch = adapter.inputs.model_inputs({adapter.inputs.input_column: [str(f) for f in files]})
    return adapter.models.backend.normalise(batch["pixel_values"])


def _our_top1(output_dir: Path, files: list[Path]) -> list[str]:
    return [p[0]["label"] for p in load_run(output_dir, device="cpu").predict([str(f) for f in files])]


def _pipeline_top1(model_dir: Path, files: list[Path]) -> list[str]:
    classify = pipeline("image-classification", model=str(model_dir), device="cpu")
    return [r[0]["label"] for r in classify([Image.open(f).convert("RGB") for f in files], top_k=1)]


def test_timm_full_opens_in_timm_and_transformers(tmp_path_factory):
    result = R.timm_full(tmp_path_factory)
    out, files = result.output_dir, R.validation_files()
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "test_vit" and config["num_classes"] == 3
    assert config["label_names"] == result.labels and "num_classes" not in config.get("model_args", {})
    pixels = _pixels(result, files)
    with torch.no_grad():
        ours = result.model.eval()(pixels)
        by_timm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(pixels)
        by_transformers = AutoModelForImageClassification.from_pretrained(out).eval()(pixel_values=pixels).logits
    assert torch.allclose(by_timm, ours, atol=1e-5)
    assert torch.allclose(by_transformers, ours, atol=1e-5)
    top1 = _pipeline_top1(out, files)
    assert set(top1) <= set(result.labels)  # our label names, not LABEL_0...
    assert top1 == _our_top1(out, files) and len(top1) == 12


def test_transformers_full_opens_in_pipeline(tmp_path_factory):
    result = R.vit_full(tmp_path_factory)
    out, files = result.output_dir, R.validation_files()
    assert (out / "preprocessor_config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(result.labels)}
    top1 = _pipeline_top1(out, files)
    assert top1 == _our_top1(out, files) and len(top1) == 12
    # ... and our top-1 is what the run's evaluation scored.
    truth = [f.parent.name for f in files]
    accuracy = sum(a == b for a, b in zip(top1, truth, strict=True)) / len(truth)
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_transformers_lora_adapter_folder_and_merged(tmp_path_factory):
    result = R.vit_lora(tmp_path_factory)
    out, files = result.output_dir, R.validation_files()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    base_path = R.tiny_vit_folder(tmp_path_factory)
    # A local base by its folder's name: no path of the training machine in a file meant to be published.
    assert adapter_config["base_model_name_or_path"] == base_path.name
    assert (out / "adapter_model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    assert not (out / "config.json").exists()  # transformers would take the folder for a full model
    id2label = dict(enumerate(result.labels))
    base = AutoModelForImageClassification.from_pretrained(
        base_path, num_labels=3, id2label=id2label, ignore_mismatched_sizes=True
    )
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    pixels = _pixels(result, files)
    with torch.no_grad():
        ours = result.model.eval()(pixel_values=pixels).logits
        assert torch.allclose(reloaded(pixel_values=pixels).logits, ours, atol=1e-5)
    # merged/: a plain transformers folder; the pipeline agrees with our predictions.
    assert not (out / "merged" / "adapter_config.json").exists()
    top1 = _pipeline_top1(out / "merged", files)
    assert top1 == [result.labels[i] for i in ours.argmax(-1).tolist()]
    assert top1 == _our_top1(out, files) and len(top1) == 12


def test_timm_lora_adapter_and_merged(tmp_path_factory):
    result = R.timm_lora(tmp_path_factory)
    out, files = result.output_dir, R.validation_files()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "test_vit"
    # pretrained: false here, so the base is the seeded random init (a Hub name would load its weights).
    torch.manual_seed(result.adapter.config.train.seed)
    base = timm.create_model("test_vit", pretrained=False, num_classes=3)
    pixels = _pixels(result, files)
    with torch.no_grad():
        ours = result.model.eval()(pixels)
        assert torch.allclose(PeftModel.from_pretrained(base, str(out)).eval()(pixels), ours, atol=1e-4)
        merged = timm.create_model(f"local-dir:{out / 'merged'}", pretrained=True).eval()
        assert torch.allclose(merged(pixels), ours, atol=1e-4)
    assert _pipeline_top1(out / "merged", files) == [result.labels[i] for i in ours.argmax(-1).tolist()]


def test_weights_are_safetensors_only(tmp_path_factory):
    for result in (R.timm_full(tmp_path_factory), R.vit_lora(tmp_path_factory)):
        out = result.output_dir
        files = [p for p in out.rglob("*") if p.is_file() and "checkpoints" not in p.parts]
        assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".tmp")]
        # No staging leftovers; the run's lock file stays (removing it would race a run starting now).
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".hf_transfer.lock"]


def test_crash_while_saving_leaves_no_partial_model(tmp_path_factory, tmp_path):
    result = R.timm_full(tmp_path_factory)

    class Crash(RuntimeError):
        pass

    def half_write(model, directory, labels):
        (directory / "model.safetensors").write_bytes(b"half")
        raise Crash

    adapter = result.adapter
    adapter.models.save_model, original = half_write, adapter.models.save_model
    try:
        with pytest.raises(Crash):
            save_model_artifact(result.model, adapter.models, result.labels, tmp_path / "out")
    finally:
        adapter.models.save_model = original
    assert list((tmp_path / "out").iterdir()) == []


def test_model_card(tmp_path_factory):
    result = R.timm_full(tmp_path_factory)
    out = result.output_dir
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-classification"
    assert {"full", "hf-transfer", "image-classification"} <= set(data["tags"])
    assert "base_model" not in data  # randomly initialised from a timm name: no Hub weights to name
    assert data["license"] == "unknown"  # hub.license unset: a fine-tune inherits terms we cannot read
    assert "datasets" not in data  # local folders are not Hub dataset ids
    results = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert results["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-4)
    assert results["f1"] == pytest.approx(result.metrics["f1_macro"], abs=1e-4)
    text = card.text
    for picture in ("training_curves.png", "confusion_matrix.png"):
        assert f"]({picture})" in text and (out / picture).read_bytes()[:4] == b"\x89PNG"
    trainable, total = result.metrics["trainable_parameters"], result.metrics["total_parameters"]
    assert f"{trainable:,} of {total:,} parameters" in text
    assert "strategy: full" in text and "| accuracy |" in text
    assert str(out.parent) not in card.content and "/tmp" not in card.content  # no local path
    assert "Training augmentation:** random resized crop" in text and "peak learning rate" in text


def test_card_names_hub_base_model_and_lora(tmp_path_factory):
    card = ModelCard.load(R.vit_lora(tmp_path_factory).output_dir / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert "PeftModel.from_pretrained" in card.text and "merged/" in card.text
    assert "in the transformers format" in card.text  # merged/: the base's own library


def _card_code(card_text: str) -> str:
    return re.search(r"```python\n(.*?)\n```", card_text.split("## How to use", 1)[1], re.S).group(1)


def test_timm_card_snippet_classifies_with_the_models_own_preprocessing(tmp_path_factory, capsys):
    """The card's timm code, run as printed (the folder and image filled in), preprocesses with timm's data
    config and gives our logits and our label."""
    result = R.timm_full(tmp_path_factory)
    out, image = result.output_dir, R.validation_files()[0]
    code = _card_code(ModelCard.load(out / "README.md").text)
    assert "timm.data.resolve_model_data_config(model)" in code and "timm.data.create_transform(" in code
    namespace: dict = {}
    capsys.readouterr()
    with torch.no_grad():
        exec(code.replace(LOCAL_FOLDER, str(out)).replace("image.jpg", str(image)), namespace)
        ours = result.model.eval()(_pixels(result, [image]))
    assert torch.allclose(namespace["logits"], ours, atol=1e-5)
    assert capsys.readouterr().out.strip() == _our_top1(out, [image])[0]


def test_lora_card_snippet_for_a_local_base_runs_once_filled_in(tmp_path_factory):
    """The base was a local folder: the snippet says what to replace, never names that folder bare, and
    once the two placeholders are filled in it gives our model."""
    result = R.vit_lora(tmp_path_factory)
    out, base = result.output_dir, R.tiny_vit_folder(tmp_path_factory)
    code = _card_code(ModelCard.load(out / "README.md").text)
    assert base.name not in code and f'"{BASE_PLACEHOLDER}"' in code and f"replace {BASE_PLACEHOLDER}" in code
    namespace: dict = {}
    exec(code.replace(BASE_PLACEHOLDER, str(base)).replace(LOCAL_FOLDER, str(out)), namespace)
    pixels = _pixels(result, R.validation_files())
    with torch.no_grad():
        ours = result.model.eval()(pixel_values=pixels).logits
        assert torch.allclose(namespace["model"].eval()(pixel_values=pixels).logits, ours, atol=1e-5)


def test_card_body_comes_from_the_packaged_template(tmp_path_factory):
    template = resources.files("hf_transfer").joinpath("templates", "model_card.md")
    assert template.is_file()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["hf_transfer"]
    assert any(fnmatch("templates/model_card.md", pattern) for pattern in shipped)  # in the wheel too
    out = R.timm_full(tmp_path_factory).output_dir
    card = (out / "README.md").read_text()
    sections = [line for line in template.read_text().splitlines() if line.startswith("## ")]
    assert len(sections) >= 3 and f"\n# {out.name}\n" in card
    for line in sections:
        assert f"\n{line}\n" in card, line
    assert "{{" not in card and "{%" not in card  # everything rendered


def test_card_without_trackers_has_training_loss_and_extra_metrics(tmp_path_factory, tmp_path, monkeypatch):
    """train.log_with=[]: the card's training-loss curve comes from the run itself; and an `evaluate`
    module named in train.extra_metrics (a local folder here) is reported beside accuracy."""
    drawn: dict = {}

    def record(history, train_loss, path):
        drawn["train_loss"] = train_loss
        plot_curves(history, train_loss, path)

    monkeypatch.setattr(card_module, "plot_curves", record)
    metric = write_balanced_error_module(tmp_path / "balanced_error")
    train_dir, val_dir = R.image_data(tmp_path_factory)
    extra = {"train.epochs": 2, "train.logging_steps": 1, "train.log_with": "[]", "train.extra_metrics": f"[{metric}]"}
    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "run", model="test_vit", **extra)
    result = train(load_config(None, overrides))
    out = result.output_dir
    assert not (out / "logs").exists()  # no tracker wrote anything
    assert [step for step, _ in drawn["train_loss"]] == list(range(1, result.metrics["global_step"] + 1))
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"

    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and all("balanced_error" in h for h in metrics["history"])
    # Checked against the best model's per-class recall (scikit-learn, in the validation report).
    report = json.loads((out / "eval" / "best_model_validation.json").read_text())
    recalls = [r["recall"] for r in report["per_class"].values()]
    assert metrics["balanced_error"] == pytest.approx(1 - sum(recalls) / len(recalls))
    assert f"| balanced_error | {metrics['balanced_error']:.4f} |" in (out / "README.md").read_text()


def write_balanced_error_module(folder: Path) -> Path:
    """A local `evaluate` module (evaluate.load takes its folder): 1 - mean per-class recall."""
    folder.mkdir(parents=True)
    (folder / f"{folder.name}.py").write_text(
        textwrap.dedent(
            """
            import datasets
            import evaluate
            import numpy as np


            class BalancedError(evaluate.Metric):
                def _info(self):
                    features = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
                    return evaluate.MetricInfo(
                        description="1 - balanced accuracy", citation="", inputs_description="",
                        features=datasets.Features(features),
                    )

                def _compute(self, predictions, references):
                    p, r = np.asarray(predictions), np.asarray(references)
                    recalls = [float((p[r == c] == c).mean()) for c in np.unique(r)]
                    return {"balanced_error": 1 - sum(recalls) / len(recalls)}
            """
        )
    )
    return folder


def test_validation_report_matches_metrics(tmp_path_factory):
    for result in (R.timm_full(tmp_path_factory), R.timm_lora(tmp_path_factory)):
        report = json.loads((result.output_dir / "eval" / "best_model_validation.json").read_text())
        assert report["metrics"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
        assert report["metrics"]["loss"] == pytest.approx(result.metrics["loss"], rel=1e-4)
        assert sum(map(sum, report["confusion_matrix"])) == report["num_examples"] == 12
