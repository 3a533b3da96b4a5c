#!/bin/bash
# NowPlaying with 10 test seeds per side (the grid's validation pick included)
cd /work/main
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
nice -n 10 .venv/bin/python docs/results/tune/compare.py --tunes runs/tune-s2 --out runs/tune-s2/cmp-seeds10-np --data nowplaying-m256 --seeds 10 > runs/tune-s2/compare-seeds10-np.log 2>&1
echo "=== np 10 seeds rc $? $(date -u +%T)"
