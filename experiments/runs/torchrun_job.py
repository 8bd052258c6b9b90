"""One run of a sweep under torchrun: ``torchrun ... -m experiments.runs.torchrun_job CONFIG.json RUN_DIR``.

Every rank trains the same ``TrainConfig`` (``experiments.runs.train.train`` reads the rank from the
environment torchrun sets); rank 0 writes the run directory. Started by the ``torchrun`` executor
of ``experiments.runs.cluster``; a failure's traceback goes to ``RUN_DIR/error.txt`` and the exit code is 1.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.runs.distributed import DistContext
from experiments.runs.pool import record_error
from experiments.runs.store import TrainConfig
from experiments.runs.train import load_training_data, train


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: torchrun ... -m experiments.runs.torchrun_job CONFIG.json RUN_DIR", file=sys.stderr)
        return 2
    config = TrainConfig.from_dict(json.loads(Path(argv[0]).read_text()))
    run_dir = Path(argv[1])
    dist = DistContext.from_env()
    try:
        train(config, run_dir, progress=False, data=load_training_data(config, False), dist=dist)
    except Exception as exc:  # noqa: BLE001 - recorded for the sweep, then the rank fails
        if dist.is_main:
            record_error(run_dir, exc)
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
