"""The operator's guide, its Chinese translation and the README stay true to the product: every
chart value is documented with its default, every script and subcommand they name exists, and
the translation keeps the guide's structure and commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartlib import CHART, ROOT

GUIDE = ROOT / "OFFLINE-IMAGES.md"
GUIDE_ZH = ROOT / "OFFLINE-IMAGES.zh-CN.md"
README = ROOT / "README.md"

# The heading of the values reference in each guide.
VALUES_HEADING = {GUIDE: "Values reference", GUIDE_ZH: "values 参考"}

FENCE = re.compile(r"^\s*(```|~~~)")
# A key's segments may hold dots and slashes, as a label key does (nodeSelector.kubernetes.io/os).
TABLE_KEY_ROW = re.compile(r"^\|\s*`(imagePull(?:\.[A-Za-z0-9_./-]+)*)`\s*\|\s*([^|]*?)\s*\|")
SCRIPT = re.compile(r"\bscripts/[A-Za-z0-9_.-]+\.sh\b")
SUBCOMMAND = re.compile(r"\boffline-images ([a-z][a-z-]*)\b")
INLINE_CODE = re.compile(r"`([^`\n]+)`")


# ---- reading the documents -----------------------------------------------------------------


def lines_outside_code(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside fenced code blocks."""
    out, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            out.append(line)
    return out


