"""Grammar-constrained decoding: compile a GrammarSpec with xgrammar, keep one matcher per request,
and turn the matchers' next-token sets into one bitmask per step that the sampler applies.

Why xgrammar: it is what vLLM and SGLang use, its wheel needs no particular torch (it installs next to
the pinned CPU torch here and the GPU image's), and it compiles JSON schemas, regexes, EBNF and
structural tags (free text with constrained tool-call blocks) against the checkpoint's own HF tokenizer.

The work per decode step is split on purpose: the host fills an int32 bitmask of ``ceil(V/32)`` words
per row (xgrammar, multi-threaded over the rows), and the device applies it with one unpack and one
``masked_fill`` over the whole batch (``apply_token_bitmask``). Rows without a grammar get all bits
set. The mask is applied to the logits the decode step returns, outside any captured CUDA graph, and
the fill runs after the step is launched, so on CUDA it overlaps the forward pass.
"""
from __future__ import annotations

import json
import os
import threading

import torch

from .types import JSON_MAX_WHITESPACE, GrammarError, GrammarSpec

ALL_ALLOWED = -1  # an int32 with every bit set: all 32 tokens of the word allowed


class GrammarCompiler:
    """Compiles GrammarSpecs for one tokenizer and vocabulary (thread-safe; results are cached)."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int], max_threads: int = 8,
                 pin_memory: bool = False):
        self.tokenizer = tokenizer
        self.pin_memory = pin_memory  # CUDA: the bitmask is copied to the device without blocking
        self._host: torch.Tensor | None = None
        self.vocab_size = vocab_size
        self.stop_token_ids = sorted(stop_token_ids)
        self.max_threads = max(1, min(max_threads, os.cpu_count() or 1))
        self._compiler = None
        self._batch = None
        self._lock = threading.Lock()

    def _xgr(self):
        # Imported and built on first use: a server that never sees a grammar pays nothing.
        import xgrammar as xgr

        with self._lock:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=self.stop_token_ids or None)
                self._compiler = xgr.GrammarCompiler(info, max_threads=self.max_threads)
                self._batch = xgr.BatchGrammarMatcher(max_threads=self.max_threads)
        return xgr

    def compile(self, spec: GrammarSpec):
        """The compiled grammar of ``spec``; GrammarError (a ValueError) when it cannot be compiled."""
        self._xgr()
        c = self._compiler
        try:
            if spec.kind == "json_schema":
                schema = json.dumps(_bounded_strings_as_patterns(json.loads(spec.value)))
                return c.compile_json_schema(schema, strict_mode=True, max_whitespace_cnt=JSON_MAX_WHITESPACE)
            if spec.kind == "json_object":
                return c.compile_json_schema('{"type": "object"}', max_whitespace_cnt=JSON_MAX_WHITESPACE)
            if spec.kind == "regex":
                return c.compile_regex(spec.value)
            if spec.kind == "ebnf":
                return c.compile_grammar(spec.value)
            return c.compile_structural_tag(json.dumps(_bounded_strings_as_patterns(json.loads(spec.value))))
        except (RuntimeError, ValueError, TypeError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GrammarError(f"invalid {spec.kind.replace('_', ' ')}: {message}") from None

    def matcher(self, spec: GrammarSpec):
        """A fresh matcher (one per request) at the start of ``spec``'s grammar."""
        xgr = self._xgr()
        return xgr.GrammarMatcher(self.compile(spec))

    def fill_bitmask(self, matchers: list) -> torch.Tensor | None:
        """[B, ceil(V/32)] int32 on the host: row i holds matcher i's allowed next tokens (all bits set
        where matchers[i] is None); None when no row has a grammar."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return None
        self._xgr()
        if self._host is None or self._host.shape[0] < len(matchers):
            # Reused across steps: the sampler has synchronised (read the tokens) before the next fill.
            self._host = torch.empty((max(len(matchers), 64), -(-self.vocab_size // 32)), dtype=torch.int32,
                                     pin_memory=self.pin_memory)
        bitmask = self._host[: len(matchers)]
        bitmask.fill_(ALL_ALLOWED)
        self._batch.batch_fill_next_token_bitmask([matchers[i] for i in rows], bitmask, rows)
        return bitmask


def _bounded_strings_as_patterns(node):
    """The schema (or structural tag) with every string's minLength/maxLength written as a pattern.

    xgrammar 0.2.9 compiles a length-bounded string to a character class that lets raw control
    characters through, which is not JSON (a random model wrote one within 100 answers). Its patterns
    exclude them (and quotes and backslashes, so such strings hold no escapes: always valid JSON).
    """
    if isinstance(node, list):
        return [_bounded_strings_as_patterns(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _bounded_strings_as_patterns(v) for k, v in node.items()}
    bounded = "minLength" in out or "maxLength" in out
    if out.get("type") == "string" and bounded and not {"pattern", "format", "enum", "const"} & out.keys():
        low, high = int(out.pop("minLength", 0)), out.pop("maxLength", None)
        out["pattern"] = "^.{%d,%s}$" % (low, "" if high is None else int(high))
    return out


_SHIFTS: dict[torch.device, torch.Tensor] = {}


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """logits [B, V] with every token whose bit is 0 set to -inf (out of place; bitmask [B, ceil(V/32)]).

    Batched tensor work only (no host sync): the words are unpacked with one shift-and over a [B, W, 32]
    view, then one masked_fill.
    """
    dev = logits.device
    shifts = _SHIFTS.get(dev)
    if shifts is None:
        shifts = _SHIFTS[dev] = torch.arange(32, dtype=torch.int32, device=dev)
    words = bitmask.to(dev, non_blocking=True)
    allowed = ((words[:, :, None] >> shifts) & 1).view(words.shape[0], -1)[:, : logits.shape[-1]]
    return logits.masked_fill(allowed == 0, float("-inf"))
