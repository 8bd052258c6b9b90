#!/usr/bin/env bash
# One GPU call's worth of blockaudit work, for a GPU machine with a 10-minute limit per command.
#
#   bash experiments/gpu_session.sh audit OUT [MINUTES]   # train the full audit's CIFAR-10 runs
#   bash experiments/gpu_session.sh bench OUT             # training + landscape benchmarks
#   bash experiments/gpu_session.sh long OUT              # ResNet-20, the standard 200-epoch schedule
#   bash experiments/gpu_session.sh block OUT             # audit-block --profile full of the SE example
#   bash experiments/gpu_session.sh audit,long,bench OUT  # several in one call (one machine start)
#
# Expects the JPEG CIFAR-10 at data/cifar10-jpeg.zip (copy ../shared/data/cifar10-jpeg.zip there; data/
# is git-ignored, so name it in the device tool's `carry`) and, for the loss-landscapes comparison,
# its wheel in .whl/ (see the device README). `audit` trains what reports/store still lacks, stops
# starting new runs after MINUTES (default 7), makes the risk-gap and landscape artefacts of what it
# trained, and packs the store without checkpoints into OUT/store.tgz: unpack it into the checkout
# (`tar xzf store.tgz`) and call again until `blockaudit audit --profile full --store reports/store`
# names no missing run. Finished runs are never retrained. Everything else (logs, benchmark tables,
# the long run's metrics) comes back packed in OUT/results.tgz (`tar xzf results.tgz` -> work/...).
set -euo pipefail
modes=${1:?usage: gpu_session.sh audit|bench|long[,...] OUT [MINUTES]}
out=${2:?usage: gpu_session.sh audit|bench|long[,...] OUT [MINUTES]}
minutes=${3:-7}
# The claims the issue asks to settle on CIFAR-10 first; set CLAIMS to choose others.
claims=${CLAIMS:-NRL-linear,NRL-params,RN-cifar,ND-depth,OAI-cifar,NRL-contour,NRL-fp16}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
# At most 8 files come back from the device's OUT: everything is written under $out/work and packed
# into $out/results.tgz on exit (also when the call is stopped), beside $out/store.tgz.
final=$out
out=$final/work
mkdir -p "$out"
pack() {
  trap - EXIT INT TERM
  if [ -d reports/store ]; then tar czf "$final/store.tgz" --exclude=checkpoint.pt reports/store || true; fi
  tar czf "$final/results.tgz" -C "$final" work && rm -rf "$out"
}
trap pack EXIT
trap 'pack; exit 130' INT TERM
data=data/cifar10-jpeg.zip
[ -f "$data" ] || { echo "missing $data: copy ../shared/data/cifar10-jpeg.zip there and carry data/" >&2; exit 2; }
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

for mode in ${modes//,/ }; do
  case "$mode" in
    audit)
      python3 -m experiments.cli audit --profile full --device cuda --data "$data" --store reports/store \
        --claims "$claims" --train-only --workers 3 --max-minutes "$minutes" --out "$out/audit" --no-progress \
        2>&1 | tee "$out/audit.log"
      ;;
    bench)
      python3 -m experiments.benchmarks.train_speed --data "$data" --out "$out/train"
      python3 -m experiments.benchmarks.landscape_speed --data "$data" --out "$out/landscape"
      ;;
    long)
      # The ResNEst authors' CIFAR recipe (TrainConfig's defaults: lr 0.1, batch 128, wd 5e-4, x0.2 at
      # epochs 60/120/160, 200 epochs) with crop+flip; bf16, channels_last, CUDA graphs for speed.
      python3 -m experiments.cli train resnet20 --data cifar10_jpeg --data-option "path=$data" --epochs 200 \
        --schedule step --lr 0.1 --batch-size 128 --augment --device cuda --precision bf16 --channels-last \
        --compile --compile-mode reduce-overhead --eval-every 5 --out reports/long/resnet20 --no-progress
      mkdir -p "$out/long"
      cp reports/long/resnet20/{metrics.csv,result.json,config.json,environment.json} "$out/long/"
      ;;
    block)
      # The example block's full profile (CIFAR-10, width 16, 10 epochs, 3 seeds + float-noise twins: 16
      # runs, 3 at a time). Killed at the call's limit, it resumes next call; the report comes back in
      # results.tgz (work/block-SEBlock), its runs in store.tgz.
      timeout $(( minutes * 60 + 60 )) python3 -m experiments.cli audit-block \
        --block experiments/examples/se_block.py:SEBlock --baseline resnet20 \
        --spec experiments/examples/se_block.toml --profile full --data "$data" --workers 3 \
        --store reports/store --out "$out/block-SEBlock" --no-progress 2>&1 | tee "$out/block.log" || true
      ;;
    *)
      echo "unknown mode $mode: audit, bench, long or block" >&2; exit 2 ;;
  esac
done
