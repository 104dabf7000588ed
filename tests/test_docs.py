"""The README and docs/ stay true where a machine can tell: the README stays a landing page (at most
16 KB, linking every page of docs/), every relative link and anchor in them leads somewhere, and the
complete config in docs/configuration.md is what `hf-transfer config` prints (its defaults drifted once:
the README showed linear_probe / 10 epochs while the code said full / 3)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted([README, *DOCS.glob("*.md")])
README_LIMIT = 16 * 1024  # bytes: a landing page; reference belongs in docs/
CONFIG_PAGE = DOCS / "configuration.md"
GENERATED = "<!-- generated: hf-transfer config -->"

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """Markdown without its code blocks and code spans, where a `[x](y)` is code, not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """The ids GitHub gives a page's headings: lower case, punctuation dropped (letters, digits, '_',
    '-' and spaces kept), spaces as '-'; a repeated id gets -1, -2, ..."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", plain.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text())) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_link(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, leads nowhere; None when it resolves."""
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return f"{dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
        return f"{dest.name} has no heading with the id #{anchor}"
    return None


def test_the_anchors_are_githubs():
    text = (
        "# The engine\n## What a run writes (`output_dir/`)\n## `lp_ft`: probe, then fine-tune\n## Suite — 2026-12-03\n"
    )
    text += "## Speed\n## Speed\n```\n# not a heading\n```\n"
    assert anchors(text) == {
        "the-engine",
        "what-a-run-writes-output_dir",
        "lp_ft-probe-then-fine-tune",
        "suite--2026-12-03",
        "speed",
        "speed-1",
    }


def test_links_in_code_are_not_links():
    page = "A [real](a.md) link; `[in code](b.md)`.\n```\n[in a block](c.md)\n```\n[web](https://x.org) [here](#h)\n"
    assert LINK.findall(_prose(page)) == ["a.md", "https://x.org", "#h"]


def test_a_missing_page_or_heading_is_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# A\n## Two words\n")
    page = tmp_path / "b.md"
    page.write_text("# B\n")
    assert broken_link(page, "a.md#two-words") is None and broken_link(page, "#b") is None
    assert "has no heading with the id #three" in broken_link(page, "a.md#three")
    assert "does not exist" in broken_link(page, "c.md")
    assert "has no heading" in broken_link(page, "#a")


def test_the_readme_is_a_landing_page():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size:,} bytes (at most {README_LIMIT:,}): move reference into docs/"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = [f"[...]({t}): {why}" for t in relative_links(page) if (why := broken_link(page, t))]
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def _generated_block(text: str) -> str:
    """The fenced YAML block right after the GENERATED marker."""
    assert GENERATED in text, f"{CONFIG_PAGE.name} lost its marker {GENERATED}"
    match = re.match(r"\s*```yaml\n(.*?)^```", text.split(GENERATED, 1)[1], re.DOTALL | re.MULTILINE)
    assert match, f"no ```yaml block right after {GENERATED}"
    return match.group(1)


def _flat(values: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_the_complete_config_shows_the_real_defaults():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    printed = subprocess.run(
        [sys.executable, "-m", "hf_transfer", "config"], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    ).stdout
    real = _flat(yaml.safe_load(printed))
    shown = _flat(yaml.safe_load(_generated_block(CONFIG_PAGE.read_text())))
    wrong = {k: (shown.get(k, "<missing>"), real.get(k, "<not a setting>")) for k in real.keys() | shown.keys()}
    wrong = {k: v for k, v in wrong.items() if v[0] != v[1]}
    assert not wrong, (
        f"{CONFIG_PAGE.relative_to(ROOT)}'s complete config differs from `hf-transfer config` "
        "(key: shown, real); paste the new output there and keep the comments:\n"
        + "\n".join(f"  {k}: {shown!r}, {real!r}" for k, (shown, real) in sorted(wrong.items()))
    )
