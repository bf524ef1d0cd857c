"""Every `lesionssl` command the documentation shows names a command that exists and flags that
command accepts (declared options, or keys of its configuration, nested ones dotted)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lesionssl.cli import COMMAND_CONFIGS, LesionSSLError, _check_key, cli

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "EVIDENCE.md",
    REPO / "BENCHMARKS.md",
    *sorted((REPO / "examples").glob("*.md")),
]


def documented_commands(path: Path) -> list[list[str]]:
    """The argument lists after ``lesionssl`` (or ``-m lesionssl``) in the file's shell blocks."""
    commands, blocks, block, language = [], [], None, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if block is None:
                block, language = [], line[3:].strip()
            else:
                if language in {"", "bash", "sh", "console"}:
                    blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    for text in blocks:
        for line in text.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # an unbalanced quote inside prose: not a command
                continue
            for start, word in enumerate(words):
                if word == "lesionssl" and (
                    start == 0
                    or words[start - 1] in {"&&", "-m", "nohup", ";", "srun", "time"}
                    or "=" in words[start - 1]
                ):
                    rest = words[start + 1 :]
                    end = next((i for i, w in enumerate(rest) if w in {"&&", ";", "|", ">", "2>&1", "&"}), len(rest))
                    commands.append(rest[:end])
    return commands


def epilog_commands() -> list[tuple[str, list[str]]]:
    """The examples of every command's ``--help`` epilog."""
    cases = []
    for name, command in cli().commands.items():
        text = (command.epilog or "").split("Every key of its YAML")[0]
        for example in text.split("lesionssl ")[1:]:
            words = shlex.split(example.split("(")[0].split("|")[0].strip())
            cases.append((f"help of {name}", words))
    return cases


CASES = [(path.name, args) for path in DOCUMENTS for args in documented_commands(path)] + epilog_commands()


def test_the_documentation_shows_commands():
    assert len([1 for name, _ in CASES if name == "README.md"]) >= 20


@pytest.mark.parametrize(("document", "args"), CASES, ids=[f"{d}:{' '.join(a)[:60]}" for d, a in CASES])
def test_every_documented_command_and_flag_exists(document, args):
    group = cli()
    if not args or args[0].startswith("-"):  # `lesionssl --version`
        assert set(args) <= {"--version", "--help"}, args
        return
    command = group.commands.get(args[0])
    assert command is not None, f"{document}: no command {args[0]!r}"
    declared = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for token in args[1:]:
        if not token.startswith("--"):
            continue
        flag = token.split("=", 1)[0]
        if flag in declared or flag == "--help":
            continue
        model = COMMAND_CONFIGS.get(args[0])
        assert model is not None, f"{document}: `lesionssl {args[0]}` has no option {flag}"
        try:
            _check_key(flag[2:].replace("-", "_").split("."), model, {d[2:] for d in declared})
        except LesionSSLError as exc:
            pytest.fail(f"{document}: `lesionssl {' '.join(args)}`: {exc}")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (outside code blocks; repeats get -1, -2, ...)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,6} ", line):
            base = _slug(line.lstrip("#"))
            slug, n = base, 0
            while slug in found:
                n += 1
                slug = f"{base}-{n}"
            found.add(slug)
    return found


LINKS = [
    (path, target)
    for path in [*DOCUMENTS, *sorted((REPO / "docs").rglob("*.md"))]
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    if not re.match(r"[a-z]+:", target)  # web and mail links are not checked offline
]


@pytest.mark.parametrize(("document", "target"), LINKS, ids=[f"{p.name}:{t[:70]}" for p, t in LINKS])
def test_every_relative_link_and_anchor_resolves(document, target):
    """A renamed heading once left the README's link to EVIDENCE.md's section pointing nowhere."""
    file, _, anchor = target.partition("#")
    linked = (document.parent / file).resolve() if file else document
    assert linked.exists(), f"{document.name}: {target} names no file"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{document.name}: {target} names no heading of {linked.name}"
