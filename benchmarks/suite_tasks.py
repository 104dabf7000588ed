"""The tasks of benchmarks/suite.py: data generated in code, deterministic by seed, none of it committed.

Every task sits well below the ceiling for its anchors (scikit-learn logistic regression on frozen
features, the hand-written loop): few-shot versions of the samples (transfer learning's home ground),
glyphs rendered from system fonts and split by font (validation fonts never seen in training), text
whose classes are near-synonyms (validation words never seen in training), and chained audio transfer
(no pretrained audio weights install from PyPI: a tiny wav2vec2 trained from scratch on the `tones`
sample is the backbone of every audio task).

Each builder writes one task into an empty folder: image and audio tasks as `train/<label>/<file>` and
`validation/<label>/<file>`, text tasks as `train.csv` and `validation.csv` (`text,label`). `quick`
builds a tiny version of the same task (2-3 classes, a few examples each) for the smoke test.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hf_transfer.catalog.samples import DYAD_CLASSES, NOTES, write_note_folders, write_sentiment_csv, write_text_csv
from hf_transfer.catalog.specs import resolve_data

# Bump when a builder changes what it writes: the data cache is keyed by it.
DATA_VERSION = 2


@dataclass(frozen=True)
class Task:
    name: str
    modality: str  # image | text | audio
    about: str  # one line for the table
    build: Callable[[Path, bool], None]  # (empty folder, quick)
    epochs: int  # the hand-written loop's, and the package's at the hand-written loop's learning rate
    batch_size: int
    hflip: float = 0.0  # images: 0.5 where a mirrored example keeps its class
    image_size: int = 96
    max_length: int = 64  # text
    max_duration_s: float = 1.0  # audio

    def data_options(self) -> dict[str, object]:
        """The data settings both the hand-written loop and the package (row b) use for this task."""
        if self.modality == "image":
            return {"image_size": self.image_size, "hflip": self.hflip}
        if self.modality == "text":
            return {"max_length": self.max_length}
        return {"max_duration_s": self.max_duration_s}


TASKS: dict[str, Task] = {}


def task(**settings: object) -> Callable[[Callable[[Path, bool], None]], Callable[[Path, bool], None]]:
    def register(build: Callable[[Path, bool], None]) -> Callable[[Path, bool], None]:
        name = str(settings["name"])
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        TASKS[name] = Task(build=build, **settings)  # type: ignore[arg-type]
        return build

    return register


# ------------------------------------------------------------------------------------------ image


def copy_class_files(source: Path, target: Path, per_class: int, seed: int, classes: int | None = None) -> None:
    """`per_class` files of each class folder of `source` (at most `classes` classes), drawn at random
    (seeded), copied to `target/<class>/`."""
    rng = random.Random(seed)
    for folder in sorted(p for p in source.iterdir() if p.is_dir())[:classes]:
        files = sorted(folder.iterdir())
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for file in rng.sample(files, min(per_class, len(files))):
            shutil.copy2(file, target / folder.name / file.name)


@task(
    name="digits-5shot",
    modality="image",
    about="sklearn digits, 10 classes, 5 training scans each (50), 20 validation scans each (200)",
    epochs=15,
    batch_size=10,
)
def _digits_few_shot(root: Path, quick: bool) -> None:
    train, validation = Path(resolve_data("sample:digits/train")), Path(resolve_data("sample:digits/validation"))
    classes = 3 if quick else None
    copy_class_files(train, root / "train", 2 if quick else 5, seed=0, classes=classes)
    copy_class_files(validation, root / "validation", 2 if quick else 20, seed=0, classes=classes)


@task(
    name="mirrored-digits-5shot",
    modality="image",
    about="digits-5shot's scans, each (training and validation) mirrored or not by a coin seeded by its file name: "
    "labels that do not depend on left and right, as with photographs of objects, so flips are fair augmentation",
    epochs=15,
    batch_size=10,
    hflip=0.5,
)
def _mirrored_digits(root: Path, quick: bool) -> None:
    # The suite's only mirror-invariant task: the one where the probe's mirrored views (and the hand-written
    # loop's random flips) can help, compared with digits-5shot on the same scans.
    from PIL import Image, ImageOps

    _digits_few_shot(root, quick)
    for file in sorted(root.glob("*/*/*.png")):
        if random.Random(file.name).random() < 0.5:
            with Image.open(file) as image:
                mirrored = ImageOps.mirror(image)
            mirrored.save(file)


# Fonts from Debian/Ubuntu packages (`apt-get install PACKAGE`): one regular file per family. Metric
# clones of one design (Liberation/Arimo/Nimbus/Free Sans are all Helvetica-like, their Serif
# counterparts Times-like) are kept on the same side of the split, so validation fonts are unseen designs.
TRAIN_FONTS = {
    "fonts-dejavu-core": ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"],
    "fonts-liberation": ["LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "LiberationMono-Regular.ttf"],
    "fonts-freefont-ttf": ["FreeSans.ttf", "FreeSerif.ttf", "FreeMono.ttf"],
    "fonts-urw-base35": ["C059-Roman.otf", "P052-Roman.otf", "URWGothic-Book.otf", "NimbusSansNarrow-Regular.otf"],
    "fonts-cantarell": ["Cantarell-Regular.otf"],
    "fonts-cabin": ["Cabin-Regular.otf"],
    "fonts-go": ["Go-Regular.ttf"],
    "fonts-crosextra-carlito": ["Carlito-Regular.ttf"],
}
VALIDATION_FONTS = {
    "fonts-comic-neue": ["ComicNeue-Regular.otf"],
    "fonts-quicksand": ["Quicksand-Regular.ttf"],
    "fonts-comfortaa": ["Comfortaa-Regular.ttf"],
    "fonts-humor-sans": ["Humor-Sans.ttf"],
    "fonts-oldstandard": ["OldStandard-Regular.ttf"],
    "fonts-gfs-didot": ["GFSDidot.otf"],
    "fonts-ebgaramond": ["EBGaramond12-Regular.otf"],
    "fonts-inconsolata": ["Inconsolata.otf"],
    "fonts-courier-prime": ["Courier Prime.otf"],
    "fonts-crosextra-caladea": ["Caladea-Regular.ttf"],
}
GLYPHS = "abcdeghnopqsu"  # lowercase letters, several pairs alike in some fonts (b/d/p/q, a/o/e, n/h/u)


class MissingFonts(RuntimeError):
    """Raised with the apt packages that would install the fonts a task needs."""


def font_files(fonts: dict[str, list[str]]) -> list[Path]:
    """The installed files of `fonts` (package -> file names), found through fontconfig; raises
    MissingFonts naming the packages to install when any is missing."""
    try:
        listed = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=True)
        installed = {Path(line).name: Path(line) for line in listed.stdout.splitlines() if line}
    except (OSError, subprocess.CalledProcessError):
        installed = {}
    missing = sorted({package for package, files in fonts.items() for f in files if f not in installed})
    if missing:
        raise MissingFonts(
            f"the glyph tasks render letters from system fonts, and these are missing: {', '.join(missing)}. "
            f"Install them with `apt-get install {' '.join(missing)}` (Debian/Ubuntu; fontconfig's `fc-list` must "
            "list them), or leave the glyph tasks out with --tasks."
        )
    return [installed[f] for files in fonts.values() for f in files]


def render_glyph(font_path: Path, char: str, size: int, rng: random.Random):
    """`char` in the font at `font_path`, black on a light background, at a random scale, offset and small
    rotation: one grayscale `size` x `size` image."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = 2 * size
    font = ImageFont.truetype(str(font_path), int(canvas * rng.uniform(0.45, 0.75)))
    image = Image.new("L", (canvas, canvas), color=rng.randint(200, 255))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    x = (canvas - (right - left)) / 2 - left + rng.uniform(-0.08, 0.08) * canvas
    y = (canvas - (bottom - top)) / 2 - top + rng.uniform(-0.08, 0.08) * canvas
    draw.text((x, y), char, fill=rng.randint(0, 60), font=font)
    image = image.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, fillcolor=image.getpixel((0, 0)))
    return image.resize((size, size), Image.BILINEAR)


