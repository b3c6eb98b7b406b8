"""The shell examples of the Markdown documents: every ```sh block, where it is, whether
it says why it is not run, and the commands in it.

A block is not run when the line before its fence is ``<!-- not run: REASON -->``. A
document whose examples go on from the README's (they use its settings and its
database) says ``<!-- run after: README.md -->`` on a line of its own.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Fence languages that mean a shell: none of them escapes the test.
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
NOT_RUN = re.compile(r"^<!-- not run: (?P<reason>\S.*?) -->$")
RUN_AFTER = re.compile(r"^<!-- run after: (?P<doc>\S+) -->$", re.M)
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Command:
    """One command of a block as a shell reads it (continued lines joined)."""

    text: str
    doc: str
    line: int

    @property
    def where(self) -> str:
        """``README.md:93``."""
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Block:
    """A shell block: its document, the line of its fence, its text and why it is not run."""

    doc: str
    line: int
    text: str
    not_run: str | None

    def commands(self) -> list[Command]:
        """The block's commands, each starting at its first line."""
        found: list[Command] = []
        pending: list[str] = []
        for number, line in enumerate(self.text.splitlines(), start=self.line + 1):
            if not pending and not line.strip():
                continue
            pending.append(line)
            if _complete("\n".join(pending)):
                found.append(Command("\n".join(pending), self.doc, number - len(pending) + 1))
                pending = []
        assert not pending, f"{self.doc}:{self.line}: the block ends inside a command"
        return found


def _complete(text: str) -> bool:
    """Whether ``text`` is whole: no open quote, no trailing backslash."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def documents() -> list[Path]:
    """README.md, then every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def name_of(path: Path) -> str:
    """The document's path from the checkout's root."""
    return str(path.relative_to(ROOT))


def shell_blocks(path: Path) -> list[Block]:
    """Every shell block of one document, in order."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    inside: tuple[int, str, str | None] | None = None
    body: list[str] = []
    previous = ""
    for number, line in enumerate(lines, start=1):
        fence = FENCE.match(line)
        if inside is not None:
            if line.startswith("```"):
                start, lang, reason = inside
                if lang in SHELLS:
                    blocks.append(Block(name_of(path), start, "\n".join(body), reason))
                inside, body = None, []
            else:
                body.append(line)
        elif fence:
            marker = NOT_RUN.match(previous)
            inside = (number, fence["lang"], marker["reason"] if marker else None)
        if line.strip():
            previous = line.strip()
    return blocks


def run_after(path: Path) -> str | None:
    """The document this one's examples go on from, if it says so."""
    found = RUN_AFTER.search(path.read_text())
    return found["doc"] if found else None
