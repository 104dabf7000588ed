"""Sample data sets for offline demos, examples and benchmarks, generated on demand.

Each is registered in `SAMPLES` under its name, so `data.train: sample:digits/train` works in any config
(specs.resolve_data builds one into the cache the first time it is asked for). Generating imports numpy and
the writers only then; this module imports nothing else of the package but the registry, so specs.py can
import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core.registry import Registry

AUDIO_RATE = 16_000
SAMPLES: Registry[Callable[[Path], None]] = Registry("sample dataset")


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


# ---------------------------------------------------------------------------------------- audio
# No pretrained audio weights install from PyPI, so audio transfer is shown by chaining runs on two
# related generated tasks over the same kind of sound (harmonic notes of random timbre, loudness,
# length, tuning and noise): train a model from scratch on `tones` (which note sounds), then reuse
# its backbone for `dyads` (which two-note chord: {A3, C4} x {E4, G4}, so a probe must hear exact
# pitches, which a randomly initialised backbone does not resolve).

NOTES = {"A3": 220.00, "C4": 261.63, "E4": 329.63, "G4": 392.00, "A4": 440.00, "C5": 523.25}
NOTES.update({"B3": 246.94, "D4": 293.66, "F4": 349.23, "B4": 493.88})  # not in the source task
TONE_CLASSES = {name: [name] for name in ("A3", "C4", "E4", "G4", "A4", "C5")}
# A second target: single notes between the source's notes (the tests' chained-transfer check).
NEW_NOTE_CLASSES = {name: [name] for name in ("B3", "D4", "F4", "B4")}
DYAD_CLASSES = {"A3+E4": ["A3", "E4"], "A3+G4": ["A3", "G4"], "C4+E4": ["C4", "E4"], "C4+G4": ["C4", "G4"]}


def _note_clip(rng, frequencies: list[float], rate: int):  # rng: a numpy Generator (numpy loads lazily here)
    """The notes sounding together, each with 1-4 random harmonics, a shared detune under a quarter
    tone (classes stay distinct), an attack/decay envelope, random loudness and background noise."""
    import numpy as np

    t = np.arange(int(rng.uniform(0.35, 0.7) * rate)) / rate
    detune = rng.uniform(0.985, 1.015)
    clip = np.zeros_like(t)
    for frequency in frequencies:
        for harmonic in range(1, int(rng.integers(1, 5)) + 1):
            phase = rng.uniform(0, 2 * np.pi)
            clip += rng.uniform(0.3, 1.0) / harmonic * np.sin(2 * np.pi * frequency * detune * harmonic * t + phase)
    attack = max(1, int(rng.uniform(0.005, 0.05) * rate))
    envelope = np.minimum(1.0, np.arange(len(t)) / attack) * np.exp(-t * rng.uniform(0.5, 4.0))
    clip = clip * envelope / max(1e-6, float(np.abs(clip).max()))
    clip = clip * rng.uniform(0.2, 0.9) + rng.normal(0, rng.uniform(0.002, 0.05), len(t))
    return np.clip(clip, -1, 1).astype(np.float32)


def write_note_folders(
    root: Path, classes: dict[str, list[str]], per_class: int, seed: int, rate: int = AUDIO_RATE
) -> Path:
    """`root/<label>/<i>.wav` (16-bit PCM, mono) for each label -> the NOTES it sounds. Deterministic in `seed`."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(seed)
    for label, notes in classes.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            clip = _note_clip(rng, [NOTES[n] for n in notes], rate)
            soundfile.write(folder / f"{i:04d}.wav", clip, rate, subtype="PCM_16")
    return root


@SAMPLES.register("tones")
def _tones(root: Path) -> None:
    """Source task: which of 6 notes (A3..C5) sounds; 60 training and 20 validation clips per note."""
    write_note_folders(root / "train", TONE_CLASSES, per_class=60, seed=0)
    write_note_folders(root / "validation", TONE_CLASSES, per_class=20, seed=1)


@SAMPLES.register("dyads")
def _dyads(root: Path) -> None:
    """Target task: which of 4 two-note chords sounds; 40 training and 20 validation clips per chord."""
    write_note_folders(root / "train", DYAD_CLASSES, per_class=40, seed=10)
    write_note_folders(root / "validation", DYAD_CLASSES, per_class=20, seed=11)


# ----------------------------------------------------------------------------------------- text
# Review sentences whose sentiment rests on one word. Validation uses only sentiment words that
# training never shows (single word pieces, no piece shared with a training word), so a model can
# classify them only through what pretraining taught it about those words: a randomly initialised
# encoder sees unknown token ids and stays near chance, MiniLM transfers.
_SENTIMENT_NOUNS = (
    "food service movie hotel book concert staff room coffee show trip game phone album restaurant lecture"
).split()
_SENTIMENT_TEMPLATES = {
    "adjective": [
        "The {noun} was {word}.",
        "What a {word} {noun}!",
        "Honestly, the {noun} was {word}.",
        "I thought the {noun} was {word}.",
        "Our {noun} turned out {word}.",
        "Overall a {word} {noun}.",
    ],
    "verb": ["I {word} the {noun}.", "My friends {word} the {noun} too.", "We all {word} that {noun}."],
}
_SENTIMENT_WORDS = {  # split -> part of speech -> label -> words
    "train": {
        "adjective": {
            "positive": "good great excellent wonderful fantastic amazing delightful superb".split(),
            "negative": "bad terrible awful horrible dreadful poor disappointing nasty".split(),
        },
        "verb": {
            "positive": "loved enjoyed liked adored".split(),
            "negative": "hated disliked despised regretted".split(),
        },
    },
    "validation": {
        "adjective": {
            "positive": "lovely brilliant outstanding pleasant marvelous enjoyable terrific splendid".split(),
            "negative": "miserable unpleasant disgusting pathetic boring rotten worthless inferior".split(),
        },
        "verb": {
            "positive": "appreciated admired praised recommended".split(),
            "negative": "resented criticized condemned mocked".split(),
        },
    },
}


def write_sentiment_csv(path: Path, split: str, per_label: int, seed: int) -> Path:
    """`per_label` distinct sentences per label (text,label columns), deterministic in `seed`."""
    import random
    import re

    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    for label in ("negative", "positive"):
        seen: set[str] = set()
        while len(seen) < per_label:
            kind = rng.choice(sorted(_SENTIMENT_TEMPLATES))
            template = rng.choice(_SENTIMENT_TEMPLATES[kind])
            word = rng.choice(_SENTIMENT_WORDS[split][kind][label])
            text = template.format(noun=rng.choice(_SENTIMENT_NOUNS), word=word)
            text = re.sub(r"\b([Aa]) ([aeiou])", r"\1n \2", text)  # "an excellent", "an album"
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
    rng.shuffle(rows)
    return write_text_csv(path, rows)


def write_text_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """`rows` as a CSV file with the columns text,label (its folder made if needed)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@SAMPLES.register("sentiment")
def _sentiment(root: Path) -> None:
    """Binary review sentiment: 400 training and 200 validation sentences (balanced), the validation
    sentiment words held out from training (see above)."""
    write_sentiment_csv(root / "train.csv", "train", per_label=200, seed=0)
    write_sentiment_csv(root / "validation.csv", "validation", per_label=100, seed=1)
