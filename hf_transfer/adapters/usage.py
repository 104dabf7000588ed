"""Pieces of the model card's "How to use" code that several adapters share.

Every snippet opens the saved model with its standard loader (no hf-transfer) and runs as printed
once its placeholders are filled in: where the run is published, its Hub id; otherwise `LOCAL_FOLDER`,
the reader's copy of output_dir. A LoRA adapter names its base by Hub id; a base that was never on
the Hub becomes `BASE_PLACEHOLDER`, with a comment saying what to put there.
"""

from __future__ import annotations

LOCAL_FOLDER = "path/to/this/folder"
BASE_PLACEHOLDER = "<path to the base model folder>"
BASE_COMMENT = f"# The base model (named above) was not on the Hub: replace {BASE_PLACEHOLDER} with your copy of it.\n"


def python_block(code: str) -> str:
    return f"```python\n{code}\n```"


def pipeline_code(tag: str, repo_id: str | None) -> str:
    return f'from transformers import pipeline\n\nclassifier = pipeline("{tag}", model="{repo_id or LOCAL_FOLDER}")'


def peft_transformers_code(
    auto_class: str, repo_id: str | None, labels: list[str], base_id: str | None, also_import: str = ""
) -> str:
    """A LoRA adapter over a transformers base: the base re-headed for `labels`, then PeftModel (which
    restores the trained head from the adapter). `also_import`: more names from transformers (", pipeline")."""
    id2label = dict(enumerate(labels))
    return (
        f"from peft import PeftModel\nfrom transformers import {auto_class}{also_import}\n\n"
        + ("" if base_id else BASE_COMMENT)
        + f'base = {auto_class}.from_pretrained(\n    "{base_id or BASE_PLACEHOLDER}", num_labels={len(labels)}, '
        f"id2label={id2label!r}, ignore_mismatched_sizes=True\n)  # the head's weights come from the adapter\n"
        f'model = PeftModel.from_pretrained(base, "{repo_id or LOCAL_FOLDER}")'
    )