def code_blocks(text: str) -> list[str]:
    """Every fenced code block, with its info string, in order."""
    blocks, current = [], None
    for line in text.splitlines():
        if FENCE.match(line):
            if current is None:
                current = [line.strip()]
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    assert current is None, "a code block is not closed"
    return blocks


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every Markdown heading outside code blocks."""
    found = []
    for line in lines_outside_code(text):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            found.append((len(m.group(1)), m.group(2)))
    return found


def section(text: str, title: str) -> list[str]:
    """The lines (outside code) of the section whose heading contains `title`, up to the next
    heading of the same or a higher level."""
    lines = lines_outside_code(text)
    for i, line in enumerate(lines):
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m and title in m.group(2):
            level = len(m.group(1))
            body = []
            for later in lines[i + 1 :]:
                n = re.match(r"^(#{1,6})\s", later)
                if n and len(n.group(1)) <= level:
                    break
                body.append(later)
            return body
    raise AssertionError(f"no heading containing {title!r}")


def code_text(text: str) -> str:
    """What a reader would type: fenced code blocks and inline code spans, one per line, with
    shell continuation lines joined."""
    parts = [block.split("\n", 1)[1] if "\n" in block else "" for block in code_blocks(text)]
    for line in lines_outside_code(text):
        parts.extend(INLINE_CODE.findall(line))
    return "\n".join(parts).replace("\\\n", " ")


def values_table(path: Path) -> dict[str, str]:
    """Key -> default cell of the values reference table of a guide."""
    rows: dict[str, str] = {}
    for line in section(path.read_text(), VALUES_HEADING[path]):
        m = TABLE_KEY_ROW.match(line)
        if m:
            key, default = m.groups()
            assert key not in rows, f"{path.name}: {key} is documented twice"
            rows[key] = default
    return rows


# ---- the chart's values ----------------------------------------------------------------------


def value_keys(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Every key under `prefix`, walked recursively: maps with keys of their own are listed
    (value None here) and descended into; everything else is a leaf with its default."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            out[path] = _MAP
            out.update(value_keys(value, path))
        else:
            out[path] = value
    return out


_MAP = object()


def chart_values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return {"imagePull": _MAP, **value_keys(values["imagePull"], "imagePull")}


def shown_default(value: Any) -> str:
    """A default as the values reference writes it, in backticks: YAML scalars as YAML would
    read them back, strings that YAML would read as something else quoted, lists and empty
    maps in flow style."""
    if isinstance(value, str):
        if value == "" or yaml.safe_load(value) != value:
            return f"`{json.dumps(value)}`"
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


# ---- the values reference ----------------------------------------------------------------------


@pytest.mark.parametrize("guide", [GUIDE, GUIDE_ZH], ids=lambda p: p.name)
def test_the_values_reference_documents_every_key_of_values_yaml(guide: Path):
    documented = values_table(guide)
    missing = [key for key in chart_values() if key not in documented]
    assert not missing, f"{guide.name}: values reference misses {missing}"


@pytest.mark.parametrize("guide", [GUIDE, GUIDE_ZH], ids=lambda p: p.name)
def test_the_values_reference_documents_no_key_the_chart_does_not_have(guide: Path):
    stale = [key for key in values_table(guide) if key not in chart_values()]
    assert not stale, f"{guide.name}: values reference documents keys values.yaml lacks: {stale}"


@pytest.mark.parametrize("guide", [GUIDE, GUIDE_ZH], ids=lambda p: p.name)
def test_the_values_reference_gives_each_default_as_values_yaml_has_it(guide: Path):
    documented = values_table(guide)
    wrong = {
        key: (documented[key], shown_default(value))
        for key, value in chart_values().items()
        if value is not _MAP and key in documented and documented[key] != shown_default(value)
    }
    assert not wrong, f"{guide.name}: documented default != values.yaml (doc, chart): {wrong}"


def test_a_key_missing_from_the_reference_is_noticed(tmp_path: Path):
    """The check above would catch a new value: a table without one row misses that key."""
    rows = values_table(GUIDE)
    assert "imagePull.hook.weight" in rows
    del rows["imagePull.hook.weight"]
    assert [key for key in chart_values() if key not in rows] == ["imagePull.hook.weight"]


# ---- the translation ---------------------------------------------------------------------------


def test_the_chinese_guide_has_the_same_sections_in_the_same_order():
    en = [level for level, _ in headings(GUIDE.read_text())]
    zh = [level for level, _ in headings(GUIDE_ZH.read_text())]
    assert len(en) == len(zh), f"{len(en)} sections in {GUIDE.name}, {len(zh)} in {GUIDE_ZH.name}"
    assert en == zh, "the heading levels differ in order"


def test_the_chinese_guide_has_the_same_code_blocks_and_commands():
    en, zh = code_blocks(GUIDE.read_text()), code_blocks(GUIDE_ZH.read_text())
    assert len(en) == len(zh), f"{len(en)} code blocks in {GUIDE.name}, {len(zh)} in {GUIDE_ZH.name}"
    for i, (a, b) in enumerate(zip(en, zh)):
        assert a == b, f"code block {i + 1} differs:\n{a}\n---\n{b}"


def test_the_chinese_values_table_has_the_same_defaults():
    assert values_table(GUIDE_ZH) == values_table(GUIDE)


# ---- scripts and subcommands the documents name ------------------------------------------------

DOCUMENTS = [README, GUIDE, GUIDE_ZH]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_every_script_named_exists_and_is_executable(doc: Path):
    scripts = sorted(set(SCRIPT.findall(doc.read_text())))
    if doc == README:
        assert "scripts/quickstart.sh" in scripts and "scripts/test.sh" in scripts
    bad = [s for s in scripts if not (ROOT / s).is_file() or not os.access(ROOT / s, os.X_OK)]
    assert not bad, f"{doc.name} names scripts that are missing or not executable: {bad}"


def binary() -> str:
    path = os.environ.get("OI_STATIC_BIN")
    if not path:
        pytest.skip("OI_STATIC_BIN is not set: run through scripts/test.sh")
    return path


def help_text(*args: str) -> str:
    done = subprocess.run([binary(), *args, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def subcommands() -> set[str]:
    text = help_text()
    block = text.split("Commands:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^\s{2}([a-z][a-z-]*)\s", block, re.M)} - {"help"}


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_every_subcommand_named_is_in_the_binarys_help(doc: Path):
    named = set(SUBCOMMAND.findall(code_text(doc.read_text())))
    if doc == README:
        assert {"export", "import"} <= named, named
    unknown = sorted(named - subcommands())
    assert not unknown, f"{doc.name} names subcommands offline-images does not have: {unknown}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_every_flag_given_to_a_subcommand_is_in_its_help(doc: Path):
    known = subcommands()
    wrong = []
    for line in code_text(doc.read_text()).splitlines():
        for m in SUBCOMMAND.finditer(line):
            sub = m.group(1)
            if sub not in known:
                continue
            # The flags up to the end of the command (a pipe, `;`, `&&` or a comment ends it).
            rest = re.split(r"\s(?:\||;|&&|#)\s?", line[m.end() :])[0]
            flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest))
            usage = help_text(sub)
            wrong += [f"{sub} {flag}" for flag in sorted(flags) if not re.search(rf"{flag}\b", usage)]
    assert not wrong, f"{doc.name} gives flags the binary does not know: {sorted(set(wrong))}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file_of_the_repository(doc: Path):
    links = re.findall(r"\]\(([^)\s]+)\)", "\n".join(lines_outside_code(doc.read_text())))
    files = [link.split("#", 1)[0] for link in links if not re.match(r"[a-z]+:|#", link)]
    missing = [f for f in files if not (doc.parent / f).exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", [GUIDE, GUIDE_ZH], ids=lambda p: p.name)
def test_every_link_inside_a_guide_points_to_one_of_its_headings(doc: Path):
    text = doc.read_text()
    anchors = {slug(title) for _, title in headings(text)}
    links = re.findall(r"\]\(#([^)\s]+)\)", "\n".join(lines_outside_code(text)))
    assert links, f"{doc.name} has no links to its own sections"
    broken = [link for link in links if link not in anchors]
    assert not broken, f"{doc.name} links to sections it does not have: {broken}"


def test_the_readmes_exit_codes_give_exit_1_for_an_image_missing_without_strict():
    """Finding: the README's exit codes left out the Job's most common exit 1, an image MISSING
    after the run without --strict (the guide's table has it)."""
    text = " ".join(lines_outside_code(README.read_text()))
    sentence = re.search(r"Exit codes: 0 (.*?) 2 usage", text)
    assert sentence, "the README has no 'Exit codes: 0 ... 2 usage' sentence"
    one = sentence.group(1)
    assert re.search(r"\bMISSING\b", one) and "without `--strict`" in one, one