def write_glyphs(root: Path, fonts: list[Path], chars: str, per_font: int, seed: int, size: int = 64) -> None:
    rng = random.Random(seed)
    for char in chars:
        folder = root / char
        folder.mkdir(parents=True, exist_ok=True)
        for font in fonts:
            for i in range(per_font):
                render_glyph(font, char, size, rng).save(folder / f"{font.stem.replace(' ', '_')}_{i}.png")


@task(
    name="glyphs-by-font",
    modality="image",
    about=f"{len(GLYPHS)} lowercase letters from 17 training fonts (one rendering each), validated on 2 renderings "
    "in each of 10 unseen fonts",
    epochs=15,
    batch_size=16,
)
def _glyphs(root: Path, quick: bool) -> None:
    train, validation = font_files(TRAIN_FONTS), font_files(VALIDATION_FONTS)
    chars = GLYPHS[:3] if quick else GLYPHS
    write_glyphs(root / "train", train[:2] if quick else train, chars, per_font=1, seed=0)
    write_glyphs(root / "validation", validation[:2] if quick else validation, chars, per_font=2, seed=1)


# ------------------------------------------------------------------------------------------- text


@task(
    name="sentiment-16shot",
    modality="text",
    about="the sentiment sample, 16 training sentences per label (32), 200 validation sentences, held-out words",
    epochs=15,
    batch_size=8,
)
def _sentiment_few_shot(root: Path, quick: bool) -> None:
    write_sentiment_csv(root / "train.csv", "train", per_label=3 if quick else 16, seed=0)
    write_sentiment_csv(root / "validation.csv", "validation", per_label=4 if quick else 100, seed=1)


