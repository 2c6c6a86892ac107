"""Issue-style problem statements written from an observed test failure, never from the mutation.

Input: the failing tests and their ``--tb=short`` sections. Only frames of the test files and the ``E``
lines are used (frames inside the package would show the mutated line); the text names the module and
the function that misbehaves (a private helper is named by its module only), gives the test's failing
statement as the reproduction and the error as actual vs expected. Templates are picked by a seeded RNG.
"""
from __future__ import annotations

import ast
import random
import re
import textwrap
from pathlib import Path

_SECTION = re.compile(r"^_{3,} (\S.*?) _{3,}$")
_ASSERT_EQ = re.compile(r"^assert (.+?) == (.+)$")


def failure_sections(output: str) -> dict[str, list[str]]:
    """Test name (as pytest prints it in section headers) -> the lines of its failure section."""
    sections, current = {}, None
    in_failures = False
    for line in output.splitlines():
        if line.startswith("=") and ("FAILURES" in line or "ERRORS" in line):
            in_failures = True
            continue
        if line.startswith("=") and in_failures and ("short test summary" in line or "PASSES" in line
                                                     or "warnings summary" in line):
            in_failures = False
            current = None
            continue
        if not in_failures:
            continue
        m = _SECTION.match(line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        if current is not None:
            current.append(line)
    return sections


def evidence(section: list[str], test_file: str) -> dict:
    """The test file's failing statements, the error lines and the exception type (from one section)."""
    statements, errors = [], []
    keep_next = False
    location = None
    for line in section:
        frame = re.match(r"^(\S.*?):(\d+): (in \S+|\w+)$", line)
        if frame:
            keep_next = frame.group(1) == test_file
            if keep_next:
                location = (frame.group(1), int(frame.group(2)))
            continue
        if line.startswith("E   ") or line.startswith("E  ") or line == "E":
            errors.append(line[1:].strip())
            keep_next = False
            continue
        if keep_next and line.startswith("    ") and line.strip() and not re.fullmatch(r"[\s^~]+", line):
            statements.append(line.strip())
    exc = None
    for e in errors:
        m = re.match(r"^([A-Za-z_][\w.]*(Error|Exception|Warning|Exit|Interrupt)):?", e)
        if m:
            exc = m.group(1)
            break
    return {"statements": statements[-3:], "errors": [e for e in errors if e][:8], "exception": exc,
            "location": location}


def failing_excerpt(tree: Path, location: tuple[str, int] | None, max_lines: int = 8) -> list[str]:
    """The failing test's source up to the statement at ``location`` (at most ``max_lines``, dedented);
    empty when the file or the test cannot be found."""
    if not location:
        return []
    path, lineno = location
    try:
        source = (Path(tree) / path).read_text(encoding="utf-8")
        module = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return []
    funcs = [n for n in ast.walk(module) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.lineno <= lineno <= (n.end_lineno or n.lineno)]
    if not funcs:
        return []
    func = min(funcs, key=lambda n: (n.end_lineno or n.lineno) - n.lineno)
    stmts = [n for n in ast.walk(func) if isinstance(n, ast.stmt) and n is not func
             and n.lineno <= lineno <= (n.end_lineno or n.lineno)]
    # the innermost simple statement holding the line (a compound one only when there is none)
    inner = [n for n in stmts if not isinstance(n, (ast.With, ast.For, ast.While, ast.If, ast.Try))] or stmts
    if not inner:
        return []
    target = min(inner, key=lambda n: n.end_lineno - n.lineno)
    if target.end_lineno - target.lineno + 1 > 3 * max_lines:
        return []
    # whole statements before it in the same block, as many as fit in max_lines
    block = next((getattr(n, f) for n in ast.walk(func) for f in ("body", "orelse", "finalbody")
                  if isinstance(getattr(n, f, None), list) and target in getattr(n, f)), [target])
    start = target.lineno
    for prev in reversed(block[:block.index(target)]):
        if target.end_lineno - prev.lineno + 1 > max_lines or (
                isinstance(prev, ast.Expr) and isinstance(prev.value, ast.Constant)):
            break
        start = prev.lineno
    lines = source.splitlines()
    chunk = lines[start - 1:target.end_lineno]
    return textwrap.dedent("\n".join(chunk)).strip("\n").splitlines()


def public_name(module: str, function: str) -> str:
    """``module.function`` for a public function or method; the module alone for private helpers."""
    parts = function.split(".")
    if any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts):
        return module
    return f"{module}.{function}"


