"""Every code block of README.md and docs/**/*.md runs, against a private server.

The convention the pages follow (see CONTRIBUTING notes in docs/development.md):

- A ```python block is a complete script: its own imports, no undefined names, quick to
  finish. It addresses Redis as ``localhost:6379`` / ``127.0.0.1:6379`` (in a URL) or
  ``port=6379``; this collector rewrites that to a private ``redis-server`` started for
  the run, so a snippet never touches a server it did not name. It runs in a subprocess
  from an empty temporary directory and must exit 0. Every block is also type-checked
  with ``mypy --strict`` (plus ``--untyped-calls-exclude=redis``, as docs/typing.md
  advises), all of them in one mypy run.
- A ```python block made only of include lines (``--8<-- "examples/NAME.py"``) shows an
  example file; the example itself is run (and type-checked) by CI, so the block is only
  checked to name a file that exists.
- In a ```console block, every ``$ redispool ...`` line runs (address rewritten the same
  way) and must exit 0; the lines after it are sample output and are not compared. Other
  ``$`` lines and ```bash blocks are not run.

New pages are picked up without touching this file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from redispool._server import RedisServer

from .support import private_server

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)")
INCLUDE = re.compile(r"""^--8<--\s+["'](?P<path>[^"']+)["']\s*$""")
# The one address snippets may use, in the forms they may spell it.
ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):6379\b")
PORT_KEYWORD = re.compile(r"\bport\s*=\s*6379\b")
SNIPPET_TIMEOUT = 120


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def includes(self) -> list[str]:
        """The files of an include-only block; empty for a block with real code."""
        lines = [line.strip() for line in self.code.splitlines() if line.strip()]
        found = [INCLUDE.match(line) for line in lines]
        if lines and all(found):
            return [match.group("path") for match in found if match]
        return []


def fenced_blocks(page: Path) -> Iterator[Block]:
    """Fenced code blocks, also those indented inside list items (indent removed)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.group("indent"), opening.group("fence"), opening.group("lang")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        yield Block(page, i + 1, lang.lower(), "\n".join(body) + "\n")
        i = j + 1


BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
PYTHON = [b for b in BLOCKS if b.lang in ("python", "py") and not b.includes]
INCLUDES = [b for b in BLOCKS if b.lang in ("python", "py") and b.includes]
COMMANDS = [
    (block, number, line.strip()[2:])
    for block in BLOCKS
    if block.lang == "console"
    for number, line in enumerate(block.code.splitlines(), start=1)
    if line.strip().startswith("$ redispool ")
]


def retarget(text: str, port: int) -> str:
    """Point a snippet's ``localhost:6379`` at the private server."""
    return PORT_KEYWORD.sub(f"port={port}", ADDRESS.sub(f"127.0.0.1:{port}", text))


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    # Always a private server, never REDIS_URL: snippets write keys and SELECT databases.
    with private_server() as running:
        yield running


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTHONPATH")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=SNIPPET_TIMEOUT)


def test_the_pages_have_blocks_to_run() -> None:
    # A parser that finds nothing would make every test below vanish: that must fail.
    assert len(PYTHON) >= 10, [b.id for b in BLOCKS]


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_block_runs(block: Block, server: RedisServer, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(retarget(block.code, server.port), encoding="utf-8")
    result = run([sys.executable, str(script)], cwd=tmp_path)
    assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("block", INCLUDES, ids=lambda b: b.id)
def test_included_example_exists(block: Block) -> None:
    for path in block.includes:
        assert (ROOT / path).is_file(), f"{block.id} includes {path}, which does not exist"
        assert path.startswith("examples/"), f"{block.id}: include runnable files from examples/ only"


@pytest.mark.parametrize(("block", "number", "command"), COMMANDS, ids=lambda v: getattr(v, "id", None))
def test_console_command_runs(
    block: Block, number: int, command: str, server: RedisServer, tmp_path: Path
) -> None:
    argv = shlex.split(retarget(command, server.port), comments=True)
    result = run([sys.executable, "-m", "redispool", *argv[1:]], cwd=tmp_path)
    where = f"{block.id} (+{number}) `{command}`"
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
def test_python_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for n, block in enumerate(PYTHON):
        # One module per block, named after where it comes from, so mypy's messages say.
        stem = re.sub(r"\W", "_", block.id)
        path = tmp_path / f"snippet_{n:03d}_{stem}.py"
        path.write_text(block.code, encoding="utf-8")
        files.append(str(path))
    config = str(ROOT / "pyproject.toml")
    result = run(
        # As docs/typing.md advises users: redis-py leaves some of its API unannotated
        # (Sentinel, Connection's methods), which --strict would otherwise report at every call.
        # redispool itself is checked on its own (mypy --strict redispool): silent here.
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--untyped-calls-exclude=redis",
            "--follow-imports=silent",
            "--config-file",
            config,
            *files,
        ],
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