# Near-synonymous classes: customer requests whose intents a careless reader merges (cancel / return /
# refund, where is it / it is late, broken / wrong item, ...). Training and validation phrase each intent
# differently (disjoint phrasings), so only what pretraining taught about meaning carries over; the
# greeting and the sign-off around a request are noise.
INTENTS = {  # label -> (training phrasings, validation phrasings)
    "cancel_order": (
        "I want to cancel my order|please cancel the order I just placed|I no longer want this order, cancel it|"
        "can you stop my order before it ships|cancel my purchase please",
        "I changed my mind, call off the order|don't send it, I'd like to withdraw the order|"
        "scrap the order I made this morning|I need to void my order",
    ),
    "return_item": (
        "I want to return this item|how do I send this product back|I'd like to return what I bought|"
        "can I return the shoes I ordered|I need a return label",
        "I'm shipping the jacket back to you|where do I mail this back|the parcel is going back to your warehouse|"
        "I'd like to give back the lamp I got",
    ),
    "refund": (
        "I want my money back|when will I get my refund|please refund me|I'm still waiting for the refund|"
        "refund the amount to my card",
        "I expect to be reimbursed|has the reimbursement been processed|credit the payment back to me|"
        "I need the funds returned to my account",
    ),
    "exchange": (
        "can I exchange this for another size|I want to swap it for a different colour|"
        "please exchange the item for a bigger one|I'd like a different model instead|exchange my order",
        "could I trade it for the medium|I'd rather have the blue one in its place|"
        "replace it with the larger version|switch the shirt for a smaller fit",
    ),
    "track_order": (
        "where is my package|can you tell me where my order is|track my parcel|what is the status of my shipment|"
        "has my order shipped yet",
        "I'd like an update on my delivery's location|which stage is my parcel at|"
        "give me the tracking information|is my box on its way",
    ),
    "late_delivery": (
        "my order is late|the package still hasn't arrived|delivery is taking too long|"
        "it was supposed to come last week|my parcel is overdue",
        "the shipment missed its expected date|I've waited ages and nothing came|"
        "the courier never showed up on time|it should have been here days ago",
    ),
    "damaged_item": (
        "the item arrived broken|my order came damaged|the screen is cracked|the box was crushed and the vase broke|"
        "the product is faulty",
        "it was smashed when I opened it|the mug had a chip in it|the parts were bent in transit|"
        "the device doesn't work, it's defective",
    ),
    "wrong_item": (
        "I received the wrong item|this is not what I ordered|you sent me the wrong size|"
        "the colour is different from my order|I got someone else's package",
        "the parcel contained a different product|these aren't the boots I picked|"
        "you mixed up my order with another|the book inside isn't the title I bought",
    ),
    "change_address": (
        "I need to change my delivery address|please update my shipping address|send it to my new address|"
        "I moved, can you change the address|the address on my order is wrong",
        "deliver it to my office instead|redirect the parcel to another location|"
        "correct the street name on my shipment|ship it to my parents' house rather than mine",
    ),
    "payment_failed": (
        "my payment didn't go through|my card was declined|the checkout failed when I paid|"
        "I can't pay for my order|the transaction was rejected",
        "the bank refused the charge|it says payment unsuccessful|my purchase won't process at the payment step|"
        "the card keeps getting denied",
    ),
    "overcharged": (
        "I was charged twice|you billed me too much|there is an extra charge on my statement|"
        "the price I paid is higher than listed|I was overcharged",
        "a duplicate payment appeared on my account|the invoice total is wrong, it's more than it should be|"
        "my card shows two identical debits|you took more money than the order cost",
    ),
    "discount_code": (
        "my promo code doesn't work|the discount wasn't applied|how do I use a coupon|"
        "the voucher code is invalid|I forgot to add my discount code",
        "the offer code gets rejected at checkout|my coupon didn't reduce the price|"
        "where do I enter the promotion code|the sale price wasn't taken off",
    ),
}
_OPENINGS = ["", "", "Hi, ", "Hello, ", "Hey there, ", "Good morning, ", "Excuse me, ", "Quick question: "]
_CLOSINGS = ["", "", ".", ". Thanks!", ", thank you.", ". Order number {number}.", "?", ". Please help."]


