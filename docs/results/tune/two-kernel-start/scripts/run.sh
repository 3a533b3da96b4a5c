#!/bin/bash
# Tunes with the two-kernel start (softplus and sigmoid at the rule's alpha), one at a time; finished runs of the
# earlier tunes (same configuration and seed) are copied in and reused; unused copies are moved out afterwards.
cd /work/main
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
for name in nowplaying-m256-n200 nowplaying-m256-n10 nowplaying-m256-n50 ml-100k-n10 ml-100k-n200 ml-100k-n50; do
  out=runs/tune-s2/$name; n=${name##*-n}
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
  echo "=== $name start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  if [[ $name == nowplaying* ]]; then
    .venv/bin/tfcroloss tune --config configs/nowplaying-1m.yaml --set training.optimizer=lazy_adam --lr-range 0.01,0.08 \
        --target-n $n --output $out --budget 8 --seeds 3 --reuse-other-code
  else
    .venv/bin/tfcroloss tune --config configs/ml-100k.yaml --target-n $n --output $out --budget 12 --seeds 3 --reuse-other-code
  fi
  echo "=== $name end $(date -u +%T) rc $? load $(cut -d' ' -f1-3 /proc/loadavg)"
  .venv/bin/python runs/tune-p75/unused.py $out
done
