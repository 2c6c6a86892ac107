"""Fixtures for the SGLang plugin tests: the SGLang stand-in on sys.path, and a small scheduler.

``standin/sglang`` is NOT SGLang: it implements the few SGLang names the plugin imports with the
semantics SGLang documents (see its docstrings). The ``Scheduler`` below plays SGLang's scheduler role for
the tests: it owns the request and token pools, assigns request slots and token locations, and builds
the ForwardBatch of each extend or decode step, one copy per simulated tensor-parallel rank (ranks are
threads; the stand-in collectives meet at a barrier).
"""
from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path

import pytest
import torch

STANDIN = Path(__file__).parent / "standin"


@pytest.fixture(scope="module")
def plugin():
    """The plugin's model module, imported against the stand-in; afterwards the stand-in leaves sys.path
    and sys.modules, so other modules see this machine as it is (no SGLang)."""
    sys.path.insert(0, str(STANDIN))
    try:
        import sglang  # noqa: F401

        assert Path(sglang.__file__).is_relative_to(STANDIN), "a real SGLang is installed; these tests use the stand-in"
        yield importlib.import_module("loopcoder.model_server.sglang_plugin.model")
    finally:
        sys.path.remove(str(STANDIN))
        for name in [n for n in sys.modules if n == "sglang" or n.startswith("sglang.")]:
            del sys.modules[name]
        # the next import binds to freshly imported stand-in modules, not to this module's
        sys.modules.pop("loopcoder.model_server.sglang_plugin.model", None)
        package = sys.modules.get("loopcoder.model_server.sglang_plugin")
        if package is not None and hasattr(package, "model"):
            delattr(package, "model")


class Scheduler:
    """Requests, slots and token locations for ``tp`` simulated ranks of the plugin model."""

    def __init__(self, plugin, entry_cls, config, state_dict, tp: int = 1, max_reqs: int = 4, max_ctx: int = 64,
                 dtype=torch.float32):
        from sglang.srt.distributed import Group, set_rank
        from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool

        self.tp, self.config = tp, config
        self.group = Group(tp) if tp > 1 else None
        self.req_pool = ReqToTokenPool(max_reqs, max_ctx)
        self.models, self.kv_pools = [None] * tp, []
        kv_heads = max(1, config.num_key_value_heads // tp)
        for _ in range(tp):
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            self.kv_pools.append(MHATokenToKVPool(max_reqs * max_ctx, dtype, kv_heads, head_dim,
                                                  config.num_hidden_layers))
        self.free_tokens = list(range(1, max_reqs * max_ctx + 1))
        self.reqs: dict[str, dict] = {}

        for rank in range(tp):  # built one after another: set_default_dtype is process-wide
            set_rank(rank, self.group)
            torch.set_default_dtype(dtype)
            try:
                model = entry_cls(config)
            finally:
                torch.set_default_dtype(torch.float32)
                set_rank(0, None)
            self.loaded = model.load_weights(list(state_dict.items()))
            self.models[rank] = model

    def _on_ranks(self, fn):
        from sglang.srt.distributed import set_rank

        if self.tp == 1:
            set_rank(0, None)
            return [fn(0)]
        results, errors = [None] * self.tp, []

        def run(rank):
            set_rank(rank, self.group)  # thread-local: this thread is rank ``rank``
            try:
                results[rank] = fn(rank)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                self.group.barrier.abort()

        threads = [threading.Thread(target=run, args=(r,)) for r in range(self.tp)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results

    def add(self, rid: str, tokens: list[int], prefix_len: int = 0, slot: int | None = None):
        """Register a request; ``prefix_len`` > 0 simulates a radix-cache hit of that many tokens."""
        slot = self.req_pool.free_slots.pop(0) if slot is None else slot
        self.reqs[rid] = dict(slot=slot, tokens=list(tokens), done=prefix_len)
        if prefix_len:
            locs = [self.free_tokens.pop(0) for _ in range(prefix_len)]
            self.req_pool.req_to_token[slot, :prefix_len] = torch.tensor(locs, dtype=torch.int32)

    def extend(self, chunks: list[tuple[str, int]]):
        """One EXTEND batch: (rid, number of new tokens) per request; returns logits [B, V]."""
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        ids, pos, locs, slots, prefix, lens, seq_lens = [], [], [], [], [], [], []
        for rid, n in chunks:
            req = self.reqs[rid]
            start = req["done"]
            new = [self.free_tokens.pop(0) for _ in range(n)]
            self.req_pool.req_to_token[req["slot"], start: start + n] = torch.tensor(new, dtype=torch.int32)
            ids += req["tokens"][start: start + n]
            pos += list(range(start, start + n))
            locs += new
            slots.append(req["slot"])
            prefix.append(start)
            lens.append(n)
            seq_lens.append(start + n)
            req["done"] = start + n
        return self._forward(ForwardMode.EXTEND, ids, pos, locs, slots, seq_lens, prefix, lens,
                             [rid for rid, _ in chunks])

    def decode(self, rids: list[str], next_tokens: list[int]):
        """One DECODE batch: each request's next token is appended and run; returns logits [B, V]."""
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        ids, pos, locs, slots, seq_lens = [], [], [], [], []
        for rid, tok in zip(rids, next_tokens):
            req = self.reqs[rid]
            req["tokens"].append(tok)
            p = req["done"]
            loc = self.free_tokens.pop(0)
            self.req_pool.req_to_token[req["slot"], p] = loc
            ids.append(tok)
            pos.append(p)
            locs.append(loc)
            slots.append(req["slot"])
            seq_lens.append(p + 1)
            req["done"] = p + 1
        return self._forward(ForwardMode.DECODE, ids, pos, locs, slots, seq_lens, None, None, rids)

    def _forward(self, mode, ids, pos, locs, slots, seq_lens, prefix, lens, rids):
        from sglang.srt.model_executor.forward_batch_info import ForwardBatch
        from sglang.srt.model_executor.forward_context import use_pools

        def run(rank):
            fb = ForwardBatch(
                forward_mode=mode, batch_size=len(slots), input_ids=torch.tensor(ids),
                req_pool_indices=torch.tensor(slots), seq_lens=torch.tensor(seq_lens),
                out_cache_loc=torch.tensor(locs), positions=torch.tensor(pos),
                extend_seq_lens=None if lens is None else torch.tensor(lens),
                extend_prefix_lens=None if prefix is None else torch.tensor(prefix),
                extend_seq_lens_cpu=lens, extend_prefix_lens_cpu=prefix, rids=list(rids))
            with use_pools(self.req_pool, self.kv_pools[rank]):  # ModelRunner publishes the ForwardContext
                return self.models[rank](fb.input_ids, fb.positions, fb).next_token_logits

        outs = self._on_ranks(run)
        for other in outs[1:]:  # every rank ends with the same gathered logits
            torch.testing.assert_close(other, outs[0], rtol=0, atol=1e-5)
        return outs[0]
