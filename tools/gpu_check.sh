#!/usr/bin/env bash
# GPU checks for when an NVIDIA machine is at hand (none on the project's CI machines):
# distributed training on 2 GPUs (or 2 processes on 1 GPU) must match 1 process, and the
# training benchmark runs on CUDA with and without 4-bit QLoRA (`bench --quantize 4bit`).
# Prints one table at the end (the DDP line first). Serving: see the marked place below.
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
verdict = "ok" if worst < 1e-3 else "MISMATCH"
open(f"{out}/ddp.txt", "w").write(
    f"| DDP 2 vs 1 process | tiny gemma3 | - | - | worst relative loss difference "
    f"{worst:.2e}: {verdict} | - | - |\n"
)
PYEOF
# The training benchmark on CUDA: bf16 LoRA, then 4-bit QLoRA (both sides load the base in
# NF4; the GGUF 270M cannot be quantised, so the QLoRA rows use gemma3n-text-262k).
$GF bench --config gemma3n-text-262k --config gemma3-270m --steps 5 --output "$out/bench.json" \
    || echo '[]' > "$out/bench.json"
if $PY -c "import bitsandbytes" 2>/dev/null; then
    $GF bench --config gemma3n-text-262k --steps 5 --quantize 4bit --output "$out/bench-4bit.json" \
        || echo '[]' > "$out/bench-4bit.json"
else
    echo "bitsandbytes missing: pip install -c constraints.txt -e '.[cuda]' for the QLoRA rows"
    echo '[]' > "$out/bench-4bit.json"
fi
# Serving on CUDA: continuous batching against one request at a time, 1 and 16 clients.
$GF bench serve --clients 1 --clients 16 --output "$out/bench-serve.json" \
    || echo '{"rows": []}' > "$out/bench-serve.json"
$PY - "$out" <<'PYEOF'
import json, sys
out = sys.argv[1]
print("| check | config | gemmaforge tok/s | baseline tok/s | speed | peak memory | whole process |")
print("| --- | --- | --- | --- | --- | --- | --- |")
print(open(f"{out}/ddp.txt").read(), end="")
for name, label in (("bench.json", "train bf16 LoRA"), ("bench-4bit.json", "train QLoRA 4-bit")):
    rows = json.load(open(f"{out}/{name}"))
    if not rows:
        print(f"| {label} | - | - | - | FAILED or skipped (see above) | - | - |")
    for r in rows:
        ours, theirs = r["sides"]["gemmaforge"], r["sides"]["baseline"]
        print(
            f"| {label} | {r['config']} ({r['batch_size']}x{r['seq_len']}) | "
            f"{ours['tokens_per_second']:.0f} | {theirs['tokens_per_second']:.0f} | "
            f"{r['speedup']:.2f}x | {r['memory_ratio']:.2f}x | {r['process_memory_ratio']:.2f}x |"
        )
serve = json.load(open(f"{out}/bench-serve.json"))
if not serve["rows"]:
    print("| serve batched vs one at a time | - | - | - | FAILED (see above) | - | - |")
for r in serve["rows"]:
    print(
        f"| serve batched vs one at a time | {serve.get('model')} ({r['clients']} clients) | "
        f"{r['batched']['tokens_per_second']:.0f} | "
        f"{r['one-at-a-time']['tokens_per_second']:.0f} | {r['ratio']:.2f}x | - | - |"
    )
PYEOF
