#!/usr/bin/env bash
# GPU checks for when an NVIDIA machine is at hand (none on the project's CI machines):
# distributed training on 2 GPUs (or 2 processes on 1 GPU) must match 1 process, and the
# benchmark runs on CUDA with and without 4-bit QLoRA. Prints one table at the end.
#   bash tools/gpu_check.sh            # from the repository root, after `make test` set up .venv
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
GF=.venv/bin/gemmaforge
out=$(mktemp -d)
gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
[ "$gpus" -ge 1 ] || { echo "no CUDA GPU visible"; exit 1; }
$GF tiny gemma3 "$out/tiny"
$PY - "$out" <<'PYEOF'
import json, random, sys
out = sys.argv[1]
rng = random.Random(0)
qa = [("What colour is the sky?", "Blue."), ("What do cows drink?", "Water.")]
with open(f"{out}/data.jsonl", "w") as handle:
    for _ in range(64):
        q, a = rng.choice(qa)
        handle.write(json.dumps({"messages": [{"role": "user", "content": q},
                                              {"role": "assistant", "content": a}]}) + "\n")
open(f"{out}/cfg.yaml", "w").write(
    f"model: {{name_or_path: {out}/tiny, dtype: fp32}}\n"
    f"data: {{train: {out}/data.jsonl}}\n"
    "train: {max_steps: 8, batch_size: 4, lr: 0.01, seed: 0}\n"
)
PYEOF
$GF launch "$out/cfg.yaml" "train.output_dir=$out/one" --nproc 1
# Two processes share one GPU when only one is visible (LOCAL_RANK modulo the device count).
$GF launch "$out/cfg.yaml" "train.output_dir=$out/two" --nproc 2
$PY - "$out" <<'PYEOF'
import json, sys
out = sys.argv[1]
loss = lambda run: [json.loads(l)["loss"] for l in open(f"{out}/{run}/metrics.jsonl")]
one, two = loss("one"), loss("two")
worst = max(abs(a - b) / abs(a) for a, b in zip(one, two))
print(f"| DDP 2 vs 1 process | worst relative loss difference {worst:.2e} | "
      f"{'ok' if worst < 1e-3 else 'MISMATCH'} |")
PYEOF
$GF bench --config gemma3n-text-262k --steps 5 --output "$out/bench.json" || true
if $PY -c "import bitsandbytes" 2>/dev/null; then
    $GF train "$out/cfg.yaml" "train.output_dir=$out/qlora" model.quantize=4bit model.dtype=bf16
    echo "| QLoRA 4-bit | trained | ok |"
else
    echo "| QLoRA 4-bit | skipped: pip install -c constraints.txt -e '.[cuda]' | - |"
fi
