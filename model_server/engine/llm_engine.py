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
from typing import AsyncIterator

import torch

from ..plt.configuration import LoopSpec
from .block_manager import BlockManager
from .grammar import GrammarCompiler
from .config import EngineConfig
from .model_runner import ModelRunner
from .sampler import Sampled, sample
from .scheduler import Scheduler
from .sequence import Sequence, Status
from .types import EngineOverloaded, EngineStats, RequestTooLong, SamplingParams, TokenEvent

log = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, model, tokenizer, cfg: EngineConfig):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        # load_checkpoint already warned if the loop count differs from the trained one
        self.spec = LoopSpec.from_config(model.config, cfg.num_loops, warn=False)
        num_blocks = cfg.num_kv_blocks or cfg.max_num_seqs * -(-cfg.max_model_len // cfg.block_size)
        self.runner = ModelRunner(model, cfg, self.spec, num_blocks)
        self.blocks = BlockManager(num_blocks, cfg.block_size, cfg.max_num_seqs)
        self.scheduler = Scheduler(self.blocks, cfg.max_num_seqs, cfg.max_num_batched_tokens)
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
        if cfg.cuda_graphs and self.runner.device.type == "cuda":
            self.runner.capture_graphs()

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
            return bool(self._inbox or self._aborts or self.scheduler.has_work())

    # -- one step ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[TokenEvent]:
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
        schedule = self.scheduler.schedule()
        if schedule.prefill:
            for chunk in schedule.prefill:
                if chunk.start == 0:
                    self.runner.reset_slot(chunk.seq.slot)
            logits = self.runner.prefill(schedule.prefill)
            for chunk in schedule.prefill:
                chunk.seq.num_computed += chunk.length
                self.counters["prompt_tokens"] += chunk.length
            rows, seqs = [], []
            for i, chunk in enumerate(schedule.prefill):
                if chunk.samples:
                    for seq in [chunk.seq] + self._fork(chunk.seq):
                        rows.append(i)
                        seqs.append(seq)
            if seqs:
                self._append(logits[torch.tensor(rows, device=logits.device)], seqs, events)
        elif schedule.decode:
            logits = self.runner.decode(schedule.decode)
            for seq in schedule.decode:
                seq.num_computed += 1
            sampled = self._append(logits, schedule.decode, events)
            # the next decode step's input ids stay on the device (model_runner.decode)
            self.runner.feed_tokens(sampled.chosen, sampled.tokens)
        self.counters["steps"] += 1
        return events

    def _fork(self, parent: Sequence) -> list[Sequence]:
        """Parent's prompt is in the cache: its forks start from a copy (or wait and recompute it)."""
        forks, parent.forks = parent.forks, []
        for child in forks:
            child.fork_of = None
            admitted, blocks = self.scheduler.fork(parent, child)
            if admitted:
                self.runner.copy_cache(parent.slot, child.slot, blocks)
        return forks

    def _append(self, logits: torch.Tensor, seqs: list[Sequence], events: list[TokenEvent]) -> Sampled:
        # The bitmask is filled on the host while a CUDA decode step may still be running.
        bitmask = self.grammars.fill_bitmask([s.grammar for s in seqs])
        sampled = sample(logits, seqs, self.generator, bitmask)
        for seq, token, logprob in zip(seqs, sampled.tokens, sampled.logprobs):
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
        return sampled

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
                          len(seq.prompt_ids), len(seq.output_ids), logprobs)

    def fail_all(self, reason: str = "error") -> list[TokenEvent]:
        """Finish every request (after an engine failure) so no caller waits forever."""
        events: list[TokenEvent] = []
        with self._lock:
            pending, self._inbox = list(self._inbox), collections.deque()
        pending += [child for seq in pending for child in seq.forks]
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

    def __init__(self, engine: LLMEngine, model_name: str | None = None):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = model_name or str(engine.cfg.model).rstrip("/").split("/")[-1]
        self._queues: dict[str, asyncio.Queue] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, cfg: EngineConfig, model_name: str | None = None) -> "AsyncLLMEngine":
        return cls(LLMEngine.from_config(cfg), model_name)

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
