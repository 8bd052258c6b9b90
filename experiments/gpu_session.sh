#!/usr/bin/env bash
# One GPU call's worth of blockaudit work, for a lent machine with a 10-minute limit per command.
#
#   bash experiments/gpu_session.sh audit OUT [MINUTES]   # train the full audit's CIFAR-10 runs
#   bash experiments/gpu_session.sh bench OUT             # training + landscape + zoo benchmarks
#
# Expects the JPEG CIFAR-10 at data/cifar10-jpeg.zip (copy ../shared/data/cifar10-jpeg.zip there; data/
# is git-ignored, so name it in the device tool's `carry`) and, for the loss-landscapes comparison,
# its wheel in .whl/ (see the device README). `audit` trains what reports/store still lacks, stops
# starting new runs after MINUTES (default 7), makes the risk-gap and landscape artefacts of what it
# trained, and packs the store without checkpoints into OUT/store.tgz: unpack it into the checkout
# (`tar xzf store.tgz`) and call again until `blockaudit audit --profile full --store reports/store`
# names no missing run. Finished runs are never retrained.
set -euo pipefail
mode=${1:?usage: gpu_session.sh audit|bench OUT [MINUTES]}
out=${2:?usage: gpu_session.sh audit|bench OUT [MINUTES]}
minutes=${3:-7}
# The claims the issue asks to settle on CIFAR-10 first; set CLAIMS to choose others.
claims=${CLAIMS:-NRL-linear,NRL-params,RN-cifar,ND-depth,OAI-cifar,NRL-contour,NRL-fp16}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
data=data/cifar10-jpeg.zip
[ -f "$data" ] || { echo "missing $data: copy ../shared/data/cifar10-jpeg.zip there and carry data/" >&2; exit 2; }
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
# At most 8 files come back from OUT: keep logs on stdout (the tool returns its tail).
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

case "$mode" in
  audit)
    python3 -m experiments.cli audit --profile full --device cuda --data "$data" --store reports/store \
      --claims "$claims" --train-only --workers 3 --max-minutes "$minutes" --out "$out/audit" --no-progress \
      2>&1 | tee "$out/audit.log"
    if [ -d reports/store ]; then tar czf "$out/store.tgz" --exclude=checkpoint.pt reports/store; fi
    ;;
  bench)
    python3 -m experiments.benchmarks.train_speed --data "$data" --out "$out/train"
    python3 -m experiments.benchmarks.landscape_speed --data "$data" --out "$out/landscape"
    ;;
  *)
    echo "unknown mode $mode: audit or bench" >&2; exit 2 ;;
esac
