"""A model a user registers in their own module (``register_model``): it trains, and a fresh process
(``blockaudit landscape|curvature|risk-gap``, anything that calls ``load_run``) finds it again."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments.runs.store import RunDir, TrainConfig, ensure_model_registered
from experiments.runs.train import train

REPO = Path(__file__).resolve().parents[1]
MODULE = '''
from torch import nn

from analysis.models import register_model


@register_model("user_tiny_head", source="ours", paper="user")
def user_tiny_head(num_classes=10, width=4):
    """a user's net whose classifier is not called fc"""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
'''


def test_a_user_registered_model_trains_and_loads_in_a_fresh_process(tmp_path, monkeypatch):
    (tmp_path / "user_nets_for_test.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_nets_for_test  # noqa: F401 - registers the model

    config = TrainConfig(model="user_tiny_head", dataset="synthetic", model_options={"width": 4},
                         dataset_options={"seed": 0, "n_train": 32, "n_test": 16, "num_classes": 3},
                         epochs=1, batch_size=16, device="cpu")
    run = tmp_path / "run"
    train(config, run, progress=False)
    assert (run / "model_source.json").exists()
    # another process, another working directory, the user's folder not on the path: the recorded file is imported
    code = ("from experiments.runs.store import load_run; m, c = load_run(r'%s'); "
            "print(type(m).__name__, m[-1].out_features)" % run)
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Sequential", "3"]


def test_an_unknown_model_without_a_recorded_source_names_the_fix(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(KeyError, match="registered outside blockaudit and the run records no source"):
        ensure_model_registered(rd, "nobody_registered_this")
