#!/bin/bash
# The ml-100k N=200 and N=50 tunes (two-kernel start), side by side; as run.sh, with the report rewritten after the unused copies move out.
cd /work/main
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
one() {
  name=$1; out=runs/tune-s2/$name; n=${name##*-n}
  if [ ! -d $out/runs ]; then
    for src in runs/tune-p75/$name/runs runs/tune-p75/unused-$name/runs runs/tune/$name/runs; do
      for d in $src/*/*/; do
        [ -d "$d" ] || continue
        if grep -q '"complete"' $d/tune_run.json 2>/dev/null; then
          rel=runs/${d#$src/}; [ -d $out/$rel ] && continue; mkdir -p $out/$(dirname $rel); cp -r $d $out/$rel
        fi
      done
    done
  fi
  cmd=(.venv/bin/tfcroloss tune --config configs/ml-100k.yaml --target-n $n --output $out --budget 12 --seeds 3 --reuse-other-code)
  echo "=== $name start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  "${cmd[@]}" > runs/tune-s2/$name.log 2>&1
  echo "=== $name end $(date -u +%T) rc $? load $(cut -d' ' -f1-3 /proc/loadavg)"
  .venv/bin/python runs/tune-p75/unused.py $out
  "${cmd[@]}" > runs/tune-s2/report-$name.log 2>&1
  echo "=== $name report rewritten rc $?"
}
one ml-100k-n200 &
one ml-100k-n50 &
wait
