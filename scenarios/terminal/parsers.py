"""Test-output parsers of Terminal-Bench 1.x (``parser_name`` in task.yaml).

``pytest``: the part after pytest's ``short test summary info`` line (``pytest -rA``), one
``STATUS path::test [- reason]`` line per test. PASSED, SKIPPED and XFAIL count as passed; FAILED, ERROR
and XPASS as failed (the terminal-bench package's PytestParser does the same). No summary section is a
parse error. A task's ``run-tests.sh`` may print these lines itself (the bundled tasks do, in bash: their
images have no pytest), the format is the contract.
"""
from __future__ import annotations

import re

PASSED, FAILED = "passed", "failed"
_SUMMARY = re.compile(r"=+\s*short test summary info\s*=+", re.IGNORECASE)
_STATUS = {"PASSED": PASSED, "SKIPPED": PASSED, "XFAIL": PASSED, "FAILED": FAILED, "ERROR": FAILED, "XPASS": FAILED}


class ParseError(ValueError):
    pass


def parse_pytest(output: str) -> dict[str, str]:
    """Test name (the part after ``::``) -> passed | failed; ParseError without a summary section."""
    parts = _SUMMARY.split(output, maxsplit=1)
    if len(parts) < 2:
        raise ParseError("no 'short test summary info' section in the test output")
    results: dict[str, str] = {}
    for line in parts[1].splitlines():
        if line.startswith("FAILED") and " - " in line:
            line = line.rsplit(" - ", 1)[0]  # the failure's reason (may itself hold "::")
        fields = line.split(maxsplit=1)
        if len(fields) < 2:
            continue
        status = fields[0].strip().strip(":")
        if status not in _STATUS:
            continue
        target = fields[1].strip()
        name = target.split("::", 1)[-1].strip()
        if name:
            results[name] = _STATUS[status]
    return results


PARSERS = {"pytest": parse_pytest}
