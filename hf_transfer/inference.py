"""Load a finished run for inference: `load_run(output_dir).predict(inputs)`.

The model is rebuilt through the adapter (a run's output_dir is a valid `model:`, LoRA adapters are
merged), with the run's own config, so preprocessing is the adapter's eval transform: predictions
equal what the run's evaluation saw.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from torch import nn

from .adapters import ADAPTERS, TaskAdapter
from .catalog.specs import resolve_data
from .config.schema import RunConfig, load_config
from .core.atomic import write_json
from .core.errors import ConfigError, DataError
from .core.rundir import RunDir
from .data.columns import ColumnRequest
from .data.sources import in_memory_name
from .data.splits import load_labelled
from .engine.evaluation import Predictions, classification_report, predict_dataset


@dataclass
class LoadedRun:
    """A trained model with its adapter, ready for `predict` / `evaluate`."""

    output_dir: Path
    config: RunConfig
    labels: list[str]
    adapter: TaskAdapter
    model: nn.Module

    def dataset(self, inputs: list[Any]) -> Dataset:
        """Raw inputs (file paths, texts, or row dicts with the run's column names) as a prepared dataset."""
        rows = [x if isinstance(x, dict) else {self.adapter.inputs.input_column: x} for x in inputs]
        columns = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else {}
        return self.adapter.inputs.prepare_dataset(Dataset.from_dict(columns))

    def predict_logits(self, inputs: list[Any], batch_size: int = 32) -> Predictions:
        return predict_dataset(self.model, self.adapter, self.dataset(inputs), batch_size=batch_size)

    def predict(self, inputs: list[Any], top_k: int = 1, batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """For each input, the `top_k` most likely labels as [{'label', 'score'}], best first
        (the shape `transformers.pipeline` returns)."""
        if not inputs:
            return []
        probabilities = torch.from_numpy(self.predict_logits(inputs, batch_size).probabilities)
        k = max(1, min(top_k, len(self.labels)))
        scores, indices = probabilities.topk(k, dim=-1)
        return [
            [{"label": self.labels[i], "score": float(s)} for s, i in zip(row_s.tolist(), row_i.tolist(), strict=True)]
            for row_s, row_i in zip(scores, indices, strict=True)
        ]


def load_run(
    output_dir: str | Path, device: str | torch.device | None = None, trust_remote_code: bool = False
) -> LoadedRun:
    """Open a finished run (any task, any strategy) for inference.

    Args:
        output_dir (`str | Path`): a finished run's folder.
        device (`str | torch.device`, *optional*): where the model runs; default CUDA when present, else CPU.
        trust_remote_code (`bool`, defaults to `False`): let a model folder's own modeling code run.

    Returns:
        `LoadedRun`, with `predict(inputs, top_k)` and `predict_logits(inputs)`; `evaluate_run(run, data)`
        scores it on labelled data.

    A run folder is data, possibly downloaded: its own config.yaml never enables remote code; only
    the caller's `trust_remote_code` lets a model folder's modeling_*.py run."""
    output_dir = Path(output_dir)
    run_dir = RunDir(output_dir)
    if not run_dir.is_finished_run():
        raise ConfigError(
            f"{output_dir} is not a finished hf-transfer run (no {RunDir.RUN_INFO}). Give the output_dir of a run."
        )
    info = run_dir.read_run_info()
    run_config = load_config(run_dir.config)
    # The run's own settings (image size, max_length, max duration...) with the run itself as the model.
    config = dataclasses.replace(
        run_config, model=str(output_dir), weights=None, pretrained=True, trust_remote_code=trust_remote_code
    )
    adapter = ADAPTERS.get(info["task"])(config)
    labels = list(info["labels"])
    model = adapter.models.build_model(labels)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    return LoadedRun(output_dir=output_dir, config=config, labels=labels, adapter=adapter, model=model)


def read_inputs(run: LoadedRun, sources: list[str]) -> tuple[list[Any], list[str]]:
    """CLI inputs as model inputs plus a short display string for each.

    Text runs read one text per line from each file ('-' or none: stdin), a tab separating the texts
    of a pair; the other modalities take file paths."""
    if run.adapter.inputs.input_is_file:
        missing = [s for s in sources if not Path(s).is_file()]
        if missing or not sources:
            raise DataError(f"Input file(s) not found: {', '.join(missing)}" if missing else "Give input files.")
        return list(sources), list(sources)
    lines: list[str] = []
    for source in sources or ["-"]:
        if source == "-":
            lines += sys.stdin.read().splitlines()
        elif Path(source).is_file():
            lines += Path(source).read_text().splitlines()
        else:
            raise DataError(f"Text input file {source!r} not found (give files of one text per line, or '-').")
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError("No text to classify: the inputs are empty.")
    data = run.config.data
    if data.text_pair_column is None:
        return lines, [_short(line) for line in lines]
    rows = []
    for number, line in enumerate(lines, 1):
        first, sep, second = line.partition("\t")
        if not sep:
            raise DataError(f"Line {number} has no tab: this run classifies text pairs ('text<TAB>pair').")
        rows.append({data.text_column: first, data.text_pair_column: second})
    return rows, [_short(line.replace("\t", " | ")) for line in lines]


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def evaluate_run(
    run: LoadedRun,
    data: str | Dataset | DatasetDict,
    label_column: str | None = None,
    input_column: str | None = None,
    name: str | None = None,
    batch_size: int = 32,
    subset: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """Metrics, per-class report and confusion matrix of a loaded run on labelled `data` (any source
    `data.train` accepts, 'SOURCE:SPLIT' naming a split of one with several, or a Dataset; its labels
    must be among the run's), loaded as a run loads its validation set; written to
    OUTPUT_DIR/eval/NAME.json. Returns the report and where it was written.

    The columns: `label_column` / `input_column`, else detected, the run's own column names first.
    `subset`: a Hub dataset's configuration, by default the run's `data.subset`."""
    prefer = (run.config.data.label_column, run.adapter.inputs.input_column)
    request = ColumnRequest(label_column, input_column, prefer, keys=("--label-column", "--input-column"))
    subset = subset or run.config.data.subset
    source = data if isinstance(data, str) else in_memory_name(data)
    path = RunDir(run.output_dir).eval_report(name or _report_name(source))  # a bad --name fails before the work
    dataset, _ = load_labelled(data, run.adapter.inputs, request, run.labels, subset)
    predictions = predict_dataset(run.model, run.adapter, dataset, batch_size=batch_size, origin=source)
    report = classification_report(predictions, run.labels)
    report["data"] = source
    write_json(path, report)
    return report, path


def _report_name(source: str) -> str:
    """A local folder or file by its name (and split: `test` of ROOT:test -> ROOT_test), else the source
    with '/' and ':' made file-name safe."""
    resolved = resolve_data(source)
    location, _, split = resolved.rpartition(":")
    if Path(resolved).exists():
        return Path(resolved).stem
    if location and Path(location).exists():
        return f"{Path(location).stem}_{split}"
    return source.replace("/", "__").replace(":", "_")
