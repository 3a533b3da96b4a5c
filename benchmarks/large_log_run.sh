#!/bin/bash
# Issue 23: a log of ~3x the NumPy engine's in-memory limit, prepared by Spark local[2] on one machine
# (docs/data.md, "Plan for a log of 1.1 billion lines"): LINES=1.1e9 D=/work/large bash benchmarks/large_log_run.sh
# Resumable: run again after a kill (a session's end); each step is skipped once done, and prepare goes on
# from its last finished phase (its work directory D/prepared.spark-work).
set -u
cd "$(dirname "$0")/.."
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
LINES=${LINES:-1.1e9}
D=${D:-/work/large}  # the log, its scratch and the output go here
echo "=== start $(date -u +%T) lines $LINES load $(cut -d' ' -f1-3 /proc/loadavg) free $(df -BG --output=avail /work | tail -1) commit $(git rev-parse --short HEAD)"
if [ ! -f $D/log.txt.gz ]; then
  [ -f $D/log.txt ] || .venv/bin/python -m benchmarks.large_log --lines $LINES --output $D/log.txt
  echo "=== generated $(date -u +%T) $(ls -l $D/log.txt | awk '{print $5}') bytes"
  gzip -1 -c $D/log.txt > $D/log.txt.gz.part && mv $D/log.txt.gz.part $D/log.txt.gz && rm $D/log.txt
  echo "=== gzipped $(date -u +%T) $(ls -l $D/log.txt.gz | awk '{print $5}') bytes"
fi
if [ ! -f $D/prepared/metadata.json ]; then
  rm -rf $D/spark-local; mkdir -p $D/spark-local   # shuffle files of a killed run are never reused
  ( while true; do echo "$(date -u +%T) scratch $(du -sb $D/prepared.spark-work $D/spark-local 2>/dev/null | awk '{t+=$1} END {print t+0}') free $(df -B1 --output=avail /work | tail -1)"; sleep 60; done ) >> $D/du.log &
  sampler=$!
  start=$(date +%s)
  .venv/bin/tfcroloss prepare --engine spark --spark-master 'local[2]' --format comirec --input $D/log.txt.gz \
      --output $D/prepared --spark-conf spark.driver.memory=11g --spark-conf spark.local.dir=$D/spark-local ${EXTRA:-}
  echo "=== prepare rc $? $(( $(date +%s) - start )) s this run, $(date -u +%T)"
  kill $sampler
fi
# the record (benchmarks/results/prepare.json, mode large-spark); mem.log comes from a sampler of
# the prepare's RSS run beside this script, when there is one
[ -f $D/prepared/metadata.json ] && touch $D/mem.log && .venv/bin/python -m benchmarks.large_log_record --dir $D