def module_name(path: str) -> str:
    p = re.sub(r"\.py$", "", path).removeprefix("src/")
    p = re.sub(r"/__init__$", "", p)
    return p.replace("/", ".")


TITLES = [
    "`{api}` returns a wrong result",
    "Wrong output from `{api}`",
    "Regression in `{api}`",
    "`{api}` misbehaves for some inputs",
    "Unexpected behaviour in `{api}`",
    "Bug: `{api}` does not do what the docs say",
]
EXC_TITLES = [
    "`{api}` raises {exc}",
    "{exc} from `{api}`",
    "Crash ({exc}) in `{api}`",
]
INTROS = [
    "I ran into a problem with `{api}` in {package} {version}.",
    "After upgrading to {package} {version}, `{api}` started behaving incorrectly.",
    "`{api}` gives a result that does not match what it is supposed to return.",
    "Something is off in `{api}`: code that should work fails.",
    "While using {package} I noticed that `{api}` is broken.",
]
REPRO = [
    "Minimal reproduction (taken from the test suite):",
    "To reproduce:",
    "Steps to reproduce:",
    "This reproduces it:",
]
TEST_MENTIONS = [
    "The test suite catches it: `{tests}` fail{s}.",
    "Running the tests shows it: `{tests}` fail{s}.",
    "`{tests}` fail{s} because of this.",
    "",
]
EXC_CLOSINGS = [
    "Expected it to work without raising.",
    "It should not raise here.",
    "Could you take a look?",
    "",
]
CLOSINGS = [
    "Expected the call to behave as documented (and the assertion above to hold).",
    "The expected value is the one the assertion above checks.",
    "It should behave as before; the other tests pass.",
    "Could you take a look?",
    "",
]


def statement(seed: str, package: str, version: str, module: str, function: str, f2p: list[str],
              sections: dict[str, list[str]], tree: Path | None = None) -> str:
    """The problem statement of one synthesized instance (deterministic for a ``seed``)."""
    rng = random.Random(seed)
    api = public_name(module, function)
    ev = {"statements": [], "errors": [], "exception": None}
    for test in f2p:
        name = test.split("::")[-1]
        sec = sections.get(name) or sections.get(test.split("::", 1)[-1].replace("::", "."))
        if sec:
            ev = evidence(sec, test.split("::")[0])
            if ev["statements"] or ev["errors"]:
                break
    exc = ev["exception"] if ev["exception"] not in (None, "AssertionError") else None
    title = rng.choice(EXC_TITLES).format(api=api, exc=exc) if exc else rng.choice(TITLES).format(api=api)
    parts = [title, "", rng.choice(INTROS).format(api=api, package=package, version=version)]
    excerpt = failing_excerpt(tree, ev.get("location")) if tree is not None else []
    repro = excerpt or ev["statements"]
    if repro:
        parts += ["", rng.choice(REPRO), "", "```python", *repro, "```"]
    if ev["errors"]:
        eq = _ASSERT_EQ.match(ev["errors"][0])
        if eq and rng.random() < 0.5:
            parts += ["", f"Actual: `{eq.group(1)}`", f"Expected: `{eq.group(2)}`"]
        else:
            parts += ["", rng.choice(["Output:", "What I get:", "The error:", "Result:"]), "", "```",
                      *ev["errors"], "```"]
    mention = rng.choice(TEST_MENTIONS)
    if mention:
        shown = f2p[:3]
        parts += ["", mention.format(tests="`, `".join(shown), s="" if len(shown) > 1 else "s")]
    closing = rng.choice(EXC_CLOSINGS if exc else CLOSINGS)
    if closing:
        parts += ["", closing]
    return "\n".join(parts).strip() + "\n"
