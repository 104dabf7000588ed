"""`python tests/write_audit.py ARGS` runs `hf-transfer ARGS` and records which files this process creates,
replaces or removes under $WRITE_AUDIT_ROOT, one JSON line per event in $WRITE_AUDIT_DIR/rank<RANK>.jsonl.

Python's audit hooks see every `open` for writing, rename, link, copy, mkdir and delete made through Python,
so a multi-process test can tell which rank wrote the run's files (safetensors and torch.save write from
native code and are not seen, but each of their files here is written under a temporary name and renamed).
"""

from __future__ import annotations

import json
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = {"open", "os.rename", "os.link", "os.mkdir", "os.remove", "os.rmdir", "shutil.copyfile", "shutil.rmtree"}


def _writes(event: str, args: tuple) -> bool:
    if event != "open":
        return True
    _, mode, flags = args
    return any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)


def main() -> int:
    root = os.path.realpath(os.environ["WRITE_AUDIT_ROOT"])
    log = open(os.path.join(os.environ["WRITE_AUDIT_DIR"], f"rank{os.environ.get('RANK', '0')}.jsonl"), "a")

    def hook(event: str, args: tuple) -> None:
        if event not in EVENTS or not _writes(event, args):
            return
        paths = [a for a in args if isinstance(a, (str, os.PathLike))]
        ours = [os.fspath(p) for p in paths if os.path.realpath(os.fspath(p)).startswith(root)]
        if ours:
            log.write(json.dumps([event, *ours]) + "\n")
            log.flush()

    sys.addaudithook(hook)
    from hf_transfer.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
