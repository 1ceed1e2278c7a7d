#!/usr/bin/env bash
# A batch job killed for real and started again: 3000 noisy digits through the shipped model,
# SIGKILL once 300 results are written, then the same command, which must finish the job without
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
echo "killed: $(ls $work/out/items | wc -l) items written, $(ls $work/out/items | grep -c tmp) temporary files"
ls -l --time-style=+%s.%N $work/out/items | awk '{print $6, $7}' | sort > $work/before.txt
time "${cmd[@]}" 2>$work/second.log
echo "after resume: $(ls $work/out/items | wc -l) items, $(find $work/out -name '*.tmp-*' | wc -l) temporary files"
ls -l --time-style=+%s.%N $work/out/items | awk '{print $6, $7}' | sort > $work/after.txt
echo "items from before the kill rewritten: $(comm -23 $work/before.txt $work/after.txt | wc -l)"
tail -c 300 $work/second.log; echo; cat $work/out/summary.json | head -c 400; echo
