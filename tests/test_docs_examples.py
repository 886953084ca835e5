"""Every example in README.md and docs/*.md runs as written, and prints what the page shows.

Each page is run top to bottom in a fresh workspace: a copy of the repository's ``pricing.yaml``
and ``docs/`` (so ``docs/examples/...`` paths work), made a git repository (so ``git show
HEAD:pricing.yaml`` works), with a private HOME and data directory (so the default ledger is the
workspace's own). Two kinds of fenced block take part:

- a block whose first line is a comment naming a file (``# plan.py``, ``# falbudget.yaml``;
  ``#`` for Python, shell and YAML) is written to that file in the workspace, as the page tells
  the reader to do;
- a block whose first line starts with ``$ `` is a shell transcript. Its commands run in order in
  bash with stderr joined to stdout, and the output must equal the lines the page shows below each
  command (``...`` in the page stands for any text, as in doctest's ELLIPSIS, for times and ids).
  A transcript with no output lines at all lists commands only: each must exit 0, or the code a
  trailing ``# exit N`` comment names.

A block right after ``<!-- docs-test: not run (REASON) -->`` is left out; the reasons are listed in
``test_blocks_left_out_say_why`` so a reader of the test sees each one.
"""

from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(
    r"^(?:<!-- docs-test: not run \((?P<why>[^)]*)\) -->\n)?"
    r"```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$",
    re.M | re.S,
)
FILE_HEADER = re.compile(r"^#\s+(?P<name>[\w./-]+\.(?:py|ya?ml|jsonl?|csv|sh|txt))\b")
EXIT_COMMENT = re.compile(r"#\s*exit (\d+)\b")
CHECKER = doctest.OutputChecker()


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    left_out: str | None


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(
            page,
            text.count("\n", 0, m.start("body")) + 1,
            m.group("lang"),
            m.group("body"),
            m.group("why"),
        )
        for m in FENCE.finditer(text)
    ]


def transcript(body: str) -> list[tuple[str, list[str]]]:
    """The ``$`` commands of a transcript with the output lines shown under each."""
    steps: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + "\n" + lines[i]
            steps.append((command, []))
        elif steps:
            steps[-1][1].append(line)
        i += 1
    return steps


def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "pricing.yaml", work / "pricing.yaml")
    shutil.copytree(ROOT / "docs", work / "docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALBUDGET_", "FAL_"))}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        COLUMNS="100",
        GIT_AUTHOR_NAME="docs",
        GIT_AUTHOR_EMAIL="docs@example.com",
        GIT_COMMITTER_NAME="docs",
        GIT_COMMITTER_EMAIL="docs@example.com",
    )
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "docs"]):
        subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return work, env


def run_transcript(block: Block, work: Path, env: dict[str, str]) -> str | None:
    """None when the block runs as the page shows, else what differs."""
    steps = transcript(block.body)
    commands_only = all(not output for _, output in steps)
    script = ["__rc=0"]
    for command, _ in steps:
        script.append(f"printf '%s\\n' {shlex_quote('$ ' + command)}")
        script.append(f"(exit $__rc); {{ {command}\n}} 2>&1; __rc=$?")
        if commands_only:
            script.append('printf "[exit %d]\\n" "$__rc"')
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    got = done.stdout + done.stderr
    if commands_only:
        codes = [int(m) for m in re.findall(r"^\[exit (\d+)\]$", got, re.M)]
        wanted = [
            int(m.group(1)) if (m := EXIT_COMMENT.search(command)) else 0 for command, _ in steps
        ]
        return None if codes == wanted else f"exit codes {codes}, page says {wanted}:\n{got}"
    want = block.body if block.body.endswith("\n") else block.body + "\n"
    if CHECKER.check_output(want, got, doctest.ELLIPSIS):
        return None
    return CHECKER.output_difference(doctest.Example("", want), got, doctest.ELLIPSIS)


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    work, env = workspace(tmp_path)
    failures = []
    ran = 0
    for block in blocks(page):
        if block.left_out is not None:
            continue
        first = block.body.split("\n", 1)[0]
        if named := FILE_HEADER.match(first):
            target = work / named.group("name")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body, encoding="utf-8")
        elif first.startswith("$ "):
            ran += 1
            problem = run_transcript(block, work, env)
            if problem is not None:
                failures.append(f"{page.name}:{block.line}:\n{problem}")
    assert not failures, f"{ran} transcripts run; these differ:\n\n" + "\n\n".join(failures)


def test_blocks_left_out_say_why() -> None:
    left_out = [(b.page.name, b.line, b.left_out) for p in PAGES for b in blocks(p) if b.left_out]
    for name, line, why in left_out:
        assert why and why.strip(), f"{name}:{line}: a block left out must say why"


def test_the_parser_reads_a_transcript() -> None:
    body = "$ echo a \\\n  b\na b\n$ false   # exit 1\n"
    assert transcript(body) == [("echo a \n  b", ["a b"]), ("false   # exit 1", [])]


TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def test_every_test_the_guard_promises_name_exists() -> None:
    """docs/guard.md "What the guard promises" names the test behind each promise: each file and
    test function it names exists, so a renamed or deleted test cannot leave a promise unbacked."""
    text = (ROOT / "docs" / "guard.md").read_text(encoding="utf-8")
    section = text.split("## What the guard promises", 1)[1].split("\n## ", 1)[0]
    references = TEST_REFERENCE.findall(section)
    assert len(references) >= 40, references
    for path, name in references:
        source = (ROOT / path).read_text(encoding="utf-8")
        if name:
            assert re.search(rf"^(?:async )?def {name}\(", source, re.M), f"{path}::{name}"
