"""Pushing to the Hub, tested offline by intercepting huggingface_hub's HfApi at its API boundary:
the right repository, only files the loaders open, once and from the main process, never a token."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import artifact_runs as R
import pytest
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects

from hf_transfer import load_config, train
from hf_transfer.cli import main
from hf_transfer.core.errors import ConfigError, HubError


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Recorded calls. upload_folder's files are those huggingface_hub itself would upload: the folder's
    files filtered by its allow/ignore patterns, with huggingface_hub's own filter."""
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        root = Path(kwargs["folder_path"])
        every = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        patterns = {"allow_patterns": kwargs.get("allow_patterns"), "ignore_patterns": kwargs.get("ignore_patterns")}
        calls.append(("upload_folder", {**kwargs, "files": list(filter_repo_objects(every, **patterns))}))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", R.TOKEN)
    return calls


def _no_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no login cache either
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))


def test_push_cli_uploads_loadable_files_only(tmp_path_factory, hub, capsys):
    out = R.vit_lora(tmp_path_factory).output_dir
    # Not the run's: a stray file beside it and a temporary file inside merged/.
    strays = [out / "notes.txt", out / "merged" / "partial.tmp"]
    for stray in strays:
        stray.write_text("not for the Hub")
    argv = ["push", str(out), "--repo-id", "me/tiny-vit-lora", "--private", "--revision", "dev"]
    try:
        assert main([*argv, "--commit-message", "first"]) == 0
    finally:
        for stray in strays:
            stray.unlink()
    assert "me/tiny-vit-lora" in capsys.readouterr().out
    assert [name for name, _ in hub] == ["create_repo", "create_branch", "upload_folder"]
    assert hub[0][1]["repo_id"] == "me/tiny-vit-lora" and hub[0][1]["private"] is True
    upload = hub[2][1]
    assert (
        upload["repo_id"] == "me/tiny-vit-lora" and upload["revision"] == "dev" and upload["commit_message"] == "first"
    )
    files = upload["files"]
    for needed in ("adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json", "README.md"):
        assert needed in files
    assert {"training_curves.png", "confusion_matrix.png", "merged/model.safetensors", "merged/config.json"} <= set(
        files
    )
    assert not [f for f in files if f.split("/")[0] in ("checkpoints", "logs", "eval") or f.startswith(".")]
    assert not {"config.yaml", "run_info.json"} & set(files)  # they hold local paths
    assert "token" not in upload  # huggingface_hub resolves it itself
    # Exactly: the model files run_info.json lists (merged/ whole), the card, its pictures, metrics.json.
    listed = json.loads((out / "run_info.json").read_text())["artifacts"]
    published = {"README.md", "training_curves.png", "confusion_matrix.png", "metrics.json"}
    expected = {p.relative_to(out).as_posix() for name in listed for p in [out / name, *(out / name).rglob("*")]}
    assert set(files) == {f for f in expected if (out / f).is_file()} | published
    assert upload["folder_path"] == str(out)  # the run folder itself, no staging copy


@pytest.mark.parametrize("via", ["environment", "override", "config file"])
def test_push_to_hub_at_end_of_training(tmp_path_factory, tmp_path, hub, via, capsys):
    """The token is in the environment; a setting may even ask for it through OmegaConf interpolation
    (`${oc.env:HF_TOKEN}`): no written file, no upload and no commit message ever holds it."""
    train_dir, val_dir = R.image_data(tmp_path_factory)
    from conftest import tiny_image_overrides

    extra = {"train.epochs": 1, "push_to_hub": True, "hub.repo_id": "me/pushed", "train.log_with": "[tensorboard]"}
    overrides = tiny_image_overrides(train_dir, val_dir, tmp_path / "run", model="test_vit", **extra)
    asked = "${oc.env:HF_TOKEN}"
    if via == "environment":
        result = train(load_config(None, overrides))
        uploads = [kwargs for name, kwargs in hub if name == "upload_folder"]
        assert len(uploads) == 1 and uploads[0]["repo_id"] == "me/pushed"
        assert {"model.safetensors", "config.json", "README.md"} <= set(uploads[0]["files"])
        assert "me/pushed" in (result.output_dir / "README.md").read_text()
    else:
        if via == "override":
            overrides.append(f"hub.commit_message={asked}")
            files = None
        else:
            files = tmp_path / "my.yaml"
            files.write_text(f"hub:\n  commit_message: Trained by {asked}\ndata:\n  labels: [red, '{asked}']\n")
        with pytest.raises(ConfigError, match=r"(hub.commit_message|data.labels\[1\]) uses OmegaConf interpolation"):
            train(load_config(files, overrides))
        assert main(["train", *(["--config", str(files)] if files else []), *overrides]) == 2
        assert "interpolation" in capsys.readouterr().err
        assert hub == []
    # No written file holds the token, nor anything sent to the Hub.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert R.TOKEN.encode() not in path.read_bytes(), path
    assert R.TOKEN not in repr(hub) and R.TOKEN not in "".join(capsys.readouterr())


