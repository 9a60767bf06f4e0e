"""The docs name what the code has: the bundled purifiers, the commands, and each command's options (shown
required only where they are), so that the next contradiction fails here instead of reaching a user."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from impure.cli import build_parser
from impure.cli.options import PURIFIER_HELP
from impure.hub import bundled_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _commands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_bundled_purifiers_named_in_the_docs_and_the_help_are_the_bundled_ones():
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    listed = re.search(r"bundled_names\(\)` lists them\s*\(`(\[.*?\])`", api, flags=re.S)
    assert listed, "docs/api.md no longer shows what bundled_names() returns"
    assert re.findall(r'"([^"]+)"', listed.group(1)) == bundled_names()
    assert re.findall(r"impure/[\w-]+", PURIFIER_HELP) == bundled_names()


def test_every_command_is_listed_in_the_docs_and_the_readme():
    commands = set(_commands())
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    row = next(line for line in index.splitlines() if line.startswith("| `impure` command"))
    assert set(re.findall(r"`([a-z-]+)`", row.split("|")[2])) == commands
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^\| `impure ([a-z-]+)` \|", cli, flags=re.M)) == commands
    assert set(re.findall(r"^## impure ([a-z-]+)$", cli, flags=re.M)) == commands
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^impure ([a-z-]+)\b", readme, flags=re.M)) == commands


def _synopses() -> dict[str, str]:
    """docs/cli.md: each command's synopsis, the first code block of its section."""
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = re.split(r"^## impure ([a-z-]+)$", cli, flags=re.M)[1:]
    found = {}
    for name, body in zip(sections[::2], sections[1::2], strict=True):
        block = re.search(r"```bash\n(.*?)```", body, flags=re.S)
        if block:
            found[name] = block.group(1)
    return found


@pytest.mark.parametrize("command", sorted(_synopses()))
def test_each_synopsis_shows_real_options_and_brackets_exactly_the_optional_ones(command):
    parser = _commands()[command]
    options = {s: a for a in parser._actions for s in a.option_strings if a.help != argparse.SUPPRESS}
    synopsis = _synopses()[command]
    for match in re.finditer(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", synopsis):
        option = match.group(1)
        assert option in options, f"docs/cli.md shows `impure {command} {option}`, which the command lacks"
        depth = synopsis[:match.start()].count("[") - synopsis[:match.start()].count("]")
        required = options[option].required
        assert required == (depth == 0), (f"docs/cli.md shows {option} of `impure {command}` as "
                                          f"{'required' if depth == 0 else 'optional'}; the command has it "
                                          f"{'required' if required else 'optional'}")