def write_intents_csv(path: Path, split: str, per_label: int, seed: int, labels: list[str] | None = None) -> Path:
    """`per_label` distinct requests per intent (text,label) from the phrasings of `split` (training or
    validation), each with a random opening and closing, deterministic in `seed`."""
    rng = random.Random(seed)
    side = 0 if split == "train" else 1
    rows: list[tuple[str, str]] = []
    for label in labels or list(INTENTS):
        phrasings = INTENTS[label][side].split("|")
        seen: set[str] = set()
        while len(seen) < per_label:
            opening, closing = rng.choice(_OPENINGS), rng.choice(_CLOSINGS)
            phrase = rng.choice(phrasings)
            text = opening + (phrase if opening else phrase[0].upper() + phrase[1:]) + closing
            text = text.format(number=rng.randint(1000, 9999))
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
    rng.shuffle(rows)
    return write_text_csv(path, rows)


@task(
    name="intents-10shot",
    modality="text",
    about=f"{len(INTENTS)} near-synonymous customer intents, 10 training requests each, 20 validation each "
    "phrased differently",
    epochs=15,
    batch_size=16,
)
def _intents(root: Path, quick: bool) -> None:
    labels = list(INTENTS)[:3] if quick else None
    write_intents_csv(root / "train.csv", "train", per_label=3 if quick else 10, seed=0, labels=labels)
    write_intents_csv(root / "validation.csv", "validation", per_label=4 if quick else 20, seed=1, labels=labels)


# ------------------------------------------------------------------------------------------ audio
# Targets of chained transfer from the `tones` source run (suite.py trains it once): chords of the
# source's notes, and the source's notes among new ones, few examples each.


@task(
    name="dyads-10shot",
    modality="audio",
    about="which of 4 two-note chords, 10 training clips each (40), 40 validation clips each",
    epochs=15,
    batch_size=8,
)
def _dyads_few_shot(root: Path, quick: bool) -> None:
    classes = dict(list(DYAD_CLASSES.items())[:2]) if quick else DYAD_CLASSES
    write_note_folders(root / "train", classes, per_class=3 if quick else 10, seed=20)
    write_note_folders(root / "validation", classes, per_class=3 if quick else 40, seed=21)


@task(
    name="notes-5shot",
    modality="audio",
    about="which of 10 notes (the source task's 6 and 4 between them), 5 training clips each (50), 30 validation "
    "clips each",
    epochs=15,
    batch_size=10,
)
def _notes_few_shot(root: Path, quick: bool) -> None:
    classes = {name: [name] for name in list(NOTES)[: 2 if quick else None]}
    write_note_folders(root / "train", classes, per_class=3 if quick else 5, seed=40)
    write_note_folders(root / "validation", classes, per_class=3 if quick else 30, seed=41)
