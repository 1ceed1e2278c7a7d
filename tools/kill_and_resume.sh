#!/usr/bin/env bash
# A batch job killed for real and started again: 3000 noisy digits through the shipped model,
# SIGKILL once 300 result files are there, then the same command, which must finish the job without
# rewriting any result from before the kill (tests/test_batch.py checks the same on a small job).
# Usage: bash tools/kill_and_resume.sh  (in the repository, with .venv set up as in the README)
set -u
cd "$(dirname "$0")/.."
work=$(mktemp -d)
export work
.venv/bin/python - <<'PY'
import os

import numpy as np
rng = np.random.default_rng(0)
base = np.load("models/digits_samples.npy")
x = np.clip(base[rng.integers(0, len(base), 3000)] + 0.1 * rng.standard_normal((3000, 1, 8, 8)), 0, 1)
np.save(os.environ["work"] + "/data.npy", x.astype(np.float32))
PY
cmd=(.venv/bin/onnxlrp batch models/digits_cnn.onnx $work/data.npy --out $work/out --composite epsilon --batch-size 3)
"${cmd[@]}" 2>$work/first.log &
pid=$!
while [ "$(ls $work/out/items 2>/dev/null | wc -l)" -lt 300 ]; do sleep 0.05; done
kill -9 $pid; wait $pid 2>/dev/null
# results only: a temporary file the kill left half-written is not a result (the resumed job removes it)
results() { ls -l --time-style=+%s.%N $work/out/items | awk 'NF > 6 && $7 !~ /\.tmp-/ {print $6, $7}' | sort; }
results > $work/before.txt
echo "killed: $(wc -l < $work/before.txt) results written, $(ls $work/out/items | grep -c '\.tmp-') temporary files"
time "${cmd[@]}" 2>$work/second.log
results > $work/after.txt
echo "after resume: $(wc -l < $work/after.txt) results, $(find $work/out -name '*.tmp-*' | wc -l) temporary files"
echo "results from before the kill rewritten or lost: $(comm -23 $work/before.txt $work/after.txt | wc -l)"
tail -c 300 $work/second.log; echo; cat $work/out/summary.json | head -c 400; echo
