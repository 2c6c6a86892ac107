"""Token ids to text, one engine step at a time, and stop strings.

Byte-level BPE and SentencePiece tokens do not map one-to-one onto characters: a character can span
several tokens (its first bytes decode to U+FFFD), and SentencePiece drops a word's leading space
when the word is decoded alone. ``IncrementalDetokenizer`` therefore decodes a short window of ids
that ends at the newest one and emits only what the window adds once it is a complete character
(the method vLLM and TGI use).
"""
from __future__ import annotations

from typing import Iterable, Sequence


def partial_suffix_len(text: str, needles: Iterable[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``needles``."""
    best = 0
    for needle in needles:
        for k in range(min(len(needle) - 1, len(text)), best, -1):
            if text.endswith(needle[:k]):
                best = k
                break
    return best


class IncrementalDetokenizer:
    """Feed new ids, get the new text. ``hidden_ids`` are dropped from the text (EOS, ChatML controls)."""

    def __init__(self, tokenizer, prompt_ids: Sequence[int] = (), hidden_ids: Iterable[int] = ()):
        self.tokenizer = tokenizer
        self.hidden = set(hidden_ids)
        # A few prompt ids give the first output token its context (SentencePiece leading spaces).
        self.ids = [i for i in prompt_ids if i not in self.hidden][-5:]
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, new_ids: Iterable[int]) -> str:
        """Append ids; return the text they complete (possibly empty while a character is partial)."""
        self.ids.extend(i for i in new_ids if i not in self.hidden)
        if len(self.ids) == self.read_offset:
            return ""
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) <= len(prefix) or text.endswith("\ufffd"):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(prefix):]

    def flush(self) -> str:
        """Text of ids still held back at the end of a request (an incomplete character stays U+FFFD)."""
        if len(self.ids) == self.read_offset:
            return ""
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix):]


class StopStringMatcher:
    """Stream text through; stop at the first stop string (excluded) and hold back possible prefixes."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Text that is safe to emit now; after a match, ``stopped`` is True and later text is dropped."""
        if self.stopped or not text:
            return ""
        if not self.stops:
            return text
        buf = self.held + text
        hits = [(buf.find(s), s) for s in self.stops if s in buf]
        if hits:
            self.stopped, self.held = True, ""
            return buf[:min(hits)[0]]
        keep = partial_suffix_len(buf, self.stops)
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return "" if self.stopped else held
