"""A Dockerfile parser for the static checks: instructions, grouped into stages."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the line, continuations joined

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD, ENTRYPOINT or HEALTHCHECK CMD, else None."""
        text = (
            re.sub(r"^(--\S+\s+)*(CMD\s+)?", "", self.args)
            if self.keyword == "HEALTHCHECK"
            else self.args
        )
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` flags and the remaining words (COPY, FROM)."""
        flags: dict[str, str] = {}
        words: list[str] = []
        for word in shlex.split(self.args):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(path: Path) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            _, words = instruction.flags_and_words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
        elif instruction.keyword != "ARG":
            raise ValueError(f"{path}: {instruction.keyword} before the first FROM")
    return stages


def run_healthcheck(**env: str) -> int:
    """The images' HEALTHCHECK command (both images have the same), run here as Docker
    would run it in the container; returns its exit status."""
    docker = Path(__file__).resolve().parents[2] / "deploy" / "docker"
    (check,) = {
        tuple(c.exec_form or ())
        for name in ("Dockerfile", "Dockerfile.gpu")
        for c in parse(docker / name)[-1].all("HEALTHCHECK")
    }
    command = [sys.executable, *check[1:]] if check[0] == "python" else list(check)
    done = subprocess.run(command, check=False, env={**os.environ, **env}, timeout=30)
    return done.returncode
