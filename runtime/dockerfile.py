"""Dockerfiles as docker's builder reads them: instructions, FROM lines with ARG expansion, and rewriting.

Enough of the format to find and replace base images: parser directives (``# escape=``), comments, line
continuations, ``ARG`` before the first ``FROM`` (defaults, build-arg overrides, ``$X``, ``${X}``,
``${X:-word}``, ``${X:+word}``), ``FROM [--platform=P] IMAGE [AS NAME]``, references to earlier stages, and
``COPY --from=``. Everything else is passed to the engine untouched; its parser reports other errors.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

AUTOMATIC_PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS",
                           "BUILDARCH", "BUILDVARIANT")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuations joined
    first_line: int  # 0-based physical lines it spans
    last_line: int


@dataclass
class Stage:
    """One ``FROM``: the image as written, after ARG expansion, its flags and stage name."""

    index: int
    instruction: Instruction
    image: str
    resolved: str
    name: str | None
    platform: str | None
    flags: list[str] = field(default_factory=list)  # flags other than --platform, as written
    from_stage: bool = False  # ``FROM <earlier stage name>``

    @property
    def external(self) -> bool:
        """An image that must come from the engine or a registry (not a stage, not ``scratch``)."""
        return not self.from_stage and self.resolved.lower() != "scratch"


@dataclass
class Dockerfile:
    text: str
    lines: list[str]
    instructions: list[Instruction]
    meta_args: dict[str, str]  # ARGs before the first FROM, after build-arg overrides
    stages: list[Stage]
    declared_args: set[str]  # every ARG name anywhere
    copy_from: list[tuple[Instruction, str]]  # COPY --from=X with X neither a stage name nor an index


def parse(text: str, build_args: dict[str, str] | None = None) -> Dockerfile:
    """Instructions, stages and meta ARGs of a Dockerfile (``build_args`` override ARG defaults)."""
    lines = text.splitlines()
    escape = "\\"
    start = 0
    for i, line in enumerate(lines):  # parser directives: only at the very top, before anything else
        m = _DIRECTIVE.match(line.strip())
        if not m:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)
        start = i + 1
    instructions = _instructions(lines, start, escape)
    build_args = build_args or {}
    meta: dict[str, str] = {}
    declared: set[str] = set()
    stages: list[Stage] = []
    copy_from: list[tuple[Instruction, str]] = []
    for ins in instructions:
        if ins.keyword == "ARG":
            for name, default in _arg_pairs(ins.args):
                declared.add(name)
                if not stages:
                    value = build_args.get(name, expand(default, meta) if default is not None else None)
                    if value is not None:
                        meta[name] = value
        elif ins.keyword == "FROM":
            stages.append(_stage(len(stages), ins, meta, stages))
        elif ins.keyword == "COPY":
            for word in ins.args.split():
                if not word.startswith("--"):
                    break
                if word.startswith("--from="):
                    ref = expand(word[len("--from="):], meta)
                    names = {s.name.lower() for s in stages if s.name}
                    if ref.lower() not in names and not ref.isdigit():
                        copy_from.append((ins, ref))
    return Dockerfile(text, lines, instructions, meta, stages, declared, copy_from)


def _instructions(lines: list[str], start: int, escape: str) -> list[Instruction]:
    out: list[Instruction] = []
    buf: list[str] = []
    first = None
    for i in range(start, len(lines)):
        raw = lines[i]
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue  # comments vanish, even inside a continued instruction
        if not stripped:
            continue  # empty lines (also inside a continuation) are skipped
        if first is None:
            first = i
        body = raw.rstrip()
        if body.endswith(escape):
            buf.append(body[: -len(escape)])
            continue
        buf.append(body)
        out.append(_instruction("".join(buf), first, i))
        buf, first = [], None
    if buf and first is not None:  # a continuation at the end of the file
        out.append(_instruction("".join(buf), first, len(lines) - 1))
    return out


def _instruction(logical: str, first: int, last: int) -> Instruction:
    keyword, _, args = logical.strip().replace("\t", " ", 1).partition(" ")
    return Instruction(keyword.upper(), args.strip(), first, last)


def _arg_pairs(args: str) -> list[tuple[str, str | None]]:
    try:
        words = shlex.split(args, posix=True)
    except ValueError:
        words = args.split()
    pairs = []
    for w in words:
        name, sep, value = w.partition("=")
        pairs.append((name, value if sep else None))
    return pairs


def _stage(index: int, ins: Instruction, meta: dict[str, str], earlier: list[Stage]) -> Stage:
    words = ins.args.split()
    flags, platform = [], None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--platform="):
            platform = flag[len("--platform="):]
        else:
            flags.append(flag)
    image = words[0] if words else ""
    name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
    resolved = expand(image, meta)
    names = {s.name.lower() for s in earlier if s.name}
    return Stage(index, ins, image, resolved, name, platform, flags, from_stage=resolved.lower() in names)


def expand(word: str, env: dict[str, str]) -> str:
    """``$X``, ``${X}``, ``${X:-default}``, ``${X:+alternative}`` from ``env``; unset names expand to ""."""

    def sub(m: re.Match) -> str:
        name = m.group("braced") or m.group("plain")
        value = env.get(name, "")
        op = m.group("op")
        if op == "-":
            return value or m.group("word")
        if op == "+":
            return m.group("word") if value else ""
        return value

    return _VAR.sub(sub, word)


def rewrite(df: Dockerfile, images: dict[int, str], drop_platform: set[int]) -> str:
    """The Dockerfile with stage ``i``'s image replaced by ``images[i]`` and ``--platform`` dropped from
    the stages in ``drop_platform``; every other line stays as written."""
    lines = list(df.lines)
    for stage in sorted(df.stages, key=lambda s: s.instruction.first_line, reverse=True):
        if stage.index not in images and stage.index not in drop_platform:
            continue
        image = images.get(stage.index, stage.image)
        words = ["FROM", *stage.flags]
        if stage.platform is not None and stage.index not in drop_platform:
            words.append(f"--platform={stage.platform}")
        words.append(image)
        if stage.name:
            words += ["AS", stage.name]
        ins = stage.instruction
        lines[ins.first_line: ins.last_line + 1] = [" ".join(words)]
    return "\n".join(lines) + "\n"


def registry_address(ref: str) -> tuple[str, int]:
    """(host, port) of the registry an image reference is pulled from (Docker Hub for plain names)."""
    name = ref.split("@", 1)[0]
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host = first
    else:
        host = "registry-1.docker.io"
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
    host, _, port = host.partition(":")
    return host, int(port) if port.isdigit() else 443
