"""Prometheus text exposition (format 0.0.4) for /metrics: server counters plus the engine's stats.

Written by hand (a few counters and histograms) rather than pulling in prometheus_client.
"""
from __future__ import annotations

import bisect
import threading
from collections import defaultdict

PREFIX = "loopcoder"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


class Histogram:
    """Cumulative-bucket histogram of one unlabelled series."""

    def __init__(self, buckets=LATENCY_BUCKETS):
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.bounds + [float("inf")], self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out += [f"{name}_sum {self.sum!r}", f"{name}_count {running}"]
        return out


class ServerMetrics:
    """Counters and latency histograms the API layer records; thread-safe, cheap to update."""

    def __init__(self):
        self.lock = threading.Lock()
        self.http_requests: dict[tuple[str, int], int] = defaultdict(int)
        self.finish_reasons: dict[str, int] = defaultdict(int)
        self.disconnects = 0
        self.time_to_first_token = Histogram()
        self.request_latency = Histogram()

    def record_http(self, path: str, status: int) -> None:
        with self.lock:
            self.http_requests[(path, status)] += 1

    def record_finish(self, reason: str | None, latency_s: float) -> None:
        with self.lock:
            self.finish_reasons[reason or "unknown"] += 1
            self.request_latency.observe(latency_s)

    def record_first_token(self, seconds: float) -> None:
        with self.lock:
            self.time_to_first_token.observe(seconds)

    def record_disconnect(self) -> None:
        with self.lock:
            self.disconnects += 1

    def render(self, stats) -> str:
        """The exposition text; ``stats`` is the engine's EngineStats (or None if it is unavailable)."""
        p = PREFIX
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
            lines.append(f"# HELP {p}_{name} {help_text}")
            lines.append(f"# TYPE {p}_{name} {kind}")
            for labels, value in samples:
                lines.append(f"{p}_{name}{_labels(labels)} {_number(value)}")

        with self.lock:
            metric("http_requests_total", "counter", "HTTP requests answered, by path and status code.",
                   [({"path": path, "status": str(status)}, n) for (path, status), n in sorted(self.http_requests.items())])
            metric("request_finished_total", "counter", "Generations finished, by finish reason.",
                   [({"finish_reason": r}, n) for r, n in sorted(self.finish_reasons.items())])
            metric("client_disconnects_total", "counter", "Requests whose client left before the answer ended.",
                   [({}, self.disconnects)])
            for name, hist, help_text in (
                    ("time_to_first_token_seconds", self.time_to_first_token, "Time from request to first token."),
                    ("request_latency_seconds", self.request_latency, "Time from request to last token.")):
                lines.append(f"# HELP {p}_{name} {help_text}")
                lines.append(f"# TYPE {p}_{name} histogram")
                lines.extend(hist.lines(f"{p}_{name}"))
        if stats is not None:
            gauges = [("num_requests_waiting", "Requests queued for a slot.", stats.num_waiting),
                      ("num_requests_running", "Requests holding a slot.", stats.num_running),
                      ("kv_blocks_used", "KV cache blocks in use.", stats.kv_blocks_used),
                      ("kv_blocks_total", "KV cache blocks in all.", stats.kv_blocks_total),
                      ("prefix_cache_blocks", "KV blocks whose content is in the prefix cache (held or evictable).",
                       getattr(stats, "prefix_cache_blocks", 0)),
                      ("loop_state_snapshots", "Loop-state snapshots held at prompt ends (rings and carry).",
                       getattr(stats, "loop_state_snapshots", 0))]
            for name, help_text, value in gauges:
                metric(name, "gauge", help_text, [({}, value)])
            usage = stats.kv_blocks_used / stats.kv_blocks_total if stats.kv_blocks_total else 0.0
            metric("kv_cache_usage_ratio", "gauge", "Share of KV cache blocks in use.", [({}, usage)])
            counters = [("prompt_tokens_total", "Prompt tokens prefilled.", stats.prompt_tokens_total),
                        ("generation_tokens_total", "Tokens generated.", stats.generation_tokens_total),
                        ("engine_requests_finished_total", "Requests the engine finished.",
                         stats.requests_finished_total),
                        ("engine_requests_aborted_total", "Requests the engine aborted.",
                         stats.requests_aborted_total),
                        ("engine_steps_total", "Engine steps run.", stats.steps_total),
                        ("prefix_cache_hit_tokens_total", "Prompt tokens found in the prefix cache.",
                         getattr(stats, "prefix_cache_hit_tokens_total", 0)),
                        ("prefix_cache_recomputed_tokens_total", "Prefix-cache hit tokens run through the loops "
                         "again to rebuild rings and carry (their loop-0 K/V is reused).",
                         getattr(stats, "prefix_cache_recomputed_tokens_total", 0)),
                        ("prefix_cache_skipped_tokens_total", "Prompt tokens not computed at all thanks to the "
                         "prefix cache (usage's cached_tokens).", getattr(stats, "prefix_cache_skipped_tokens_total", 0)),
                        ("prefix_cache_evictions_total", "Cached KV blocks evicted for new ones.",
                         getattr(stats, "prefix_cache_evictions_total", 0)),
                        ("prefix_cache_snapshot_hits_total", "Prefix-cache hits resumed from a loop-state snapshot "
                         "at an earlier prompt's end (no tail recompute).",
                         getattr(stats, "prefix_cache_snapshot_hits_total", 0)),
                        ("engine_decode_steps_total", "Decode steps run.", getattr(stats, "decode_steps_total", 0)),
                        ("engine_decode_seconds_total", "Wall time of the decode steps (sampling included).",
                         float(getattr(stats, "decode_seconds_total", 0.0))),
                        ("engine_preemptions_total", "Running requests preempted for KV blocks (recomputed later).",
                         getattr(stats, "preemptions_total", 0))]
            for name, help_text, value in counters:
                metric(name, "counter", help_text, [({}, value)])
        return "\n".join(lines) + "\n"
