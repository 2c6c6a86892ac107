"""Definitions and references of one source file, from its language's tree-sitter tag query."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tree_sitter import Node, QueryCursor, Tree

from loopcoder.tools.languages import get_parser, get_query


@dataclass(frozen=True, slots=True)
class Definition:
    """One definition: ``line`` is where its name is, ``start_line``..``end_line`` the whole node (1-based)."""

    name: str
    kind: str
    line: int
    start_line: int
    end_line: int


@dataclass(slots=True)
class FileTags:
    """What the repo map needs of one file: its definitions and how often it references each identifier."""

    defs: list[Definition] = field(default_factory=list)
    refs: Counter[str] = field(default_factory=Counter)

    def to_tuple(self) -> tuple:
        return ([(d.name, d.kind, d.line, d.start_line, d.end_line) for d in self.defs], dict(self.refs))

    @classmethod
    def from_tuple(cls, data: tuple) -> "FileTags":
        defs, refs = data
        return cls([Definition(*d) for d in defs], Counter(refs))


def parse(source: bytes, language: str) -> Tree:
    return get_parser(language).parse(source)


def extract_tags(source: bytes, language: str, tree: Tree | None = None) -> FileTags:
    """Definitions and reference counts of ``source``; a reference on a definition's own name is not counted."""
    tree = tree or parse(source, language)
    tags = FileTags()
    def_spots: set[int] = set()
    refs: list[tuple[int, bytes]] = []
    for _, caps in QueryCursor(get_query(language)).matches(tree.root_node):
        names = caps.get("name")
        if not names:
            continue
        name_node = names[0]
        for cap, nodes in caps.items():
            if cap.startswith("def."):
                node = nodes[0]
                text = name_node.text.decode("utf-8", "replace")
                tags.defs.append(Definition(text, cap[4:], name_node.start_point[0] + 1,
                                            node.start_point[0] + 1, node.end_point[0] + 1))
                def_spots.add(name_node.start_byte)
                break
            if cap.startswith("ref."):
                refs.append((name_node.start_byte, name_node.text))
                break
    tags.refs = Counter(text.decode("utf-8", "replace") for start, text in refs if start not in def_spots)
    # One node can match two def patterns (a C++ method both qualified and plain); keep the first.
    seen: set[tuple[str, int]] = set()
    unique = []
    for d in sorted(tags.defs, key=lambda d: (d.start_line, -d.end_line, d.line)):
        if (d.name, d.line) not in seen:
            seen.add((d.name, d.line))
            unique.append(d)
    tags.defs = unique
    return tags


def syntax_errors(tree: Tree, limit: int = 5) -> list[tuple[int, str]]:
    """Up to ``limit`` (1-based line, description) pairs for the ERROR and MISSING nodes of ``tree``."""
    out: list[tuple[int, str]] = []
    if not tree.root_node.has_error:
        return out
    stack: list[Node] = [tree.root_node]
    while stack and len(out) < limit:
        node = stack.pop()
        if node.is_missing:
            out.append((node.start_point[0] + 1, f"missing {node.type!r}"))
            continue
        if node.is_error:
            snippet = (node.text or b"").decode("utf-8", "replace").strip().splitlines()
            out.append((node.start_point[0] + 1, "unexpected " + (repr(snippet[0][:40]) if snippet else "end of input")))
            continue
        if node.has_error:
            stack.extend(reversed(node.children))
    return sorted(out)
