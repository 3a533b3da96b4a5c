#!/bin/bash
# ml-100k with 10 test seeds per side, then both data sets with 3 (the grid's validation pick added)
cd /work/main
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
nice -n 5 .venv/bin/python docs/results/tune/compare.py --tunes runs/tune-s2 --out runs/tune-s2/cmp-seeds10-ml --data ml-100k --seeds 10 > runs/tune-s2/compare-seeds10-ml.log 2>&1
echo "=== ml 10 seeds rc $? $(date -u +%T)"
nice -n 5 .venv/bin/python docs/results/tune/compare.py --tunes runs/tune-s2 --out runs/tune-s2/cmp-seeds3 > runs/tune-s2/compare-seeds3.log 2>&1
echo "=== seeds 3 rc $? $(date -u +%T)"
