"""The shipped form of a trained Nano: what training changed, applied over the GGUF of the pip package.

A delta is a folder of two files:
- ``delta.safetensors``: ``<module>.lora_A`` / ``<module>.lora_B`` of every adapter (float32); with two or
  more loops also every ``...plt_gate.{weight,bias,gate_norm.weight}``, ``model.norm.weight`` and the CLP
  scales ``loop_scales.emb`` / ``loop_scales.hidden``;
- ``manifest.json``: format and version, the base (package, file, sha256 of the GGUF), loops, LoRA rank,
  alpha and targets, the sha256 of ``delta.safetensors``, and how it was trained.

``build_default`` dequantizes the GGUF, checks its sha256 against the manifest, merges W += (alpha/r) B A,
copies the loop parts, sets the loop count and writes a checkpoint ``loopcoder serve --model`` serves.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError
from . import lora
from .base_model import BASE_PACKAGE, GGUF_NAME, build_base_model, gguf_path, sha256_file, write_checkpoint

FORMAT = "loopcoder-nano-delta"
VERSION = 1
TENSORS, MANIFEST = "delta.safetensors", "manifest.json"
# Where a delta shipped with the package lives (absent until a trained one is committed).
SHIPPED = Path(__file__).resolve().parent / "assets" / "nano-delta"


class DeltaError(CheckpointError):
    """A delta is missing, corrupt, or made for another base; one line saying which."""


def write_delta(out: Path, tm, cfg, trained: dict) -> Path:
    """Write the trainable tensors of ``tm`` (a TrainModel) and the manifest to ``out``."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().float().cpu().contiguous().reshape(p.shape)
               for name, p in tm.trainable().items()}
    save_file(tensors, str(out / TENSORS))
    try:
        version = metadata.version(BASE_PACKAGE)
    except metadata.PackageNotFoundError:
        version = None
    manifest = {
        "format": FORMAT, "version": VERSION,
        "base": {"file": Path(cfg.gguf).name if cfg.gguf else Path(GGUF_NAME).name, "sha256": cfg.gguf_sha256}
                | ({"package": BASE_PACKAGE, "package_version": version}
                   if cfg.gguf is None or Path(cfg.gguf).name == Path(GGUF_NAME).name else {}),
        "loops": cfg.loops,
        "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": list(lora.TARGETS)},
        "tensors_sha256": sha256_file(out / TENSORS),
        "trained": {**trained, "seed": cfg.seed, "lr": cfg.lr},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def read_delta(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(manifest, tensors) of a delta folder, checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / MANIFEST).is_file() or not (path / TENSORS).is_file():
        raise DeltaError(f"no delta in {path}: expected {MANIFEST} and {TENSORS}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except json.JSONDecodeError as exc:
        raise DeltaError(f"{path / MANIFEST} is not valid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DeltaError(f"{path / MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise DeltaError(f"{path}: delta format version {manifest.get('version')}, this version reads {VERSION}")
    if sha256_file(path / TENSORS) != manifest.get("tensors_sha256"):
        raise DeltaError(f"{path / TENSORS} is corrupt: its sha256 differs from the manifest's")
    try:
        tensors = load_file(str(path / TENSORS))
    except (SafetensorError, OSError) as exc:
        raise DeltaError(f"{path / TENSORS} cannot be read: {exc}") from None
    return manifest, tensors


def apply_delta(model, manifest: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Merge the adapters into ``model``'s weights and copy the loop parts (in place)."""
    rank, alpha = manifest["lora"]["rank"], manifest["lora"]["alpha"]
    adapters = {k: v for k, v in tensors.items() if k.endswith((".lora_A", ".lora_B"))}
    state = {k: v for k, v in model.state_dict().items()}
    touched = {k[:-len(".lora_A")] + ".weight" for k in adapters if k.endswith(".lora_A")}
    weights = {k: state[k] for k in touched if k in state}
    if len(weights) != len(touched):
        raise DeltaError(f"the delta adapts modules this model does not have: "
                         f"{', '.join(sorted(touched - weights.keys())[:3])}")
    try:
        lora.merge_into_state(weights, adapters, alpha / rank)
    except KeyError as exc:
        raise DeltaError(f"the delta lacks lora_B of {exc.args[0]}") from None
    rest = {k: v for k, v in tensors.items() if k not in adapters and not k.startswith("loop_scales.")}
    unknown = sorted(k for k in rest if k not in state)
    if unknown:
        raise DeltaError(f"the delta holds tensors this model does not have: {', '.join(unknown[:3])}")
    with torch.no_grad():
        for k, v in {**weights, **rest}.items():
            if state[k].shape != v.shape:
                raise DeltaError(f"{k}: delta shape {list(v.shape)}, model {list(state[k].shape)}")
            state[k].copy_(v.to(state[k].dtype))
    if "loop_scales.emb" in tensors:
        model.config.plt_emb_scale = float(tensors["loop_scales.emb"])
        model.config.plt_hidden_scale = float(tensors["loop_scales.hidden"])


def build_default(out: str | Path, delta: Optional[str | Path] = None, loops: Optional[int] = None,
                  gguf: Optional[str | Path] = None, dtype: str = "float32") -> tuple[Path, dict]:
    """Dequantize the GGUF, check it against the delta's manifest, apply the delta, write a checkpoint."""
    delta_dir = Path(delta) if delta is not None else SHIPPED
    if delta is None and not (delta_dir / MANIFEST).exists():
        raise DeltaError("this version ships no trained delta yet: pass --delta DIR (a run's delta/ folder)")
    manifest, tensors = read_delta(delta_dir)
    gguf_file = Path(gguf) if gguf else gguf_path()
    digest = sha256_file(gguf_file)
    if digest != manifest["base"]["sha256"]:
        raise DeltaError(f"{gguf_file} has sha256 {digest[:16]}…, the delta was trained on "
                         f"{manifest['base']['sha256'][:16]}… ({manifest['base'].get('package') or manifest['base'].get('file')} "
                         f"{manifest['base'].get('package_version') or ''})".replace(" )", ")"))
    loops = loops or manifest["loops"]
    model, base = build_base_model(loops, torch.float32, gguf_file)
    apply_delta(model, manifest, tensors)
    model = model.to(getattr(torch, dtype))
    write_checkpoint(model, base, out)
    return Path(out), manifest
