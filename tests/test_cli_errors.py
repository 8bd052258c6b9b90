"""The CLI's answer to bad input and faults: one line naming the problem and the fix, nothing written first."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

import experiments.cli.train as train_mod
from experiments.cli import build_parser, main
from experiments.runs.store import RunDir, TrainConfig
from experiments.cli.train import config_from_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--data", "synthetic", "--data-option", "n_train=64", "--data-option", "n_test=16",
        "--data-option", "num_classes=3", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress"]


def _train_args(out, *extra, model="resnest20", options=("width=2",)):
    opts = [a for o in options for a in ("--option", o)]
    return ["train", model, *TINY, *opts, *extra, "--out", str(out)]


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"blockaudit {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- 1. the model is validated before the run directory is written ------------------------------

@pytest.mark.parametrize("model, options, match", [
    ("resnest20", ("widht=2",), r"unknown option\(s\) 'widht' for model 'resnest20'; valid options \(with defaults\): "
                                r"width=16, .*pass them as --option KEY=VALUE"),
    ("resnest20", ("width=abc",), r"model 'resnest20' cannot be built with options \{'width': 'abc'\} .*valid options"),
    ("resnest2", ("width=2",), r"unknown model 'resnest2'; registered models: .*resnest20"),
])
def test_bad_model_is_refused_before_anything_is_written(tmp_path, capsys, model, options, match):
    out = tmp_path / "typo"
    assert main(_train_args(out, model=model, options=options)) == 2
    assert re.search(match, _one_line_error(capsys, "train"))
    assert not out.exists()
    assert main(_train_args(out)) == 0  # the corrected command is not refused


def test_bad_dataset_option_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(out, "--data-option", "nn_train=3")) == 2
    assert re.search(r"unknown option\(s\) 'nn_train' for dataset 'synthetic'; valid options: .*n_train.*"
                     r"--data-option KEY=VALUE", _one_line_error(capsys, "train"))
    assert not out.exists()


def test_a_directory_holding_only_a_config_takes_the_corrected_command(tmp_path, capsys):
    # A run that never finished an epoch left only config.json: nothing is lost by replacing it.
    out = tmp_path / "run"
    RunDir(out).init(TrainConfig(model="resnest20", lr=7.0), environment=False)
    assert main(_train_args(out)) == 0
    assert RunDir(out).load_config().lr == TrainConfig(model="x").lr
    # With trained state a different config is refused, and the message says what to do.
    assert main(_train_args(out, "--lr", "0.5")) == 2
    assert re.search(r"run directory .* holds trained state of a different config \(stored vs given: "
                     r"\{'lr': \(0\.1, 0\.5\)\}\); re-run with the stored settings to resume it, or pass a new "
                     r"--out \(or delete .*\) to train this config", _one_line_error(capsys, "train"))


# --- 2. faults that used to end in tracebacks ---------------------------------------------------

@pytest.mark.parametrize("points", ["1", "0"])
def test_landscape_needs_two_points_per_axis(tmp_path, capsys, points):
    assert main(["landscape", str(tmp_path), "--points", points, "--out", str(tmp_path / "out")]) == 2
    assert f"--points must be >= 2 (grid points per axis; a contour or a curve needs two); got {points}" \
        in _one_line_error(capsys, "landscape")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without a GPU")
@pytest.mark.parametrize("command", ["landscape", "curvature"])
def test_cuda_on_a_cpu_only_machine_is_one_line(tmp_path, capsys, command):
    assert main([command, str(tmp_path), "--device", "cuda"]) == 2
    line = _one_line_error(capsys, command)
    assert "device 'cuda' was requested but torch.cuda.is_available() is False" in line
    assert line.endswith("use device 'cpu' (blockaudit: --device cpu)")


def test_non_finite_loss_is_one_line_naming_step_and_layer(tmp_path, capsys):
    out = tmp_path / "run"
    args = _train_args(out, "--lr", "1e8", "--batch-size", "16", model="resnet20")
    assert main(args) == 1
    line = _one_line_error(capsys, "train")
    assert re.search(r"non-finite training loss .* at step \d+ \(epoch 0, batch \d+, lr 1e\+08\): .*To fix: lower "
                     r"the learning rate", line)
    # Nothing was trained, so the corrected command runs in the same directory.
    assert main([a if a != "1e8" else "0.05" for a in args]) == 0


def test_damaged_config_json_names_the_file_and_the_fix(tmp_path, capsys):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.config_path.write_text('{"model": ')
    torch.save({"epoch": 1}, rd.checkpoint_path)
    for command in ("landscape", "curvature", "risk-gap"):
        assert main([command, str(rd.path)]) == 2
        line = _one_line_error(capsys, command)
        assert f"{rd.config_path} is damaged (not valid JSON: Expecting value" in line
        assert f"restore it from the copy in {rd.checkpoint_path} (its 'config' entry), or delete {rd.path}" in line
    rd.config_path.write_text(json.dumps({"model": "resnest20", "epochz": 3}))
    assert main(["landscape", str(rd.path)]) == 2
    assert f"{rd.config_path} is not a valid run config (unknown config key(s) 'epochz'" in \
        _one_line_error(capsys, "landscape")


def test_truncated_checkpoint_names_the_file_and_the_fix(tmp_path, capsys):
    out = tmp_path / "run"
    args = _train_args(out)
    rd = RunDir(out)
    rd.init(config_from_args(build_parser().parse_args(args)), environment=False)
    buf = tmp_path / "full.pt"
    torch.save({"epoch": 0, "weights": torch.zeros(1000)}, buf)
    rd.checkpoint_path.write_bytes(buf.read_bytes()[:500])
    assert main(args) == 2  # resuming
    line = _one_line_error(capsys, "train")
    assert (f"checkpoint {rd.checkpoint_path} is damaged (PytorchStreamReader failed reading zip archive: failed "
            "finding central directory); delete it and re-run the training command to train the run again from "
            "scratch") in line
    assert main(["landscape", str(out)]) == 2
    assert f"checkpoint {rd.checkpoint_path} is damaged" in _one_line_error(capsys, "landscape")
    rd.checkpoint_path.unlink()  # the advised fix
    assert main(args) == 0 and rd.is_finished()


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    def bug(*a, **k):
        raise RuntimeError("a genuine bug")

    monkeypatch.setattr(train_mod, "train", bug)
    with pytest.raises(RuntimeError, match="a genuine bug"):
        main(_train_args("unused"))


# --- 3. --seeds -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    ("1,,2", "--seeds '1,,2' has an empty item"),
    ("1,", "--seeds '1,' has an empty item"),
    ("0,1,0", "--seeds '0,1,0' lists seed 0 twice (it would be the same run)"),
    ("1,-2", "--seeds '1,-2': seed -2 is negative"),
    ("0,x", "--seeds '0,x': 'x' is not an integer"),
])
def test_bad_seeds_are_refused_naming_the_text(tmp_path, capsys, text, match):
    assert main(_train_args(tmp_path / "runs", "--seeds", text)) == 2
    line = _one_line_error(capsys, "train")
    assert match in line and line.endswith("write distinct integers >= 0 separated by commas, e.g. --seeds 0,1,2")
    assert not (tmp_path / "runs").exists()


# --- 5. Ctrl-C --------------------------------------------------------------------------------------

def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "train", interrupted)
    assert main(_train_args(tmp_path / "run")) == 130
    assert capsys.readouterr().err == ("blockaudit train: interrupted; finished runs are kept, re-run the same "
                                       "command to resume\n")


# --- 6. help texts and defaults --------------------------------------------------------------------

def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_train_help_states_the_defaults(capsys):
    text = _help(capsys, "train")
    d = TrainConfig(model="x")
    for flag, value in [("--epochs", d.epochs), ("--lr", d.lr), ("--batch-size", d.batch_size),
                        ("--weight-decay", d.weight_decay), ("--momentum", d.momentum),
                        ("--eval-batch-size", d.eval_batch_size), ("--compile-mode", d.compile_mode),
                        ("--schedule", d.schedule), ("--gamma", d.gamma)]:
        entry = [seg for seg in re.split(r" (?=--[a-z])", text) if seg.startswith(flag + " ")][-1]  # not usage
        assert f"(default: {value})" in entry, entry
    assert "(default: 60,120,160)" in text


def test_reproduce_help_names_the_real_default_folder(capsys):
    from experiments.reproduce import list_reproductions

    name = list_reproductions()[0]
    text = _help(capsys, "reproduce", name)
    assert f"(default: reports/{name})" in text and "reports/reports" not in text


def test_cli_defaults_are_train_config_defaults():
    """One source of truth: the command line trains what TrainConfig (and a sweep file) would."""
    args = build_parser().parse_args(["train", "resnet20", "--out", "x"])
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    # --device auto is the one deliberate exception: it resolves to cuda where there is one (the device
    # changes results by rounding only, and sweep ids leave it out).
    assert args.device == "auto"
    parsed = {"dataset": args.data, **{k: v for k, v in vars(args).items() if k in fields and k != "device"}}
    assert parsed == {k: fields[k] for k in parsed}
    assert len(parsed) >= 20  # every training option of the CLI took part
    cfg = config_from_args(args).to_dict()
    expected = TrainConfig(model="resnet20", device=cfg["device"]).to_dict()
    assert cfg == expected


def test_no_progress_hides_the_jpeg_decode_bar(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / cls / f"{k}.jpg")
    args = ["train", "resnest20", "--option", "width=2", "--data", "image_folder", "--data-option",
            f"path={tmp_path / 'imgs'}", "--data-option", "workers=1", "--epochs", "1", "--device", "cpu"]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "quiet")]) == 0
    assert "decode" not in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "shown")]) == 0
    assert "decode imgs" in capsys.readouterr().err  # the bar exists, so the check above means something
