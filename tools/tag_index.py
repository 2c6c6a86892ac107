"""Tags of every source file in a workspace, cached by file mtime and size (in memory and on disk).

A cold scan parses every supported file, in worker processes when there are many; a later scan only stats
files and re-parses the ones whose mtime or size changed. An interrupted scan keeps and saves what it finished.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loopcoder.tools.languages import language_for
from loopcoder.tools.tags import FileTags, extract_tags
from loopcoder.tools.workspace import Workspace, is_binary

CACHE_SCHEMA = 1  # bump when FileTags or the tag queries change shape
PARALLEL_MIN_FILES = 256  # below this, starting worker processes costs more than it saves
BATCH = 64
MAX_CACHE_FILES = 256  # one pickle per workspace; the oldest go when a new one would pass this

Progress = Callable[[int, int], None]  # (files done, files to do)


@dataclass(frozen=True)
class ScanStats:
    files: int
    parsed: int
    removed: int
    seconds: float


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "loopcoder" / "repomap"


class TagIndex:
    """Tags for each supported file of a workspace; ``refresh()`` brings them up to date."""

    def __init__(self, workspace: Workspace, cache_dir: Path | None = None, workers: int = 0,
                 persist: bool = True):
        self.workspace = workspace
        self.workers = workers or (os.cpu_count() or 1)
        self.persist = persist
        key = hashlib.sha1(str(workspace.root).encode()).hexdigest()[:16]
        self.cache_path = Path(cache_dir or default_cache_dir()) / f"tags-v{CACHE_SCHEMA}-{key}.pkl"
        self.files: dict[str, FileTags] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        self.generation = 0  # bumps whenever ``files`` changes; the repo map keys its graph on it
        self.progress: Progress | None = None  # default progress callback for refresh()
        self._loaded = False

    def refresh(self, progress: Progress | None = None) -> ScanStats:
        """Re-tag new and changed files, drop deleted ones; returns what it did."""
        import time

        t0 = time.perf_counter()
        if not self._loaded:
            self._load()
        current = {}
        for info in self.workspace.list_files():
            if info.size <= self.workspace.max_file_bytes and language_for(info.rel):
                current[info.rel] = (info.mtime_ns, info.size)
        removed = [rel for rel in self.files if rel not in current]
        for rel in removed:
            self._stamps.pop(rel, None)
            del self.files[rel]
        todo = [rel for rel, stamp in current.items() if self._stamps.get(rel) != stamp]
        progress = progress or self.progress
        done = 0
        try:
            for rel, stamp, tags in self._tag_files(todo, progress):
                self._stamps[rel] = stamp
                self.files[rel] = tags
                done += 1
        finally:
            if done or removed:
                self.generation += 1
                if self.persist:
                    self._save()
        return ScanStats(len(current), done, len(removed), time.perf_counter() - t0)

    def invalidate(self, rel: str) -> None:
        """Forget ``rel``'s stamp so the next refresh re-tags it (an edit within one mtime tick keeps it)."""
        self._stamps.pop(rel, None)

    def _tag_files(self, rels: list[str], progress: Progress | None) -> Iterator[tuple[str, tuple, FileTags]]:
        root = str(self.workspace.root)
        workers = self.workers - 1 if len(rels) >= PARALLEL_MIN_FILES else 0
        done = 0
        for results in _tag_batches(root, rels, workers):
            for rel, stamp, data in results:
                yield rel, stamp, data if isinstance(data, FileTags) else FileTags.from_tuple(data)
            done += len(results)
            if progress:
                progress(done, len(rels))

    def _load(self) -> None:
        self._loaded = True
        if not self.persist:
            return
        try:
            with open(self.cache_path, "rb") as fh:
                data = pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            return
        if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA or data.get("root") != str(
                self.workspace.root):
            return
        for rel, (stamp, tags) in data["entries"].items():
            self._stamps[rel] = stamp
            self.files[rel] = FileTags.from_tuple(tags)
        self.generation += 1

    def _save(self) -> None:
        entries = {rel: (self._stamps[rel], self.files[rel].to_tuple()) for rel in self._stamps}
        payload = {"schema": CACHE_SCHEMA, "root": str(self.workspace.root), "entries": entries}
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, prefix=".tags-")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.cache_path)
            _evict_old(self.cache_path.parent)
        except OSError:
            pass  # a read-only cache dir only costs speed next time


def _tag_batches(root: str, rels: list[str], workers: int) -> Iterator[list]:
    """Tag ``rels`` in batches, here and in ``workers`` helper processes; yields each finished batch.

    Helpers are plain ``python -m loopcoder.tools.tag_worker`` subprocesses fed batch by batch over pipes
    (multiprocessing's spawn would re-import the caller's main module, fork would copy its threads' locks).
    A helper that fails hands its batch back; this process always takes part, so the work gets done.
    """
    batches = deque(rels[i:i + BATCH] for i in range(0, len(rels), BATCH))
    results: queue.Queue[list] = queue.Queue()
    procs: list[subprocess.Popen] = []
    threads: list[threading.Thread] = []
    for _ in range(max(0, workers)):
        try:
            proc = subprocess.Popen([sys.executable, "-m", "loopcoder.tools.tag_worker", root],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            break
        procs.append(proc)
        threads.append(threading.Thread(target=_feed_worker, args=(proc, batches, results), daemon=True))
    for t in threads:
        t.start()
    try:
        while True:
            try:
                batch = batches.popleft()
            except IndexError:
                batch = None
            if batch is not None:
                yield _tag_batch(root, batch, as_tuples=False)
            while not results.empty():
                yield results.get()
            if batch is None:
                if not any(t.is_alive() for t in threads):
                    while not results.empty():
                        yield results.get()
                    if not batches:
                        break
                else:
                    try:
                        yield results.get(timeout=0.05)
                    except queue.Empty:
                        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _feed_worker(proc: subprocess.Popen, batches: deque, results: queue.Queue) -> None:
    try:
        while True:
            try:
                batch = batches.popleft()
            except IndexError:
                return
            try:
                write_message(proc.stdin, batch)
                out = read_message(proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError):
                batches.appendleft(batch)  # this helper died; the main process will tag the batch
                return
            results.put(out)
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _evict_old(cache_dir: Path) -> None:
    caches = sorted(cache_dir.glob("tags-v*.pkl"), key=lambda p: p.stat().st_mtime)
    for old in caches[: max(0, len(caches) - MAX_CACHE_FILES)]:
        old.unlink(missing_ok=True)


def is_minified(source: bytes) -> bool:
    """Generated one-line bundles (``*.min.js``) have no useful definitions and cost the most to parse."""
    return len(source) > 4096 and len(source) / (source.count(b"\n") + 1) > 300


def write_message(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def read_message(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (size,) = struct.unpack("<Q", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _tag_batch(root: str, rels: list[str], as_tuples: bool = True) -> list:
    """Tag files ``rels`` under ``root``; helper processes send plain tuples back, so they ask for those."""
    out = []
    for rel in rels:
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
            with open(path, "rb") as fh:
                source = fh.read()
        except OSError:
            continue
        stamp = (st.st_mtime_ns, st.st_size)
        lang = language_for(rel)
        if lang is None or is_binary(source) or is_minified(source):
            tags = FileTags()
        else:
            tags = extract_tags(source, lang)
        out.append((rel, stamp, tags.to_tuple() if as_tuples else tags))
    return out
