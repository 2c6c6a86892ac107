"""Bug injection by AST mutation: each mutation edits one source span and keeps the rest of the file byte for byte.

`mutations(source)` finds every candidate in the functions of a module (``ast`` positions, converted
from UTF-8 byte columns to character offsets); `Mutation.apply` splices the new text into the span. A
candidate is kept only when the mutated module parses and its AST differs from the original's. The
reverse of a mutation (the gold fix) is the original text of the same span.

Operators (``kind``):
  compare        < <=, > >=, == !=, is / is not, in / not in
  arithmetic     + -, * //, / *, // /, % // (also in augmented assignments); not on string literals
  off_by_one     an integer constant n -> n+1 or n-1 (not 0/1, see constant)
  slice_bound    a slice bound b -> b + 1 or b - 1
  swap_args      the first two positional arguments of a call swapped
  constant       True <-> False, 0 <-> 1, a short string literal -> '' ('' -> ' ')
  invert_if      ``if c:`` / ``elif c:`` / ``while c:`` -> ``not c``; ``not c`` -> ``c``
  drop_if        an ``if`` without ``else`` replaced by its body (the condition dropped)
  drop_guard     a guard clause (``if c: return/raise/continue/break ...`` without else) removed
  bool_op        ``and`` <-> ``or``
  wrong_variable a parameter read replaced by another parameter of the same function
"""
from __future__ import annotations

import ast
import hashlib
import re
import threading
from dataclasses import asdict, dataclass

KINDS = ("compare", "arithmetic", "off_by_one", "slice_bound", "swap_args", "constant", "invert_if", "drop_if",
         "drop_guard", "bool_op", "wrong_variable")

_CMP_SWAP = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==",
             ast.Is: "is not", ast.IsNot: "is", ast.In: "not in", ast.NotIn: "in"}
_CMP_TEXT = {ast.Lt: r"<", ast.LtE: r"<=", ast.Gt: r">", ast.GtE: r">=", ast.Eq: r"==", ast.NotEq: r"!=",
             ast.Is: r"is", ast.IsNot: r"is\s+not", ast.In: r"in", ast.NotIn: r"not\s+in"}
_BIN_SWAP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "//"), ast.Div: ("/", "*"),
             ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//")}


