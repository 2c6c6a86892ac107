"""pytest plugin run inside the sandbox (``-p nano_trace``): which source lines each test file executes.

Standard library and pytest only. ``NANO_TRACE_FILES``: a file listing the source files to watch (absolute
paths, one a line); ``NANO_TRACE_OUT``: where the JSON result goes:
``{"lines": {test_file: {source_file: [line, ...]}}, "seconds": {test_file: s}}``. Tracing is
``sys.settrace`` with a global function that returns a local tracer only for frames of watched files,
so code outside them runs at full speed.
"""
import json
import os
import sys
import threading

import pytest

_watched: set = set()
_current: set = set()
_lines: dict = {}
_seconds: dict = {}


def _local(frame, event, arg):
    if event == "line":
        _current.add((frame.f_code.co_filename, frame.f_lineno))
    return _local


def _global(frame, event, arg):
    if frame.f_code.co_filename in _watched:
        _current.add((frame.f_code.co_filename, frame.f_lineno))
        return _local
    return None


def pytest_configure(config):
    path = os.environ.get("NANO_TRACE_FILES")
    if path:
        with open(path) as f:
            _watched.update(line.strip() for line in f if line.strip())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _current
    _current = set()
    sys.settrace(_global)
    threading.settrace(_global)
    try:
        yield
    finally:
        sys.settrace(None)
        threading.settrace(None)
    per_file = _lines.setdefault(item.nodeid.split("::")[0], {})
    for filename, lineno in _current:
        per_file.setdefault(filename, set()).add(lineno)


def pytest_runtest_logreport(report):
    key = report.nodeid.split("::")[0]
    _seconds[key] = _seconds.get(key, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("NANO_TRACE_OUT")
    if not out:
        return
    data = {"lines": {t: {f: sorted(ls) for f, ls in files.items()} for t, files in _lines.items()},
            "seconds": {t: round(s, 3) for t, s in _seconds.items()}}
    with open(out, "w") as f:
        json.dump(data, f)