def test_push_from_main_process_only(tmp_path_factory, tmp_path, hub, monkeypatch):
    """A non-main process of a multi-process run writes nothing and pushes nothing."""
    from accelerate import Accelerator

    train_dir, val_dir = R.image_data(tmp_path_factory)
    from conftest import tiny_image_overrides

    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    overrides = tiny_image_overrides(
        train_dir,
        val_dir,
        tmp_path / "run",
        model="test_vit",
        **{"train.epochs": 1, "train.max_steps": 1, "push_to_hub": True, "hub.repo_id": "me/x"},
    )
    train(load_config(None, overrides))
    assert hub == []
    assert not (tmp_path / "run" / "README.md").exists()


def test_push_uploads_no_link_and_nothing_outside_the_run_folder(tmp_path_factory, tmp_path, hub, caplog):
    """A tampered run folder: its picture a symbolic link to the token file, a listed model file a link to a
    folder outside, merged/ a link. Only the regular files inside the folder are uploaded."""
    out = Path(shutil.copytree(R.timm_lora(tmp_path_factory).output_dir, tmp_path / "run"))
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "token").write_text(R.TOKEN)
    (secret / "model.safetensors").write_text(R.TOKEN)
    (out / "training_curves.png").unlink()
    (out / "training_curves.png").symlink_to(secret / "token")
    shutil.rmtree(out / "merged")
    (out / "merged").symlink_to(secret, target_is_directory=True)
    (out / "elsewhere").symlink_to(secret, target_is_directory=True)
    info = json.loads((out / "run_info.json").read_text())
    (out / "run_info.json").write_text(json.dumps({**info, "artifacts": [*info["artifacts"], "elsewhere"]}))

    assert main(["push", str(out), "--repo-id", "me/x"]) == 0
    files = next(kwargs for name, kwargs in hub if name == "upload_folder")["files"]
    assert "adapter_model.safetensors" in files and "README.md" in files
    assert not [f for f in files if f.split("/")[0] in ("training_curves.png", "merged", "elsewhere")]
    for name in files:
        assert R.TOKEN.encode() not in (out / name).read_bytes(), name
    assert "Not uploading elsewhere, merged, training_curves.png" in caplog.text


def test_push_without_token_is_one_clear_line(tmp_path_factory, tmp_path, monkeypatch, capsys):
    _no_token(monkeypatch, tmp_path)
    out = R.timm_full(tmp_path_factory).output_dir
    assert main(["push", str(out), "--repo-id", "me/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No Hugging Face token found" in err and "HF_TOKEN" in err


def test_push_to_hub_without_token_fails_before_training(tmp_path, monkeypatch):
    _no_token(monkeypatch, tmp_path)
    config = load_config(None, ["push_to_hub=true", "hub.repo_id=me/x", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(HubError, match="No Hugging Face token"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_push_offline_is_one_clear_line(tmp_path_factory, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", R.TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = R.timm_full(tmp_path_factory).output_dir
    assert main(["push", str(out), "--repo-id", "me/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HF_HUB_OFFLINE" in err and "hf-transfer push" in err
    assert R.TOKEN not in err


def test_the_push_leaves_out_what_rundir_calls_unfinished_and_does_not_spell_it():
    """RunDir names the temporaries and locks a run folder may hold (issue 19: it owns the folder's names); the
    push takes its ignore patterns from there rather than spelling `.tmp` / `.lock` itself."""
    import ast

    from hf_transfer.artifacts import hub as hub_module
    from hf_transfer.core.rundir import RunDir

    assert set(RunDir.UNFINISHED) <= set(hub_module.IGNORE_PATTERNS)
    unfinished = [RunDir.LOCK, "merged/.model.safetensors.123.tmp", "checkpoints/step_0000006.tmp/x.json", "a.lock"]
    kept = list(filter_repo_objects([*unfinished, "model.safetensors"], ignore_patterns=hub_module.IGNORE_PATTERNS))
    assert kept == ["model.safetensors"]
    tree = ast.parse(Path(hub_module.__file__).read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef)) and n.body and isinstance(n.body[0], ast.Expr)
    }
    spelled = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        if "tmp" in node.value or "lock" in node.value
    ]
    assert spelled == [], f"artifacts/hub.py spells RunDir's names: {spelled}"
