#!/bin/bash
# After the ml-100k N=10 tune (started by run.sh) ends: move the unused copies out, rewrite its report.
cd /work/main
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
while kill -0 30403 2>/dev/null; do sleep 10; done
echo "=== ml-100k-n10 end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
.venv/bin/python runs/tune-p75/unused.py runs/tune-s2/ml-100k-n10
.venv/bin/tfcroloss tune --config configs/ml-100k.yaml --target-n 10 --output runs/tune-s2/ml-100k-n10 --budget 12 --seeds 3 --reuse-other-code > runs/tune-s2/report-ml-100k-n10.log 2>&1
echo "=== ml-100k-n10 report rewritten rc $?"