@dataclass(frozen=True)
class Mutation:
    """One edit: characters ``start:end`` of the file (``old``) become ``new``."""

    kind: str
    function: str  # qualified name of the enclosing function, e.g. ``Parser.parse``
    lineno: int  # first line of the edited span (1-based)
    end_lineno: int
    start: int
    end: int
    old: str
    new: str
    func_lineno: int = 0
    func_end_lineno: int = 0

    def apply(self, source: str) -> str:
        if source[self.start:self.end] != self.old:
            raise ValueError(f"mutation at line {self.lineno} does not match the source")
        return source[:self.start] + self.new + source[self.end:]

    def revert(self, mutated: str) -> str:
        """The original source back from the mutated one."""
        end = self.start + len(self.new)
        if mutated[self.start:end] != self.new:
            raise ValueError(f"mutated source does not hold the mutation at line {self.lineno}")
        return mutated[:self.start] + self.old + mutated[end:]

    def key(self) -> str:
        return hashlib.sha256(f"{self.start}:{self.end}:{self.old}\0{self.new}".encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return asdict(self)


class _Offsets:
    """(line, UTF-8 byte column) -> character offset in the source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def at(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset)

    def line_start(self, lineno: int) -> int:
        return self.starts[lineno - 1]

    def line_end(self, lineno: int) -> int:  # after the newline
        return self.starts[lineno]


# CPython 3.11's AST conversion is not thread-safe: `nano synth --jobs 2` (one thread per package) failed
# schema with "SystemError: AST constructor recursion depth mismatch (before=27, after=19)" while the other
# thread parsed a module. Parsing and dumping take this lock.
_AST_LOCK = threading.Lock()


def mutations(source: str, kinds: tuple[str, ...] = KINDS) -> list[Mutation]:
    """Every valid mutation of ``source`` inside its functions (none for a file that does not parse)."""
    base = dump_ast(source)
    return [m for m in candidates(source, kinds) if is_valid(source, m, base)]


def candidates(source: str, kinds: tuple[str, ...] = KINDS) -> list[Mutation]:
    """Mutations found in ``source``, not yet checked with `is_valid` (which parses the mutated file:
    check only the ones you use, a large module has thousands)."""
    try:
        with _AST_LOCK:
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    finder = _Finder(source, tree)
    finder.visit(tree)
    out, seen = [], set()
    for m in finder.found:
        if m.kind not in kinds or (m.start, m.end, m.new) in seen or m.old == m.new:
            continue
        seen.add((m.start, m.end, m.new))
        out.append(m)
    return out


def is_valid(source: str, m: Mutation, base_dump: str | None = None) -> bool:
    """The mutated source parses and its AST differs from the original's (``base_dump``: `dump_ast(source)`)."""
    mutated = dump_ast(m.apply(source))
    return mutated is not None and mutated != (base_dump if base_dump is not None else dump_ast(source))


def dump_ast(source: str) -> str | None:
    try:
        with _AST_LOCK:
            return ast.dump(ast.parse(source))
    except (SyntaxError, ValueError):
        return None


class _Finder(ast.NodeVisitor):
    def __init__(self, source: str, tree: ast.AST) -> None:
        self.src = source
        self.off = _Offsets(source)
        self.stack: list[ast.AST] = []  # enclosing classes and functions
        self.found: list[Mutation] = []
        self.docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                           if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                           and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        self.in_fstring = 0
        self.in_annotation = 0

    # context

    def _func(self) -> ast.AST | None:
        for node in reversed(self.stack):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None

    def _qualname(self) -> str:
        return ".".join(n.name for n in self.stack)

    def _add(self, kind: str, start: int, end: int, new: str, lineno: int, end_lineno: int) -> None:
        func = self._func()
        if func is None or self.in_fstring or self.in_annotation:
            return
        self.found.append(Mutation(kind, self._qualname(), lineno, end_lineno, start, end, self.src[start:end], new,
                                   func.lineno, func.end_lineno))

    def _segment(self, a: int, b: int) -> str:
        return self.src[a:b]

    def visit_FunctionDef(self, node) -> None:
        """Functions and classes: decorators in the outer scope, the body inside (qualified names)."""
        for d in node.decorator_list:
            self.visit(d)
        self.stack.append(node)
        for stmt in node.body:
            self.visit(stmt)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.body)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.in_fstring += 1
        self.generic_visit(node)
        self.in_fstring -= 1

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        self.in_annotation += 1
        self.visit(node.annotation)
        self.in_annotation -= 1
        if node.value:
            self.visit(node.value)

    # operators

    def visit_Compare(self, node: ast.Compare) -> None:
        if len(node.ops) == 1 and type(node.ops[0]) in _CMP_SWAP:
            op = node.ops[0]
            _, a = self.off.span(node.left)
            b, _ = self.off.span(node.comparators[0])
            seg = self._segment(a, b)
            m = re.fullmatch(r"(\s*\)*\s*)(" + _CMP_TEXT[type(op)] + r")(\s*\(*\s*)", seg)
            if m and "#" not in seg:
                s = a + m.start(2)
                self._add("compare", s, a + m.end(2), _CMP_SWAP[type(op)], node.lineno, node.end_lineno)
        self.generic_visit(node)

    def _strlike(self, node: ast.AST) -> bool:
        return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)))

    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = _BIN_SWAP.get(type(node.op))
        if swap and not self._strlike(node.left) and not self._strlike(node.right) and not (
                isinstance(node.op, ast.Mod) and self._strlike(node.left)):
            _, a = self.off.span(node.left)
            b, _ = self.off.span(node.right)
            seg = self._segment(a, b)
            m = re.fullmatch(r"(\s*\)*\s*)(" + re.escape(swap[0]) + r")(\s*\(*\s*)", seg)
            if m and "#" not in seg:
                self._add("arithmetic", a + m.start(2), a + m.end(2), swap[1], node.lineno, node.end_lineno)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        swap = _BIN_SWAP.get(type(node.op))
        if swap and not self._strlike(node.value):
            _, a = self.off.span(node.target)
            b, _ = self.off.span(node.value)
            seg = self._segment(a, b)
            m = re.fullmatch(r"(\s*)(" + re.escape(swap[0]) + r"=)(\s*)", seg)
            if m:
                self._add("arithmetic", a + m.start(2), a + m.end(2), swap[1] + "=", node.lineno, node.end_lineno)
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        if len(node.values) == 2:
            word, other = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            _, a = self.off.span(node.values[0])
            b, _ = self.off.span(node.values[1])
            seg = self._segment(a, b)
            m = re.fullmatch(r"(\s*\)*\s*)(" + word + r")(\s*\(*\s*)", seg)
            if m and "#" not in seg:
                self._add("bool_op", a + m.start(2), a + m.end(2), other, node.lineno, node.end_lineno)
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            s, e = self.off.span(node)
            inner_s, inner_e = self.off.span(node.operand)
            if self.src[s:inner_s].strip() == "not" and node.lineno == node.end_lineno:
                self._add("invert_if", s, e, self.src[inner_s:inner_e], node.lineno, node.end_lineno)
            self.visit(node.operand)
            return
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return  # -1: leave negative literals alone (off-by-one on them reads oddly)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) in self.docstrings or not hasattr(node, "end_col_offset"):
            return
        s, e = self.off.span(node)
        text = self.src[s:e]
        v = node.value
        if isinstance(v, bool):
            self._add("constant", s, e, "False" if v else "True", node.lineno, node.end_lineno)
        elif isinstance(v, int) and text.isdigit():
            if v in (0, 1):
                self._add("constant", s, e, "1" if v == 0 else "0", node.lineno, node.end_lineno)
            elif v < 10_000:
                kind = "slice_bound" if getattr(node, "_slice_bound", False) else "off_by_one"
                self._add(kind, s, e, str(v + 1), node.lineno, node.end_lineno)
                self._add(kind, s, e, str(v - 1), node.lineno, node.end_lineno)
        elif isinstance(v, str) and node.lineno == node.end_lineno and len(v) <= 3 and text[:1] in "'\"":
            q = text[0]
            if text.startswith(q * 3):
                return
            self._add("constant", s, e, q + q if v else q + " " + q, node.lineno, node.end_lineno)

    def visit_Slice(self, node: ast.Slice) -> None:
        for bound in (node.lower, node.upper):
            if bound is None:
                continue
            if isinstance(bound, ast.Constant) and isinstance(bound.value, int) and not isinstance(bound.value, bool):
                if bound.value not in (0, 1):
                    bound._slice_bound = True  # type: ignore[attr-defined]
                continue
            if isinstance(bound, (ast.Name, ast.Attribute, ast.Call)) and bound.lineno == bound.end_lineno:
                s, e = self.off.span(bound)
                text = self.src[s:e]
                self._add("slice_bound", s, e, f"{text} + 1", bound.lineno, bound.end_lineno)
                self._add("slice_bound", s, e, f"{text} - 1", bound.lineno, bound.end_lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        args = node.args
        if len(args) >= 2 and not any(isinstance(a, ast.Starred) for a in args[:2]):
            s0, e0 = self.off.span(args[0])
            s1, e1 = self.off.span(args[1])
            between = self.src[e0:s1]
            a0, a1 = self.src[s0:e0], self.src[s1:e1]
            if re.fullmatch(r"\s*,\s*", between) and a0 != a1:
                self._add("swap_args", s0, e1, a1 + between + a0, node.lineno, node.end_lineno)
        self.generic_visit(node)

    # statements

    def _invert(self, test: ast.AST) -> None:
        s, e = self.off.span(test)
        text = self.src[s:e]
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return  # visit_UnaryOp drops the not
        simple = isinstance(test, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant))
        new = f"not {text}" if simple else f"not ({text})"
        self._add("invert_if", s, e, new, test.lineno, test.end_lineno)

    def visit_If(self, node: ast.If) -> None:
        self._invert(node.test)
        if not node.orelse and self._own_lines(node):
            body = node.body
            first, last = body[0], body[-1]
            if isinstance(last, (ast.Return, ast.Raise, ast.Continue, ast.Break)) and len(body) <= 2:
                s = self.off.line_start(node.lineno)
                e = self.off.line_end(node.end_lineno)
                self._add("drop_guard", s, e, "", node.lineno, node.end_lineno)
            elif first.lineno > node.lineno:
                self._drop_if(node)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        if not (isinstance(node.test, ast.Constant)):
            self._invert(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._invert(node.test)
        self.generic_visit(node)

    def _own_lines(self, node: ast.If) -> bool:
        """The statement starts its first line and ends its last one (nothing else shares them)."""
        lines = self.off.lines
        head = lines[node.lineno - 1]
        if head[:node.col_offset].strip() or not head.lstrip().startswith("if"):
            return False
        tail = lines[node.end_lineno - 1][node.end_col_offset:] if node.end_lineno <= len(lines) else ""
        return not tail.strip() or tail.strip().startswith("#")

    def _drop_if(self, node: ast.If) -> None:
        lines = self.off.lines
        indent = len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())
        body_indent = node.body[0].col_offset
        if body_indent <= indent or any(isinstance(n, ast.Constant) and isinstance(n.value, str) and n.lineno != n.end_lineno
                                        for n in ast.walk(node)):
            return
        cut = body_indent - indent
        out = []
        for line in lines[node.body[0].lineno - 1:node.end_lineno]:
            if not line.strip():
                out.append(line)
            elif line[:cut].strip():
                return
            else:
                out.append(line[cut:])
        s = self.off.line_start(node.lineno)
        e = self.off.line_end(node.end_lineno)
        self._add("drop_if", s, e, "".join(out), node.lineno, node.end_lineno)

    def visit_Name(self, node: ast.Name) -> None:
        func = self._func()
        if func is None or not isinstance(node.ctx, ast.Load):
            return
        params = [a.arg for a in func.args.posonlyargs + func.args.args + func.args.kwonlyargs
                  if a.arg not in ("self", "cls")]
        if node.id in params and len(params) >= 2:
            others = [p for p in params if p != node.id]
            # the next parameter in order: deterministic, and usually the one a slip of the hand picks
            other = others[(params.index(node.id)) % len(others)]
            s, e = self.off.span(node)
            self._add("wrong_variable", s, e, other, node.lineno, node.end_lineno)
