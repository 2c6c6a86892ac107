"""The engine loop: requests in, one step at a time, token events out; and its asyncio front.

``LLMEngine`` is synchronous and single-threaded: ``submit`` puts requests in an inbox, ``step`` drains
the inbox and pending aborts, asks the scheduler what to run, runs it and samples. ``AsyncLLMEngine``
runs ``step`` on a background thread and hands each request's events to the asyncio task that waits
for them, so a web server can stream tokens and abort requests whose clients went away.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

import torch

from ..plt.configuration import LoopSpec
from .block_manager import BlockManager
from .grammar import GrammarCompiler
from .config import EngineConfig
from .loop_state import LoopStateStore
from .memory import (MemoryPlan, default_max_model_len, keep_freed_cpu_memory, kv_block_bytes, plan_kv_blocks,
                     prefill_gather_bytes, recompute_tail, slot_bytes)
from .model_runner import ModelRunner
from .sampler import sample, sample_on_device
from .scheduler import PrefillChunk, Scheduler
from .sequence import Sequence, Status
from .types import EngineOverloaded, EngineStats, RequestTooLong, SamplingParams, TokenEvent

log = logging.getLogger(__name__)


@dataclass
class _Sampled:
    """Tokens sampled on the device for ``seqs`` and on their way to the host: ``host`` (pinned on CUDA) is
    filled by a non-blocking copy that ``event`` marks done; the host reads it in ``_resolve``."""
    seqs: list[Sequence]
    chosen: torch.Tensor  # [B] on the device
    host: torch.Tensor  # [B] on the host
    event: torch.cuda.Event | None
    logprobs: list
    decode: bool  # a decode step (its input positions are counted as computed when it is read)


class LLMEngine:
    def __init__(self, model, tokenizer, cfg: EngineConfig):
        device = next(model.parameters()).device.type
        if cfg.max_model_len is None:
            cfg = cfg.model_copy(update={"max_model_len": default_max_model_len(
                device, getattr(model.config, "max_position_embeddings", None))})
        self.model = model
        self.tokenizer = tokenizer
        if device == "cpu":
            keep_freed_cpu_memory()  # memory.py: a third less wall time on CPU prefill, measured
        # load_checkpoint already warned if the loop count differs from the trained one
        self.spec = LoopSpec.from_config(model.config, cfg.num_loops, warn=False)
        self.memory_plan = None
        if cfg.num_kv_blocks is None and device == "cuda":
            # a small pool for the profile run; resized to what the memory allows afterwards
            self.cfg = cfg
            self.runner = ModelRunner(model, cfg, self.spec, -(-cfg.max_num_batched_tokens // cfg.block_size) + 1)
            self.memory_plan = self._plan_gpu_memory()
            num_blocks = self.memory_plan.num_blocks
            self.runner.resize_kv(num_blocks)
            log.info("%s", self.memory_plan.summary())
        else:
            num_blocks = cfg.num_kv_blocks or cfg.max_num_seqs * -(-cfg.max_model_len // cfg.block_size)
            self.runner = ModelRunner(model, cfg, self.spec, num_blocks)
        self.cfg = cfg
        self.blocks = BlockManager(num_blocks, cfg.block_size, cfg.max_num_seqs, cfg.enable_prefix_caching)
        self.recompute_tail = recompute_tail(self.spec.num_loops, model.config.num_hidden_layers, self.spec.window,
                                             self.spec.clp)
        # rings and carry at recent prompts' ends (loop_state.py): only loops >= 1 have them to restore
        self.snapshots = (LoopStateStore(cfg.loop_state_snapshots) if self.recompute_tail
                          and cfg.enable_prefix_caching and cfg.loop_state_snapshots else None)
        self.scheduler = Scheduler(self.blocks, cfg.max_num_seqs, cfg.max_num_batched_tokens, self.recompute_tail,
                                   max_prefill_context=cfg.max_model_len, snapshots=self.snapshots)
        self.vocab_size = model.config.vocab_size
        self.eos_ids = frozenset(_eos_ids(model, tokenizer))
        self.generator = torch.Generator(device=self.runner.device)
        self.generator.seed()
        self.grammars = GrammarCompiler(tokenizer, self.vocab_size, sorted(self.eos_ids),
                                        pin_memory=self.runner.device.type == "cuda")
        self._inbox: collections.deque[Sequence] = collections.deque()
        self._aborts: set[str] = set()
        self._lock = threading.Lock()  # guards inbox and aborts (the only state other threads touch)
        self._requests: dict[str, Sequence] = {}
        self.counters = collections.Counter()
        # Async scheduling (docs/engine.md): the decode step whose tokens the host has not read yet, and
        # the last decode step launched (its tokens on the device feed the next step's inputs).
        self.async_scheduling = (cfg.async_scheduling if cfg.async_scheduling is not None
                                 else self.runner.device.type == "cuda")
        self._inflight: _Sampled | None = None
        self._last_decode: _Sampled | None = None
        self._host_buffers: list[torch.Tensor] = []  # two, used in turn (one read while one is filled)
        self._events = [torch.cuda.Event(), torch.cuda.Event()] if self.runner.device.type == "cuda" else None
        self._turn = 0
        self.decode_seconds = 0.0  # wall time of decode steps (step() from start to sampled tokens)
        self.ready = False  # warm_up() done (the server's /health waits for it)
        self.warmup_seconds: float | None = None
        self.warmup_error: str | None = None
        started = time.perf_counter()
        if cfg.cuda_graphs and self.runner.device.type == "cuda":
            self.runner.capture_graphs()
        self.graph_capture_seconds = time.perf_counter() - started

    def _plan_gpu_memory(self) -> MemoryPlan:
        """Profile the largest prefill and decode on a small pool, then size the KV pool (memory.py)."""
        cfg, runner = self.cfg, self.runner
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        tokens = min(cfg.max_num_batched_tokens, cfg.max_model_len - 1)
        seq = Sequence("profile", [0] * (tokens + 1), SamplingParams(max_tokens=1), frozenset(), 0.0)
        seq.block_table, seq.slot = list(range(-(-(tokens + 1) // cfg.block_size))), 0
        runner.reset_slot(0)
        runner.prefill([PrefillChunk(seq, 0, tokens)])
        seq.num_computed = tokens
        runner.decode([seq] * max(n for n in [cfg.max_num_seqs] + cfg.graph_batch_sizes if n <= cfg.max_num_seqs))
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        free, total = torch.cuda.mem_get_info()
        non_torch = max(0, total - free - torch.cuda.memory_reserved())
        dtype_bytes = runner.k_pool.element_size()
        # the profile gathered a context of `tokens`; a prefill step may gather up to max_model_len
        extra = prefill_gather_bytes(cfg.max_model_len - tokens, runner.num_kv_heads, runner.head_dim, dtype_bytes)
        # the profile pool itself is freed by the resize
        small_pool = runner.k_pool.numel() * dtype_bytes * 2
        block = kv_block_bytes(runner.num_layers, cfg.block_size, runner.num_kv_heads, runner.head_dim, dtype_bytes)
        # loop-state snapshots are allocated while serving (loop_state.py): one slot's rings and carry each
        snapshots = cfg.loop_state_snapshots if self.spec.num_loops > 1 and cfg.enable_prefix_caching else 0
        snapshot = slot_bytes(runner.num_layers, self.spec.num_loops, self.spec.window, runner.num_kv_heads,
                              runner.head_dim, runner.hidden, dtype_bytes)
        return plan_kv_blocks(total, cfg.gpu_memory_utilization, non_torch, peak - small_pool, extra, block,
                              min_blocks=-(-cfg.max_model_len // cfg.block_size), snapshot_bytes=snapshots * snapshot)

    @torch.no_grad()
    def warm_up(self) -> float:
        """Run every kernel variant the engine launches once, before serving, so no request pays for a
        Triton compile or autotune: prefill chunks of 1, 16, 17 and max_num_batched_tokens tokens (Triton
        specialises integer arguments that are 1 or multiples of 16), two chunks in one step, a chunk
        continuing a sequence and the fresh chunk of a prefix-cache hit; every captured decode graph and
        the eager decode beyond the largest one; the sampler. On CPU this is one small prefill and decode
        pass. Uses a slot and blocks of its own and gives them back; nothing enters the prefix cache.
        Returns the seconds it took (CUDA graph capture, done at construction, included)."""
        if self.scheduler.has_work():  # requests may wait in the inbox: step() has not taken them yet
            raise RuntimeError("warm_up() runs before any request is scheduled")
        started = time.perf_counter()
        cfg, runner = self.cfg, self.runner
        cuda = runner.device.type == "cuda"
        count = 2 if cuda and cfg.max_num_seqs > 1 else 1  # warm-up requests (and slots) used
        # the longest chunk whose requests (its tokens plus two) fit the pool
        top = min(cfg.max_num_batched_tokens, cfg.max_model_len - 2,
                  (self.blocks.num_blocks // count) * cfg.block_size - 2)
        if top < 1:
            raise RuntimeError(f"the KV pool ({self.blocks.num_blocks} blocks) is too small to run a request")
        lengths = sorted({n for n in (1, 16, 17, top) if n <= top}) if cuda else [min(17, top)]
        greedy = SamplingParams(max_tokens=1, temperature=0)
        seqs = [Sequence(f"warmup-{i}", [1] * (top + 2), greedy, frozenset(), 0.0) for i in range(count)]
        try:
            for seq in seqs:
                self.blocks.take_slot(seq)
                self.blocks.grow(seq, top + 2)
            for n in lengths:
                runner.reset_slot(seqs[0].slot)
                sample(runner.prefill([PrefillChunk(seqs[0], 0, n)]), [seqs[0]], self.generator)
            if count == 2 and top > 2:
                half = top // 2
                runner.reset_slot(seqs[1].slot)
                runner.prefill([PrefillChunk(seqs[0], 0, half), PrefillChunk(seqs[1], 0, top - half)])
                runner.prefill([PrefillChunk(seqs[0], half, top - half)])  # continues: old ring entries
                runner.prefill([PrefillChunk(seqs[1], half, top - half, write_from=top, fresh=True)])
            for seq in seqs:
                seq.output_ids, seq.num_computed = [1], top + 1
                del seq.prompt_ids[top + 1:]
            # every captured graph once, and eager decode at batch 1 and the largest batch (beyond the graphs)
            batches = sorted(set(runner.graphs) | {1, cfg.max_num_seqs}) if cuda else [1]
            for batch in batches:
                batch_seqs = [seqs[i % count] for i in range(batch)]
                sample(runner.decode(batch_seqs), batch_seqs, self.generator)
            if cuda:
                torch.cuda.synchronize()
        finally:
            for seq in seqs:
                self.blocks.release(seq)
        self.warmup_seconds = time.perf_counter() - started + self.graph_capture_seconds
        self.ready = True
        return self.warmup_seconds

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> "LLMEngine":
        from ..plt.checkpoint import load_checkpoint

        model, tokenizer = load_checkpoint(cfg.model, dtype=cfg.dtype, device=cfg.device, num_loops=cfg.num_loops)
        return cls(model, tokenizer, cfg)

    @property
    def max_model_len(self) -> int:
        return self.cfg.max_model_len

    # -- requests ---------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None,
               fork_ids: list[str] | tuple[str, ...] = ()) -> str:
        """Queue a request (thread-safe); raises RequestTooLong, EngineOverloaded, GrammarError or
        ValueError at once.

        ``fork_ids``: more requests (n > 1) that sample from the same prompt with the same params: the
        prompt is computed once and each fork starts from a copy of its cache. Each id is a request of
        its own (events, abort); with a seed s, fork i (1-based) samples with seed s + i.
        """
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self.cfg.max_model_len:
            raise RequestTooLong(f"prompt has {len(prompt_ids)} tokens; the engine's max_model_len is "
                                 f"{self.cfg.max_model_len} (prompt plus at least one new token)",
                                 len(prompt_ids), self.cfg.max_model_len)
        if -(-(len(prompt_ids) + 1) // self.cfg.block_size) > self.blocks.num_blocks:
            limit = self.blocks.num_blocks * self.cfg.block_size
            raise RequestTooLong(f"prompt has {len(prompt_ids)} tokens; the engine's KV cache holds {limit} tokens "
                                 f"(prompt plus at least one new token)", len(prompt_ids), limit)
        bad = [t for t in prompt_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (size {self.vocab_size})")
        bad = [t for t in params.logit_bias if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"logit_bias token id {bad[0]} is outside the vocabulary (size {self.vocab_size})")
        request_id = request_id or uuid.uuid4().hex
        seq = self._sequence(request_id, prompt_ids, params, params.seed)
        for i, fork_id in enumerate(fork_ids, 1):
            child = self._sequence(fork_id, prompt_ids, params, None if params.seed is None else params.seed + i)
            child.fork_of = seq
            seq.forks.append(child)
        with self._lock:
            if len(self._inbox) + len(self.scheduler.waiting) >= self.cfg.max_waiting:
                raise EngineOverloaded(f"{self.cfg.max_waiting} requests are already waiting; retry later")
            self._inbox.append(seq)
        return request_id

    def _sequence(self, request_id: str, prompt_ids: list[int], params: SamplingParams, seed: int | None):
        seq = Sequence(request_id, list(prompt_ids), params,
                       frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_ids),
                       time.monotonic())
        if seed is not None:
            seq.generator = torch.Generator(device=self.runner.device).manual_seed(seed)
        if params.grammar is not None:
            seq.grammar = self.grammars.matcher(params.grammar)
        return seq

    def abort(self, request_id: str) -> None:
        """Stop a request and free its cache (thread-safe); its last event says finish_reason "abort"."""
        with self._lock:
            self._aborts.add(request_id)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._inbox or self._aborts or self.scheduler.has_work() or self._inflight is not None)

    # -- one step ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[TokenEvent]:
        """Run one step; returns the token events it produced.

        With async scheduling, a decode step's tokens are read by the next step() call: it first launches
        the following decode step for the same requests (inputs fed on the device from the unread tokens,
        their next KV block taken one step ahead), then reads the previous step's tokens while that runs
        and does their bookkeeping (stop ids, max_tokens, events). A request found finished there has its
        token of the step already launched discarded (``_resolve``). A step that needs the host between
        the two (``_overlap_batch``) reads the tokens first and runs synchronously."""
        started = time.perf_counter()
        events: list[TokenEvent] = []
        with self._lock:
            incoming, self._inbox = list(self._inbox), collections.deque()
            aborts, self._aborts = self._aborts, set()
        for seq in incoming:
            self._requests[seq.request_id] = seq
            for child in seq.forks:
                self._requests[child.request_id] = child
            self.scheduler.add(seq)
        for rid in aborts:
            seq = self._requests.get(rid)
            if seq is not None and seq.status is not Status.FINISHED:
                self._finish(seq, "abort", events)
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            batch = self._overlap_batch(inflight.seqs)
            if batch is not None:  # launch the next step before reading the previous one's tokens
                self._inflight = self._launch_decode(batch)
                self.counters["overlapped_steps"] += 1
            self._resolve(inflight, events)
            if batch is not None:
                self._count_decode(started)
                return events
        schedule = self.scheduler.schedule()
        if schedule.prefill:
            for chunk in schedule.prefill:
                if chunk.restore is not None:
                    self.runner.restore_slot(chunk.seq.slot, chunk.restore)
                elif chunk.start == 0 or chunk.fresh:
                    self.runner.reset_slot(chunk.seq.slot)
            logits = self.runner.prefill(schedule.prefill)
            for chunk in schedule.prefill:
                chunk.seq.num_computed += chunk.length
                self.blocks.register(chunk.seq)
                self.counters["prompt_tokens"] += chunk.length
                if self.scheduler.snapshot_due(chunk.seq):  # its prompt's end or its snapshot point
                    self.snapshots.keep(chunk.seq, lambda slot=chunk.seq.slot: self.runner.save_slot(slot))
            rows, seqs = [], []
            for i, chunk in enumerate(schedule.prefill):
                if chunk.samples:
                    for seq in [chunk.seq] + self._fork(chunk.seq):
                        rows.append(i)
                        seqs.append(seq)
            if seqs:
                self._append(logits[torch.tensor(rows, device=logits.device)], seqs, events)
        elif schedule.decode:
            launched = self._launch_decode(schedule.decode)
            if self.async_scheduling and self._overlappable(schedule.decode):
                self._inflight = launched  # read by the next step()
            else:
                self._resolve(launched, events)
            self._count_decode(started)
            return events
        self.counters["steps"] += 1
        return events

    def _count_decode(self, started: float) -> None:
        # the engine's own decode speed: wall time of the step() calls that launched a decode step
        self.counters["decode_steps"] += 1
        self.counters["steps"] += 1
        self.decode_seconds += time.perf_counter() - started

    @staticmethod
    def _overlappable(seqs: list[Sequence]) -> bool:
        """Whether the next decode step of ``seqs`` may be launched before the host reads this one's tokens:
        not when a request's next sampling reads host state those tokens change (a grammar matcher, the
        penalties' token counts) or asks for logprobs (read with its tokens)."""
        return not any(s.grammar is not None or s.params.penalized or s.params.logprobs is not None for s in seqs)

    def _overlap_batch(self, seqs: list[Sequence]) -> list[Sequence] | None:
        """The requests of the in-flight decode step ``seqs`` whose next step is launched before its
        tokens are read, or None when this step must be synchronous: async scheduling off, a prefill chunk
        (a new request, a fork, a preempted request) ready to run, a request that needs the host between
        steps (``_overlappable``), or no KV block for a request's next position (preemption is decided on
        read tokens). Requests that step finishes for certain (max_tokens, max_model_len) or that were
        aborted are left out; the others get the block of their next position now."""
        if not self.async_scheduling or not self._overlappable(seqs) or self.scheduler.prefill_ready():
            return None
        batch = [s for s in seqs if s.status is Status.RUNNING
                 and len(s.output_ids) + s.num_pending < s.params.max_tokens
                 and s.num_tokens + s.num_pending < self.cfg.max_model_len]
        if not batch:
            return None
        # the next step writes position next_position: its block must exist (one step ahead)
        need = sum(self.blocks.blocks_needed(s, s.next_position + 1) for s in batch)
        if need > self.blocks.num_free:
            return None
        for s in batch:
            self.blocks.grow(s, s.next_position + 1)
        return batch

    def _launch_decode(self, seqs: list[Sequence]) -> _Sampled:
        """Queue a decode step for ``seqs`` and its sampling; nothing here waits for the device. Input ids
        come from the last decode step's tokens on the device where the host may not have them."""
        ids, last = None, self._last_decode
        if last is not None:
            if len(last.seqs) == len(seqs) and all(a is b for a, b in zip(last.seqs, seqs)):
                ids = last.chosen
            elif any(s.num_pending for s in seqs):  # a subset of the last batch, tokens not read yet
                row = {id(s): i for i, s in enumerate(last.seqs)}
                index = torch.tensor([row[id(s)] for s in seqs])
                if index.device != last.chosen.device:
                    index = index.pin_memory().to(last.chosen.device, non_blocking=True)
                ids = last.chosen[index]
        logits = self.runner.decode(seqs, ids)
        self._last_decode = launched = self._sample(logits, seqs, decode=True)
        for seq in seqs:
            seq.num_pending += 1
        return launched

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence], decode: bool = False) -> _Sampled:
        """Sample on the device and start copying the tokens to the host (non-blocking, pinned)."""
        # The bitmask is filled on the host while a CUDA decode step may still be running.
        bitmask = self.grammars.fill_bitmask([s.grammar for s in seqs])
        chosen, logprobs = sample_on_device(logits, seqs, self.generator, bitmask)
        n = len(seqs)
        self._turn ^= 1
        if len(self._host_buffers) < 2 or self._host_buffers[self._turn].numel() < n:
            size = max(n, self.cfg.max_num_seqs)
            pin = chosen.device.type == "cuda"
            self._host_buffers = [torch.empty(size, dtype=torch.int64, pin_memory=pin) for _ in range(2)]
        host = self._host_buffers[self._turn][:n]
        host.copy_(chosen, non_blocking=True)
        event = None
        if self._events is not None:
            event = self._events[self._turn]
            event.record()
        return _Sampled(seqs, chosen, host, event, logprobs, decode)

    def _resolve(self, sampled: _Sampled, events: list[TokenEvent]) -> None:
        """Read sampled tokens (waiting for their copy only) and do each request's bookkeeping. A decode
        step's token of a request that is no longer running (it finished, or was aborted, at the step
        before, whose tokens were read after this one was launched) is discarded: never emitted, never
        counted; its K/V, ring and carry writes went to a position past the request's end, in blocks and
        a slot it no longer holds, which their next owner writes before it reads (docs/engine.md)."""
        if sampled.event is not None:
            sampled.event.synchronize()
        tokens = sampled.host.tolist()
        seqs, logprobs = sampled.seqs, sampled.logprobs
        if sampled.decode:
            keep = []
            for i, seq in enumerate(seqs):
                seq.num_pending -= 1
                if seq.status is Status.RUNNING:
                    keep.append(i)
                else:
                    self.counters["discarded_tokens"] += 1
            seqs, tokens, logprobs = ([x[i] for i in keep] for x in (seqs, tokens, logprobs))
            for seq in seqs:
                seq.num_computed += 1  # the step's input position is in the cache now
                self.blocks.register(seq)
        self._accept(seqs, tokens, logprobs, events)

    def _fork(self, parent: Sequence) -> list[Sequence]:
        """Parent's prompt is in the cache: its forks start from a copy (or wait and recompute it)."""
        forks, parent.forks = parent.forks, []
        for child in forks:
            child.fork_of = None
            admitted, blocks = self.scheduler.fork(parent, child)
            if admitted:
                self.runner.copy_cache(parent.slot, child.slot, blocks)
        return forks

    def _append(self, logits: torch.Tensor, seqs: list[Sequence], events: list[TokenEvent]) -> None:
        """Sample one token per row of ``logits`` for ``seqs`` and take it at once (prefill rows)."""
        self._resolve(self._sample(logits, seqs), events)

    def _accept(self, seqs: list[Sequence], tokens: list[int], logprobs: list, events: list[TokenEvent]) -> None:
        """Each request's new token: output, stop ids, grammar, max_tokens and max_model_len, events."""
        for seq, token, logprob in zip(seqs, tokens, logprobs):
            seq.output_ids.append(token)
            if logprob is not None:
                seq.output_logprobs.append(logprob)
            self.counters["generation_tokens"] += 1
            if seq.grammar is not None and not seq.grammar.accept_token(token):
                log.error("request %s: sampled token %d outside its grammar", seq.request_id, token)
                self._finish(seq, "error", events)
            elif token in seq.stop_ids or (seq.grammar is not None and seq.grammar.is_terminated()):
                self._finish(seq, "stop", events)
            elif len(seq.output_ids) >= seq.params.max_tokens or seq.num_tokens >= self.cfg.max_model_len:
                self._finish(seq, "length", events)
            else:
                events.append(self._event(seq))

    def _finish(self, seq: Sequence, reason: str, events: list[TokenEvent]) -> None:
        self.scheduler.finish(seq, reason)
        self._requests.pop(seq.request_id, None)
        self.counters["aborted" if reason == "abort" else "finished"] += 1
        if seq.fork_of is not None and seq in seq.fork_of.forks:  # a fork that had not started yet
            seq.fork_of.forks.remove(seq)
        for child in seq.forks:  # the parent ended before its prompt was computed: forks go alone
            child.fork_of = None
            self.scheduler.add(child)
        seq.forks = []
        events.append(self._event(seq))

    @staticmethod
    def _event(seq: Sequence) -> TokenEvent:
        new = seq.output_ids[seq.num_emitted:]
        logprobs = seq.output_logprobs[seq.num_emitted:] if seq.params.logprobs is not None else None
        seq.num_emitted = len(seq.output_ids)
        return TokenEvent(seq.request_id, new, seq.status is Status.FINISHED, seq.finish_reason,
                          len(seq.prompt_ids), len(seq.output_ids), logprobs, seq.cached_tokens)

    def fail_all(self, reason: str = "error") -> list[TokenEvent]:
        """Finish every request (after an engine failure) so no caller waits forever."""
        events: list[TokenEvent] = []
        with self._lock:
            pending, self._inbox = list(self._inbox), collections.deque()
        pending += [child for seq in pending for child in seq.forks]
        self._inflight = self._last_decode = None  # their requests finish here; their tokens are dropped
        for seq in pending + list(self._requests.values()):
            if seq.status is not Status.FINISHED:
                self._finish(seq, reason, events)
        return events

    def stats(self) -> EngineStats:
        return EngineStats(
            num_waiting=len(self.scheduler.waiting) + len(self._inbox), num_running=len(self.scheduler.running),
            kv_blocks_used=self.blocks.used_blocks, kv_blocks_total=self.blocks.num_blocks,
            prompt_tokens_total=self.counters["prompt_tokens"],
            generation_tokens_total=self.counters["generation_tokens"],
            requests_finished_total=self.counters["finished"], requests_aborted_total=self.counters["aborted"],
            steps_total=self.counters["steps"],
            prefix_cache_hit_tokens_total=self.scheduler.cache_hit_tokens,
            prefix_cache_recomputed_tokens_total=self.scheduler.cache_recomputed_tokens,
            prefix_cache_skipped_tokens_total=self.scheduler.cache_skipped_tokens,
            prefix_cache_blocks=self.blocks.num_cached_blocks,
            prefix_cache_evictions_total=self.blocks.evictions,
            prefix_cache_snapshot_hits_total=self.scheduler.snapshot_hits,
            loop_state_snapshots=len(self.snapshots) if self.snapshots is not None else 0,
            ready=self.ready,
            decode_steps_total=self.counters["decode_steps"], decode_seconds_total=self.decode_seconds,
            preemptions_total=self.scheduler.num_preemptions,
        )

    # -- offline use --------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 arrivals: list[int] | None = None) -> list[list[int]]:
        """Run prompts to completion; ``arrivals[i]`` = engine step at which prompt i is submitted."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        arrivals = arrivals or [0] * len(prompts)
        ids = [f"offline-{i}" for i in range(len(prompts))]
        outputs: dict[str, list[int]] = {rid: [] for rid in ids}
        pending = sorted(range(len(prompts)), key=lambda i: arrivals[i])
        for step in itertools.count():
            while pending and arrivals[pending[0]] <= step:
                i = pending.pop(0)
                self.submit(prompts[i], params[i], ids[i])
            if not pending and not self.has_work():
                break
            for event in self.step():
                outputs[event.request_id] += event.token_ids
        return [outputs[rid] for rid in ids]


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), model.config.eos_token_id,
                   getattr(tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        ids.update(source if isinstance(source, (list, tuple)) else [source])
    return ids


class AsyncLLMEngine:
    """asyncio front of LLMEngine: the engine steps on its own thread; each request gets a queue."""

    def __init__(self, engine: LLMEngine, model_name: str | None = None, on_ready=None):
        self.engine = engine
        self.on_ready = on_ready  # called once with the warm-up's seconds, on the engine thread
        self.tokenizer = engine.tokenizer
        self.model_name = model_name or str(engine.cfg.model).rstrip("/").split("/")[-1]
        self._queues: dict[str, asyncio.Queue] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, cfg: EngineConfig, model_name: str | None = None, on_ready=None) -> "AsyncLLMEngine":
        return cls(LLMEngine.from_config(cfg), model_name, on_ready)

    @property
    def ready(self) -> bool:
        """The warm-up is done (start() runs it on the engine thread before any request)."""
        return self.engine.ready

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def eos_ids(self) -> frozenset[int]:
        return self.engine.eos_ids

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary (its logits), which may be larger than the tokenizer's."""
        return self.engine.vocab_size

    @property
    def keeps_loop_states(self) -> bool:
        """Loop-state snapshots are on (R > 1, prefix caching): SamplingParams.snapshot_at is worth setting."""
        return self.engine.snapshots is not None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="loopcoder-engine", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)
        self._wake.set()

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[TokenEvent]:
        """Token events of one request; leaving the loop early (client gone) aborts the request."""
        [stream] = await self.generate_many(prompt_token_ids, params, [request_id or uuid.uuid4().hex])
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()

    async def generate_many(self, prompt_token_ids: list[int], params: SamplingParams,
                            request_ids: list[str]) -> list["RequestStream"]:
        """One event stream per request id, all sampling from one prompt whose prefill is computed
        once (n > 1). Submission errors (RequestTooLong, EngineOverloaded, GrammarError, ValueError)
        raise here. Close every stream (``aclose``) that is not read to its end: that aborts it."""
        if params.grammar is not None:
            # Compiling can take a while for big schemas and vocabularies: not on the event loop
            # (the result is cached, so submit's own compile is a lookup).
            await asyncio.get_running_loop().run_in_executor(None, self.engine.grammars.compile, params.grammar)
        streams = [RequestStream(self, rid) for rid in request_ids]
        for stream in streams:
            self._queues[stream.request_id] = stream.queue
        try:
            self.engine.submit(prompt_token_ids, params, request_ids[0], fork_ids=request_ids[1:])
        except Exception:
            for rid in request_ids:
                self._queues.pop(rid, None)
            raise
        self._wake.set()
        return streams

    def _deliver(self, events: list[TokenEvent]) -> None:
        for event in events:
            queue = self._queues.get(event.request_id)
            if queue is not None:
                queue.put_nowait(event)

    def _run(self) -> None:
        if not self.engine.ready:
            # Requests submitted meanwhile wait in the inbox; /health says 503 until this is done.
            try:
                seconds = self.engine.warm_up()
            except Exception as exc:  # serve anyway (requests fail on their own); /health reports it
                log.exception("warm-up failed")
                self.engine.warmup_error = f"warm-up failed: {type(exc).__name__}: {exc}"
            else:
                log.info("warm-up took %.2f s", seconds)
                if self.on_ready is not None:
                    self.on_ready(seconds)
        while not self._stop.is_set():
            if not self.engine.has_work():
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                events = self.engine.step()
            except Exception:  # keep serving: fail the requests in flight, report, go on
                log.exception("engine step failed; finishing all requests in flight")
                events = self.engine.fail_all("error")
            if events:
                self._loop.call_soon_threadsafe(self._deliver, events)


class RequestStream:
    """Async iterator of one request's TokenEvents (from AsyncLLMEngine.generate_many); ``aclose``
    aborts the request unless it finished, and stops its delivery."""

    def __init__(self, front: AsyncLLMEngine, request_id: str):
        self.front = front
        self.request_id = request_id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finished = False
        self.closed = False

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> TokenEvent:
        if self.finished or self.closed:
            raise StopAsyncIteration
        event = await self.queue.get()
        if event.finished:
            self.finished = True
            self.front._queues.pop(self.request_id, None)
        return event

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.finished:
            self.front.abort(self.request_id)
        self.front._queues.pop(self.request_id, None)
