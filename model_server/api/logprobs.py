"""Engine logprobs (token ids) in the three OpenAI shapes: chat, legacy completions, Responses.

A token's text is what the tokenizer decodes for it alone; its ``bytes`` are the token's real bytes
(byte-level BPE tokens can hold part of a UTF-8 character, whose text alone is U+FFFD).
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted (the alphabet of byte-level BPE vocabularies)."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(visible), 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(visible, chars)}


class TokenTexts:
    """Text and bytes of single tokens, cached per tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def get(self, token_id: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token_id)
        if hit is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            hit = self._cache[token_id] = (text, self._bytes(token_id, text))
        return hit

    def _bytes(self, token_id: int, text: str) -> list[int]:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        table = _byte_decoder()
        if isinstance(piece, str) and piece and all(c in table for c in piece):
            raw = bytes(table[c] for c in piece)
            if raw.decode("utf-8", "replace") == text:  # really a byte-level token
                return list(raw)
        if isinstance(piece, str) and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return [int(piece[3:5], 16)]  # SentencePiece byte fallback
        return list(text.encode("utf-8"))

    def entry(self, token_id: int, logprob: float) -> dict:
        text, raw = self.get(token_id)
        return {"token": text, "logprob": logprob, "bytes": raw}


def chat_logprobs(texts: TokenTexts, logprobs: list) -> list[dict]:
    """``choices[i].logprobs.content`` entries (also the Responses API's ``output_text.logprobs``)."""
    return [{**texts.entry(lp.token_id, lp.logprob),
             "top_logprobs": [texts.entry(t, v) for t, v in lp.top]} for lp in logprobs]


def completion_logprobs(texts: TokenTexts, logprobs: list, offset: int) -> dict:
    """The legacy completions shape; ``offset`` is the text offset of the first token."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for lp in logprobs:
        text, _ = texts.get(lp.token_id)
        tokens.append(text)
        token_logprobs.append(lp.logprob)
        tops.append({texts.get(t)[0]: v for t, v in lp.top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}
