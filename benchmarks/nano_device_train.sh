#!/usr/bin/env bash
# LoopCoder-Nano training on the device machine (docs/nano.md, "Training on the GPU host"), one step per
# device call while the machine stays warm (it is released 30 s after a call). From the repository root:
#   bash benchmarks/nano_device_train.sh part PART        copy .device/gguf/PART (carried) to /tmp/nano
#   bash benchmarks/nano_device_train.sh train RUN MIN    join the GGUF parts once, copy .device/runs/RUN (carried,
#                                                         made by `loopcoder train --prepare-only`) to /tmp/nano
#                                                         once, train for at most MIN minutes (resumable: run it
#                                                         again in the next call), hand back loss log, config,
#                                                         loss.png under $OUT/RUN, and RUN.tar.part-NN: the state
#                                                         to resume from (and, when finished, the delta)
# The GGUF is 98 MB and a call carries 64 MiB with the tree, so it travels in three parts
# (split -n 3 -d SmolLM2-135M-Instruct.Q4_1.gguf .device/gguf/part-); its sha256 is checked on every start.
set -euo pipefail
mkdir -p /tmp/nano
case "$1" in
  part)
    cp ".device/gguf/$2" /tmp/nano/ ;;
  train)
    run=$2
    source benchmarks/device_setup.sh
    [ -f /tmp/nano/base.gguf ] || cat /tmp/nano/part-* > /tmp/nano/base.gguf
    [ -d "/tmp/nano/$run" ] || cp -r ".device/runs/$run" /tmp/nano/
    python3 -m loopcoder.model_server.training "/tmp/nano/$run" --device cuda --gguf /tmp/nano/base.gguf \
      --max-minutes "$3"
    # At most 8 files of 16 MiB come back: the log and plot as they are, the rest (state/ to resume from,
    # delta/ once finished) as one tar in 15 MiB parts; here: cat RUN.tar.part-* | tar -x -C .device/runs
    mkdir -p "$OUT/$run"
    for f in loss.jsonl loss.png; do
      [ -f "/tmp/nano/$run/$f" ] && cp "/tmp/nano/$run/$f" "$OUT/$run/"
    done
    (cd /tmp/nano && tar -cf - "$run/config.json" "$run/loss.jsonl" $(ls -d "$run/state" "$run/delta" 2>/dev/null)) \
      | split -b 15M -d - "$OUT/$run/$run.tar.part-"
    nvidia-smi --query-gpu=name,memory.used --format=csv,noheader ;;
  *)
    echo "usage: $0 part PART | train RUN MINUTES" >&2; exit 2 ;;
esac
