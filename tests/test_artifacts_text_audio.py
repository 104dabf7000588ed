"""Issue 4 for text and audio: each run's output opens in the standard loader (transformers pipeline,
peft, the Auto classes), not our code, and agrees with our own predictions and evaluation; the CLI's
predict/evaluate and a text run's model card. Tiny models built from configs, as test_text and
test_audio build them; every run trains once for this module."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from huggingface_hub import ModelCard
from peft import AutoPeftModelForSequenceClassification, PeftModel
from test_audio import TOY_CLASSES, audio_overrides
from test_text import _logits, overrides, toy_rows, write_rows, write_tokenizer_and_model
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

from hf_transfer import load_config, train
from hf_transfer.adapters.usage import BASE_PLACEHOLDER, LOCAL_FOLDER
from hf_transfer.catalog.samples import write_note_folders
from hf_transfer.catalog.specs import write_tiny_wav2vec2
from hf_transfer.cli import main
from hf_transfer.inference import load_run

LABELS = ["neg", "neu", "pos"]
ID2LABEL = dict(enumerate(LABELS))


# ---------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is as fast on a quiet machine, and on a busy one (2 cores
    shared with other work) avoids the thread oversubscription that made this module 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("text_artifacts")
    data = {
        "root": root,
        "bert": write_tokenizer_and_model(root / "tiny-bert"),
        "train": write_rows(root / "train.csv", toy_rows(32, seed=0)),
        "validation": write_rows(root / "validation.csv", toy_rows(6, seed=1)),
    }
    with data["validation"].open() as f:
        rows = list(csv.DictReader(f))
    data["texts"], data["truth"] = [r["text"] for r in rows], [r["label"] for r in rows]
    runs = {
        "full": {"strategy": "full", "train.lr": 0.003},
        "lora": {"strategy": "lora", "train.lr": 0.01, "export.merge": True},
    }
    for name, extra in runs.items():
        config = load_config(None, overrides(data["bert"], data["train"], data["validation"], root / name, **extra))
        data[name] = train(config)
    return data


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("audio_artifacts")
    tiny = write_tiny_wav2vec2(root / "tiny-w2v2", hidden_size=32)
    train_dir = write_note_folders(root / "train", TOY_CLASSES, per_class=16, seed=0)
    val_dir = write_note_folders(root / "validation", TOY_CLASSES, per_class=6, seed=1)
    # Clips last 0.35-0.7 s: a limit above that means no crop, so a pipeline fed the whole clip sees
    # exactly what our evaluation saw (with a shorter limit, ours would score the centre crop only).
    common = {"data.max_duration_s": 1.0}
    data = {"root": root, "tiny": tiny, "validation": val_dir, "files": sorted(val_dir.rglob("*.wav"))}
    for name, extra in {"full": {}, "lora": {"strategy": "lora", "export.merge": True}}.items():
        data[name] = train(load_config(None, audio_overrides(train_dir, val_dir, root / name, tiny, **common, **extra)))
    return data


def _our_predictions(output_dir: Path, inputs: list, top_k: int = 1) -> list[list[dict]]:
    return load_run(output_dir, device="cpu").predict([str(x) for x in inputs], top_k=top_k)


def _labels(predictions: list[list[dict]]) -> list[str]:
    return [p[0]["label"] for p in predictions]


def _confusion(truth: list[str], predicted: list[str], labels: list[str]) -> list[list[int]]:
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        matrix[labels.index(t)][labels.index(p)] += 1
    return matrix


# ---------------------------------------------------------------------------------------- text


def _text_pipeline(model_dir: Path, texts: list[str]) -> list[dict]:
    classify = pipeline("text-classification", model=str(model_dir), device="cpu")
    return [r[0] if isinstance(r, list) else r for r in classify(texts, top_k=1)]


def test_text_full_opens_in_pipeline_and_agrees_with_our_evaluation(text):
    result, out = text["full"], text["full"].output_dir
    assert result.labels == LABELS
    assert json.loads((out / "config.json").read_text())["id2label"] == {str(i): n for i, n in ID2LABEL.items()}
    by_pipeline = _text_pipeline(out, text["texts"])
    ours = _our_predictions(out, text["texts"])
    top1 = [r["label"] for r in by_pipeline]
    assert set(top1) <= set(LABELS) and len(set(top1)) > 1  # our names, not LABEL_0; not a constant
    assert top1 == _labels(ours) and len(top1) == 18
    assert [r["score"] for r in by_pipeline] == pytest.approx([p[0]["score"] for p in ours], abs=1e-5)
    # ... and that top-1 is what the run's own evaluation scored: the same accuracy and confusion matrix.
    report = json.loads((out / "eval" / "best_model_validation.json").read_text())
    accuracy = sum(p == t for p, t in zip(top1, text["truth"], strict=True)) / len(top1)
    assert accuracy == pytest.approx(result.metrics["accuracy"]) == pytest.approx(report["metrics"]["accuracy"])
    assert _confusion(text["truth"], top1, LABELS) == report["confusion_matrix"]


def _card_code(card_text: str) -> str:
    usage = card_text.split("## How to use", 1)[1]
    return re.search(r"```python\n(.*?)\n```", usage, re.S).group(1)


def test_text_lora_opens_in_peft_and_merged_in_pipeline(text, monkeypatch):
    result, out = text["lora"], text["lora"].output_dir
    texts = text["texts"]
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == text["bert"].name  # the folder's name, not its path
    assert adapter_config["task_type"] == "SEQ_CLS" and not (out / "config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)  # saved beside the adapter
    ours = _logits(result.model, tokenizer, texts)

    # PeftModel on the base (whose own 2-label head is replaced by the adapter's saved 3-label head).
    base = AutoModelForSequenceClassification.from_pretrained(
        text["bert"], num_labels=3, id2label=ID2LABEL, ignore_mismatched_sizes=True
    )
    assert torch.allclose(_logits(PeftModel.from_pretrained(base, str(out)), tokenizer, texts), ours, atol=1e-5)

    # The code the model card prints, run once its placeholders (this run, the base's copy) are filled in.
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    code = _card_code(card.text)
    assert text["bert"].name not in code and f"replace {BASE_PLACEHOLDER}" in code
    namespace: dict = {}
    exec(code.replace(BASE_PLACEHOLDER, str(text["bert"])).replace(LOCAL_FOLDER, str(out)), namespace)
    assert isinstance(namespace["model"], PeftModel)
    assert torch.allclose(_logits(namespace["model"], tokenizer, texts), ours, atol=1e-5)
    # The base's name is relative: AutoPeftModel finds it from the folder that holds the base.
    monkeypatch.chdir(text["bert"].parent)
    by_auto_peft = AutoPeftModelForSequenceClassification.from_pretrained(
        str(out), num_labels=3, id2label=ID2LABEL, ignore_mismatched_sizes=True
    )
    assert torch.allclose(_logits(by_auto_peft, tokenizer, texts), ours, atol=1e-5)

    # merged/: a plain transformers folder that the pipeline opens, agreeing with our predictions.
    merged = out / "merged"
    assert not (merged / "adapter_config.json").exists() and (merged / "model.safetensors").is_file()
    top1 = [r["label"] for r in _text_pipeline(merged, texts)]
    assert top1 == [LABELS[i] for i in ours.argmax(-1).tolist()] == _labels(_our_predictions(out, texts))
    accuracy = sum(p == t for p, t in zip(top1, text["truth"], strict=True)) / len(top1)
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_text_predict_cli_from_file_and_stdin(text, tmp_path, capsys, monkeypatch):
    out = str(text["full"].output_dir)
    texts = text["texts"][:5]
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(texts[:3]) + "\n\n")  # a blank line is skipped
    expected = _our_predictions(Path(out), texts, top_k=2)

    assert main(["predict", out, str(lines), "--top-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["input"] for p in printed] == texts[:3]
    assert [[q["label"] for q in p["predictions"]] for p in printed] == [[q["label"] for q in e] for e in expected[:3]]
    assert all(len(p["predictions"]) == 2 for p in printed)

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts[3:]) + "\n"))
    assert main(["predict", out, str(lines), "-", "--top-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["input"] for p in printed] == texts
    for got, want in zip(printed, expected, strict=True):
        assert [q["label"] for q in got["predictions"]] == [q["label"] for q in want]
        assert [q["score"] for q in got["predictions"]] == pytest.approx([q["score"] for q in want], abs=1e-6)

    monkeypatch.setattr("sys.stdin", io.StringIO(texts[0] + "\n"))  # no inputs at all: stdin, plain text
    assert main(["predict", out]) == 0
    shown = capsys.readouterr().out.strip().splitlines()
    assert len(shown) == 1
    source, ranked = shown[0].split("\t")
    assert source == texts[0] and ranked == f"{expected[0][0]['label']} {expected[0][0]['score']:.4f}"


def test_text_evaluate_cli_writes_report(text, capsys):
    result, out = text["full"], text["full"].output_dir
    assert main(["evaluate", str(out), "--data", str(text["validation"])]) == 0
    assert "on 18 examples -> " in capsys.readouterr().out
    report = json.loads((out / "eval" / "validation.json").read_text())
    validation = json.loads((out / "eval" / "best_model_validation.json").read_text())
    assert report["metrics"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert report["metrics"]["f1_macro"] == pytest.approx(result.metrics["f1_macro"])
    assert report["metrics"]["loss"] == pytest.approx(result.metrics["loss"], rel=1e-4)
    assert report["labels"] == LABELS and list(report["per_class"]) == LABELS
    assert [r["support"] for r in report["per_class"].values()] == [6, 6, 6]
    assert report["confusion_matrix"] == validation["confusion_matrix"]
    predicted = _labels(_our_predictions(out, text["texts"]))
    assert report["confusion_matrix"] == _confusion(text["truth"], predicted, LABELS)
    for i, name in enumerate(LABELS):  # recall read off the matrix's row
        row = report["confusion_matrix"][i]
        assert report["per_class"][name]["recall"] == pytest.approx(row[i] / sum(row))


def test_text_model_card(text):
    result, out = text["full"], text["full"].output_dir
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert {"hf-transfer", "full", "text-classification"} <= set(data["tags"])
    assert "base_model" not in data and "datasets" not in data  # a local folder and local CSVs
    index = data["model-index"][0]["results"][0]
    assert index["task"]["type"] == "text-classification" and index["dataset"]["type"] == "csv"
    metrics = {m["type"]: m["value"] for m in index["metrics"]}
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-4)
    assert metrics["f1"] == pytest.approx(result.metrics["f1_macro"], abs=1e-4)
    assert metrics["loss"] == pytest.approx(result.metrics["loss"], abs=1e-4)
    for picture in ("training_curves.png", "confusion_matrix.png"):
        assert f"]({picture})" in card.text and (out / picture).read_bytes()[:4] == b"\x89PNG"
    assert 'pipeline("text-classification", model="path/to/this/folder")' in card.text
    trainable, total = result.metrics["trainable_parameters"], result.metrics["total_parameters"]
    assert trainable == total and f"{trainable:,} of {total:,} parameters" in card.text
    assert "strategy: full" in card.text and "| accuracy |" in card.text
    for path in (text["root"], text["root"].resolve(), Path("/tmp"), Path.home()):
        assert str(path) not in card.content  # local paths are reduced to their names
    assert "tiny-bert" in card.text and "train.csv" in card.text


# ---------------------------------------------------------------------------------------- audio


def _audio_pipeline(model_dir: Path, files: list[Path]) -> list[dict]:
    classify = pipeline("audio-classification", model=str(model_dir), device="cpu")
    inputs = []
    for f in files:  # decoded here with soundfile: the pipeline's own file reading needs FFmpeg
        samples, rate = soundfile.read(f, dtype="float32")
        assert samples.ndim == 1 and rate == 16_000
        inputs.append({"raw": np.asarray(samples), "sampling_rate": rate})
    return [r[0] for r in classify(inputs, top_k=1)]


def test_audio_full_opens_in_pipeline_and_agrees(audio):
    result, out, files = audio["full"], audio["full"].output_dir, audio["files"]
    assert (out / "preprocessor_config.json").is_file()
    by_pipeline = _audio_pipeline(out, files)
    ours = _our_predictions(out, files)
    top1 = [r["label"] for r in by_pipeline]
    assert set(top1) <= set(result.labels) and len(set(top1)) > 1
    assert top1 == _labels(ours) and len(top1) == 18
    assert [r["score"] for r in by_pipeline] == pytest.approx([p[0]["score"] for p in ours], abs=1e-4)
    truth = [f.parent.name for f in files]
    accuracy = sum(p == t for p, t in zip(top1, truth, strict=True)) / len(truth)
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_audio_lora_merged_opens_in_transformers_and_agrees(audio):
    result, out, files = audio["lora"], audio["lora"].output_dir, audio["files"]
    assert (out / "adapter_config.json").is_file() and (out / "preprocessor_config.json").is_file()
    merged = AutoModelForAudioClassification.from_pretrained(out / "merged").eval()
    assert merged.config.id2label == dict(enumerate(result.labels))
    adapter = result.adapter
    batch = adapter.inputs.model_inputs({adapter.inputs.input_column: [{"path": str(f), "bytes": None} for f in files]})
    with torch.no_grad():
        ours = result.model.eval()(**batch).logits
        assert torch.allclose(merged(**batch).logits, ours, atol=1e-4)
    expected = [result.labels[i] for i in ours.argmax(-1).tolist()]
    top1 = [r["label"] for r in _audio_pipeline(out / "merged", files)]
    assert top1 == expected == _labels(_our_predictions(out, files))


def test_audio_card_snippet_needs_no_ffmpeg_and_agrees(audio, capsys):
    """The card says the pipeline needs FFmpeg for file paths and shows the array form, which runs as
    printed (the folder and file placeholders pointed at this run) and gives our prediction."""
    out, clip = audio["full"].output_dir, audio["files"][0]
    card = ModelCard.load(out / "README.md")
    assert "FFmpeg" in card.text and '`{"raw": samples, "sampling_rate": rate}`' in card.text
    assert "Trained on clips of at most 1 s" in card.text
    code = _card_code(card.text)
    assert "soundfile.read(" in code and '"sampling_rate": rate' in code
    exec(code.replace("path/to/this/folder", str(out)).replace("clip.wav", str(clip)), {})
    by_snippet = ast.literal_eval(capsys.readouterr().out.strip())  # what the snippet printed
    ours = _our_predictions(out, [clip])[0][0]
    assert by_snippet[0]["label"] == ours["label"] and by_snippet[0]["score"] == pytest.approx(ours["score"], abs=1e-4)


def test_audio_lora_card_snippet_on_a_local_base_runs_once_filled_in(tmp_path, capsys):
    """A LoRA run on a local base folder: the card's snippet names a placeholder for the base (and says
    so), and once the placeholders are filled in it runs the pipeline on the array form (no FFmpeg)
    and prints our prediction."""
    base = write_tiny_wav2vec2(tmp_path / "tiny-w2v2", hidden_size=32)
    torch.manual_seed(0)
    AutoModelForAudioClassification.from_config(AutoConfig.from_pretrained(base)).save_pretrained(base)
    train_dir = write_note_folders(tmp_path / "train", TOY_CLASSES, per_class=6, seed=0)
    val_dir = write_note_folders(tmp_path / "validation", TOY_CLASSES, per_class=2, seed=1)
    extra = {"pretrained": True, "strategy": "lora", "train.epochs": 1, "data.max_duration_s": 1.0}
    out = train(load_config(None, audio_overrides(train_dir, val_dir, tmp_path / "lora", base, **extra))).output_dir
    card = ModelCard.load(out / "README.md").text
    assert "FFmpeg" in card and '`{"raw": samples, "sampling_rate": rate}`' in card
    code = _card_code(card)
    assert base.name not in code and f"replace {BASE_PLACEHOLDER}" in code
    clip = sorted(val_dir.rglob("*.wav"))[0]
    filled = code.replace(BASE_PLACEHOLDER, str(base)).replace(LOCAL_FOLDER, str(out)).replace("clip.wav", str(clip))
    exec(filled, {})
    by_snippet = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])  # what the snippet printed
    ours = _our_predictions(out, [clip])[0][0]
    assert by_snippet[0]["label"] == ours["label"] and by_snippet[0]["score"] == pytest.approx(ours["score"], abs=1e-4)


def test_audio_predict_cli(audio, capsys):
    out, files = str(audio["full"].output_dir), [str(f) for f in audio["files"][::4]]
    assert main(["predict", out, *files, "--top-k", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = _our_predictions(Path(out), files, top_k=2)
    assert [p["input"] for p in printed] == files
    assert [[q["label"] for q in p["predictions"]] for p in printed] == [[q["label"] for q in e] for e in expected]
    assert main(["predict", out, *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    assert [line.split("\t")[1].split()[0] for line in lines] == _labels(expected)


def test_text_and_audio_weights_are_safetensors_only(text, audio):
    for result in (text["full"], text["lora"], audio["full"], audio["lora"]):
        files = [p for p in result.output_dir.rglob("*") if p.is_file() and "checkpoints" not in p.parts]
        assert any(p.suffix == ".safetensors" for p in files)
        assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".tmp")]
        hidden = [p.name for p in result.output_dir.iterdir() if p.name.startswith(".")]
        assert hidden == [".hf_transfer.lock"]  # no staging leftovers, only the run's lock file
