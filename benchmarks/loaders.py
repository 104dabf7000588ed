"""Open finished runs with the standard loaders and count how often their top-1 agrees with ours.

    python benchmarks/loaders.py RUN_DIR [RUN_DIR ...]

For each run, on its validation data: hf_transfer's own predictions (`load_run(...).predict`) against
- full / linear-probe runs: `transformers.pipeline(<task>, model=RUN_DIR)`;
- LoRA runs: peft's PeftModel on the adapter folder over the transformers base (this machine's copy, as
  the run's config.yaml names it), and `pipeline(<task>, model=RUN_DIR/merged)` when the
  run was exported with `export.merge: true`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hf_transfer.adapters.audio import load_audio
from hf_transfer.adapters.image_timm import is_timm_folder
from hf_transfer.catalog.specs import resolve_model
from hf_transfer.config.schema import load_config
from hf_transfer.core.rundir import RunDir
from hf_transfer.data.splits import load_splits
from hf_transfer.inference import load_run


def _validation_inputs(run) -> list:
    """The run's own validation examples, as its training saw them: data.validation, else the source's
    validation split, else the seeded part of the training set it held out (data.validation is then null)."""
    dataset = load_splits(run.config, run.adapter.inputs).validation
    return list(dataset[run.adapter.inputs.input_column])


def _pipeline_inputs(run, inputs: list) -> tuple[list, dict]:
    task = run.config.task
    if task == "audio-classification":
        rate = int(run.adapter.models.feature_extractor.sampling_rate)
        return [{"raw": load_audio(x, rate), "sampling_rate": rate} for x in inputs], {}
    if task == "text-classification":
        return inputs, {"truncation": True, "max_length": run.config.data.max_length}
    return [x["path"] if isinstance(x, dict) else x for x in inputs], {}


def _pipeline_top1(folder: Path, run, inputs: list) -> list[str]:
    from transformers import pipeline

    classifier = pipeline(run.adapter.card.pipeline_tag, model=str(folder), device="cpu")
    data, kwargs = _pipeline_inputs(run, inputs)
    return [out[0]["label"] if isinstance(out, list) else out["label"] for out in classifier(data, top_k=1, **kwargs)]


def _peft_top1(folder: Path, run, inputs: list) -> list[str]:
    import transformers
    from peft import PeftModel
    from transformers import AutoConfig

    labels = run.labels
    id2label = dict(enumerate(labels))
    # adapter_config.json names the base portably (a Hub id, or a local folder by its name): this machine's
    # copy is the one the run's config.yaml names.
    base_path = resolve_model(load_config(RunDir(folder).config).model)
    auto = {
        "text-classification": transformers.AutoModelForSequenceClassification,
        "image-classification": transformers.AutoModelForImageClassification,
        "audio-classification": transformers.AutoModelForAudioClassification,
    }[run.config.task]
    if not (Path(base_path) / "config.json").is_file() or is_timm_folder(Path(base_path)):
        return []  # a timm base (a name + a local weights file): PeftModel needs that base built by hand
    AutoConfig.from_pretrained(base_path)  # fails loudly if the base is not a transformers folder
    base = auto.from_pretrained(base_path, id2label=id2label, ignore_mismatched_sizes=True)
    model = PeftModel.from_pretrained(base, str(folder))
    model.eval()
    # The standard model with our preprocessing (the adapter's eval transform and collate).
    predictions = []
    dataset = run.dataset([{run.adapter.inputs.input_column: x} for x in inputs])
    with torch.no_grad():
        for start in range(0, len(dataset), 32):
            batch = run.adapter.inputs.model_inputs(dataset[start : start + 32])
            batch.pop("labels", None)
            predictions += run.adapter.models.logits(model, batch).argmax(-1).tolist()
    return [labels[i] for i in predictions]


def main() -> None:
    for run_dir in map(Path, sys.argv[1:]):
        run = load_run(run_dir, device="cpu")
        inputs = _validation_inputs(run)
        # Each input as a row of the run's input column: a data set's image cell is itself a dict (path, bytes).
        ours = [p[0]["label"] for p in run.predict([{run.adapter.inputs.input_column: x} for x in inputs])]
        checks = {}
        if (run_dir / "adapter_config.json").is_file():
            peft = _peft_top1(run_dir, run, inputs)
            if peft:
                checks["peft adapter folder"] = peft
            if (run_dir / "merged").is_dir():
                checks["pipeline on merged/"] = _pipeline_top1(run_dir / "merged", run, inputs)
        else:
            checks["pipeline on output_dir"] = _pipeline_top1(run_dir, run, inputs)
        for name, theirs in checks.items():
            agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
            print(f"{run_dir} [{run.config.task}, {run.config.strategy}] {name}: top-1 agrees on {agree}/{len(ours)}")


if __name__ == "__main__":
    main()
