"""Aider-style repo map: files ranked by PageRank over the reference graph, rendered to fit a token budget.

An edge runs from each file that references an identifier to each file that defines it, weighted by
sqrt(reference count) and by how telling the identifier is (long names count more, private and
many-times-defined names less, names the task mentions ten times more). The surfer teleports to the files
the task mentions and to the files that define the identifiers it mentions; those "focus" files are listed
first. Each definition then scores the rank that flows into it; the best ones, grouped by file, are rendered
as numbered signature lines until the token budget is full.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from loopcoder.tools.languages import language_for
from loopcoder.tools.pagerank import pagerank
from loopcoder.tools.tag_index import ScanStats, TagIndex
from loopcoder.tools.tags import Definition

TokenCounter = Callable[[str], int]
MENTION_BOOST = 10.0
FOCUS_MAX_DEFINERS = 5  # an identifier defined in more files than this says little about where to look
FAMILIES = {"typescript": "javascript", "tsx": "javascript", "c": "cpp"}
FAMILIES.update({lang: lang for lang in ("python", "javascript", "cpp", "java", "go", "rust", "ruby", "php")})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def approx_tokens(chars_per_token: float) -> TokenCounter:
    """A token counter that divides characters by ``chars_per_token`` (no tokenizer needed)."""
    return lambda text: math.ceil(len(text) / chars_per_token)


@dataclass
class RankedFile:
    path: str
    score: float
    focus: bool


@dataclass
class RenderedMap:
    text: str
    tokens: int
    files: list[RankedFile]  # every tagged file, best first
    files_shown: int
    definitions_shown: int
    scan: ScanStats


@dataclass
class _Graph:
    files: list[str]
    file_id: dict[str, int]
    idents: list[str]
    ident_id: dict[str, int]
    definers: dict[str, list[int]]
    src: np.ndarray
    dst: np.ndarray
    ident: np.ndarray
    base_w: np.ndarray
    defs: list[dict[str, list[Definition]]] = field(default_factory=list)


class RepoMap:
    """Ranks and renders the files of a ``TagIndex``; keeps the reference graph until a file changes."""

    def __init__(self, index: TagIndex, token_counter: TokenCounter | None = None):
        self.index = index
        self.count_tokens = token_counter or approx_tokens(3.5)
        self._graph: _Graph | None = None
        self._graph_generation = -1

    def render(self, token_budget: int, mentioned_files: Iterable[str] = (),
               mentioned_idents: Iterable[str] = (), scan: ScanStats | None = None) -> RenderedMap:
        """The map text (at most ``token_budget`` tokens) and the full file ranking.

        Refreshes the index first, unless the caller just did and passes its ``scan``.
        """
        scan = scan or self.index.refresh()
        graph = self._get_graph()
        files = set(mentioned_files)
        idents = set(mentioned_idents)
        ranked, def_scores = self._rank(graph, files, idents)
        entries = [key for key, _ in sorted(def_scores.items(), key=lambda kv: -kv[1])]
        text, shown_files, shown_defs = self._fit(graph, ranked, entries, token_budget)
        return RenderedMap(text, self.count_tokens(text) if text else 0, ranked, shown_files, shown_defs, scan)

    # -- graph -------------------------------------------------------------------------------------

    def _get_graph(self) -> _Graph:
        if self._graph is None or self._graph_generation != self.index.generation:
            self._graph = _build_graph(self.index)
            self._graph_generation = self.index.generation
        return self._graph

    def _rank(self, g: _Graph, mentioned_files: set[str], mentioned_idents: set[str]
              ) -> tuple[list[RankedFile], dict[tuple[int, str], float]]:
        n = len(g.files)
        pers = np.zeros(n)
        focus = np.zeros(n, dtype=bool)
        for rel in mentioned_files:
            if rel in g.file_id:
                pers[g.file_id[rel]] += 1.0
                focus[g.file_id[rel]] = True
        for ident in mentioned_idents:
            definers = g.definers.get(ident, ())
            if 0 < len(definers) <= FOCUS_MAX_DEFINERS:
                for f in definers:
                    pers[f] += 1.0
                    focus[f] = True
        if mentioned_idents:
            for i, rel in enumerate(g.files):
                stem = rel.rsplit("/", 1)[-1].split(".", 1)[0]
                if stem in mentioned_idents:
                    pers[i] += 0.5
        weight = g.base_w
        boosted_ids = [g.ident_id[i] for i in mentioned_idents if i in g.ident_id]
        if boosted_ids and len(weight):
            weight = weight * np.where(np.isin(g.ident, boosted_ids), MENTION_BOOST, 1.0)
        rank = pagerank(n, g.src, g.dst, weight, pers if pers.any() else None)

        # Rank flowing along each edge is credited to the (file, identifier) definition it points at.
        scores: dict[tuple[int, str], float] = defaultdict(float)
        if len(weight):
            out_w = np.bincount(g.src, weights=weight, minlength=n)
            flow = rank[g.src] * weight / out_w[g.src]
            key = g.dst.astype(np.int64) * len(g.idents) + g.ident
            uniq, inv = np.unique(key, return_inverse=True)
            sums = np.bincount(inv, weights=flow)
            for k, s in zip(uniq.tolist(), sums.tolist()):
                scores[(k // len(g.idents), g.idents[k % len(g.idents)])] = s
        # Every definition gets a small share of its own file's rank, so a file nobody references can still
        # show its definitions; the ones the task names come before all others.
        for f, defs in enumerate(g.defs):
            if not defs:
                continue
            own = rank[f] * 0.1 / len(defs)
            for name in defs:
                scores[(f, name)] += own
                if focus[f] and name in mentioned_idents:
                    scores[(f, name)] += 10.0
        order = sorted(range(n), key=lambda i: (not focus[i], -rank[i], g.files[i]))
        ranked = [RankedFile(g.files[i], float(rank[i]), bool(focus[i])) for i in order]
        return ranked, scores

    # -- rendering ---------------------------------------------------------------------------------

    def _fit(self, g: _Graph, ranked: list[RankedFile], entries: list[tuple[int, str]],
             budget: int) -> tuple[str, int, int]:
        if budget <= 0 or not entries:
            return "", 0, 0
        file_order = {g.file_id[r.path]: i for i, r in enumerate(ranked)}
        lines_cache: dict[int, list[str]] = {}
        # Binary search on how many of the best definitions to show; a line is at least ~4 tokens.
        lo, hi = 0, min(len(entries), max(1, budget // 4))
        best = ("", 0, 0)
        while lo <= hi:
            mid = (lo + hi) // 2
            text, nfiles, ndefs = self._render_entries(g, entries[:mid], file_order, lines_cache)
            if self.count_tokens(text) <= budget:
                best = (text, nfiles, ndefs)
                lo = mid + 1
            else:
                hi = mid - 1
        return best

    def _render_entries(self, g: _Graph, entries: list[tuple[int, str]], file_order: dict[int, int],
                        lines_cache: dict[int, list[str]]) -> tuple[str, int, int]:
        by_file: dict[int, list[Definition]] = defaultdict(list)
        for f, name in entries:
            by_file[f].extend(g.defs[f].get(name, ()))
        out: list[str] = []
        ndefs = 0
        for f in sorted(by_file, key=lambda f: file_order[f]):
            lines = lines_cache.get(f)
            if lines is None:
                lines = lines_cache[f] = _read_lines(self.index.workspace.root / g.files[f])
            out.append(f"{g.files[f]}:")
            seen = set()
            for d in sorted(by_file[f], key=lambda d: d.start_line):
                if d.start_line in seen:
                    continue
                seen.add(d.start_line)
                ndefs += 1
                text = lines[d.start_line - 1] if d.start_line <= len(lines) else d.name
                out.append(f"{d.start_line:6d}│{_clip(text.rstrip())}")
        return ("\n".join(out) + "\n") if out else "", len(by_file), ndefs


def mentions_from_text(text: str, index: TagIndex) -> tuple[set[str], set[str]]:
    """Files (workspace paths or unique basenames) and defined identifiers that ``text`` mentions."""
    files: set[str] = set()
    by_name: dict[str, list[str]] = defaultdict(list)
    for rel in index.files:
        if rel in text:
            files.add(rel)
        by_name[rel.rsplit("/", 1)[-1]].append(rel)
    words = set(_WORD.findall(text))
    for word in re.findall(r"[\w.-]+\.\w+", text):
        if len(by_name.get(word, ())) == 1:
            files.add(by_name[word][0])
    defined = set()
    for tags in index.files.values():
        for d in tags.defs:
            if d.name in words:
                defined.add(d.name)
    return files, defined


def _build_graph(index: TagIndex) -> _Graph:
    files = sorted(index.files)
    file_id = {rel: i for i, rel in enumerate(files)}
    definers: dict[str, list[int]] = defaultdict(list)
    defs: list[dict[str, list[Definition]]] = []
    for i, rel in enumerate(files):
        by_name: dict[str, list[Definition]] = defaultdict(list)
        for d in index.files[rel].defs:
            by_name[d.name].append(d)
        defs.append(dict(by_name))
        for name in by_name:
            definers[name].append(i)
    idents = sorted(definers)
    ident_id = {name: i for i, name in enumerate(idents)}
    src: list[int] = []
    dst: list[int] = []
    ids: list[int] = []
    w: list[float] = []
    # A Python call to `replace` says nothing about a JavaScript `replace`: edges stay within a language family.
    family = [FAMILIES.get(language_for(rel) or "", "") for rel in files]
    for i, rel in enumerate(files):
        for name, count in index.files[rel].refs.items():
            targets = definers.get(name)
            if not targets:
                continue
            base = _ident_weight(name, len(targets)) * math.sqrt(count)
            iid = ident_id[name]
            for t in targets:
                if t != i and family[t] == family[i]:
                    src.append(i)
                    dst.append(t)
                    ids.append(iid)
                    w.append(base)
    return _Graph(files, file_id, idents, ident_id, dict(definers), np.array(src, dtype=np.int64),
                  np.array(dst, dtype=np.int64), np.array(ids, dtype=np.int64), np.array(w, dtype=float), defs)


def _ident_weight(name: str, n_definers: int) -> float:
    mul = 1.0
    if len(name) >= 8 and ("_" in name.strip("_") or (name[0].islower() and any(c.isupper() for c in name))
                           or (name[0].isupper() and any(c.islower() for c in name))):
        mul *= 10.0  # specific names (snake_case, camelCase, CamelCase) say more than short generic ones
    if name.startswith("_"):
        mul *= 0.1
    if n_definers > 5:
        mul *= 0.1
    return mul


def _read_lines(path) -> list[str]:
    try:
        return path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return []


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
