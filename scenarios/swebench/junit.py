"""The structured half of a verdict: pytest's JUnit XML, read on the host with ``junitparser``.

Test ids are matched the way pytest's junitxml plugin names test cases (``mangle_test_address``): the
path part of ``tests/test_x.py::TestA::test_b[p]`` becomes the dotted class name ``tests.test_x.TestA``,
the last part the name ``test_b[p]``. When a test appears in several test cases (a rerun, or a forged
entry next to the real one), the worst outcome counts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from swebench.harness.constants import TestStatus

_RANK = {TestStatus.PASSED.value: 0, TestStatus.XFAIL.value: 1, TestStatus.SKIPPED.value: 2,
         TestStatus.FAILED.value: 3, TestStatus.ERROR.value: 4}


class JunitError(ValueError):
    """The JUnit file is missing, too large or not JUnit XML."""


@dataclass
class JunitResult:
    status: dict[str, str]  # expected test id -> PASSED / FAILED / ERROR / SKIPPED / XFAIL (found ones only)
    total: int  # test cases in the file
    missing: list[str] = field(default_factory=list)  # expected ids with no test case


def junit_key(test_id: str) -> tuple[str, str]:
    """(classname, name) pytest's junitxml writes for node id ``test_id``."""
    path, bracket, params = test_id.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def parse_junit(data: bytes, expected: list[str]) -> JunitResult:
    """Outcome of each test in ``expected`` according to the JUnit XML ``data``; JunitError if unreadable."""
    from junitparser import Error, Failure, JUnitXml, Skipped

    try:
        xml = JUnitXml.fromstring(data.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 -- lxml/ElementTree parse errors and bad encodings alike
        raise JunitError(f"not readable JUnit XML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    suites = list(xml)  # junitparser wraps a bare <testsuite> root in <testsuites>
    outcome: dict[tuple[str, str], str] = {}
    total = 0
    for suite in suites:
        for case in suite:
            total += 1
            results = case.result
            if any(isinstance(r, Error) for r in results):
                status = TestStatus.ERROR.value
            elif any(isinstance(r, Failure) for r in results):
                status = TestStatus.FAILED.value
            elif any(isinstance(r, Skipped) for r in results):
                xfail = any((r.type or "") == "pytest.xfail" for r in results if isinstance(r, Skipped))
                status = TestStatus.XFAIL.value if xfail else TestStatus.SKIPPED.value
            else:
                status = TestStatus.PASSED.value
            key = (case.classname or "", case.name or "")
            if key not in outcome or _RANK[status] > _RANK[outcome[key]]:
                outcome[key] = status
    status_map, missing = {}, []
    for test_id in expected:
        status = _lookup(test_id, outcome)
        if status is None:
            missing.append(test_id)
        else:
            status_map[test_id] = status
    return JunitResult(status=status_map, total=total, missing=missing)


def _lookup(test_id: str, outcome: dict[tuple[str, str], str]) -> str | None:
    """Exact match; for an id truncated inside its parameters (``test_x[a b]`` logged as ``test_x[a``, as
    in many SWE-bench instances) the test cases it prefixes, when they agree on pass/fail (the rule of
    swebench's ``_resolve_case``); None when absent or ambiguous."""
    key = junit_key(test_id)
    if key in outcome:
        return outcome[key]
    if test_id.count("[") <= test_id.count("]"):
        return None
    found = [s for (cls, name), s in outcome.items() if cls == key[0] and name.startswith(key[1])]
    passing = {s in (TestStatus.PASSED.value, TestStatus.XFAIL.value) for s in found}
    if len(passing) != 1:
        return None
    return max(found, key=_RANK.__getitem__)
