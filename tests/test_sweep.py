"""Sweeps and the results store: config files, errors, run ids, tidy table, skip/resume, workers, CLI."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import experiments.runs.pool as sweep_mod  # where runs are trained (train, os.cpu_count)
from experiments.cli import main
from experiments.runs.store import RunDir, TrainConfig
from experiments.runs.sweep import (
    CONFIG_DIR, ModelSpec, SweepConfigError, SweepFailed, SweepSpec, canonical_config, expand, load_sweep,
    paired_differences, results_table, run_id_for, run_status, run_sweep, summarize,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_TOML = """\
name = "tiny"
seeds = [0, 1]
[base]
dataset = "synthetic"
dataset_options = { seed = 0, n_train = 64, n_test = 32, num_classes = 4 }
epochs = 2
batch_size = 32
lr = 0.05
schedule = "cosine"
[[models]]
label = "rn"
name = "resnest20"
options = { width = 2 }
[[models]]
name = "a_resnest20"
options = { width = 2 }
"""

TINY_YAML = """\
name: tiny
seeds: [0, 1]
base:
  dataset: synthetic
  dataset_options: {seed: 0, n_train: 64, n_test: 32, num_classes: 4}
  epochs: 2
  batch_size: 32
  lr: 0.05
  schedule: cosine
models:
  - {label: rn, name: resnest20, options: {width: 2}}
  - {name: a_resnest20, options: {width: 2}}
"""


def _write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tiny_spec(tmp_path):
    return load_sweep(_write(tmp_path, TINY_TOML))


def _strip_timing(df: pd.DataFrame) -> pd.DataFrame:
    # Wall-clock columns differ between any two executions; everything else is computed.
    return df.drop(columns=[c for c in ("seconds", "train_seconds", "images_per_s") if c in df.columns])


# --- config files -----------------------------------------------------------------------------

def test_toml_and_yaml_files_give_the_same_spec(tmp_path):
    a = load_sweep(_write(tmp_path, TINY_TOML))
    b = load_sweep(_write(tmp_path, TINY_YAML, "sweep.yaml"))
    assert a == b
    assert a.labels == ["rn", "a_resnest20"]  # label defaults to the model name
    assert a.models[0] == ModelSpec(label="rn", name="resnest20", options={"width": 2})
    assert a.seeds == (0, 1) and a.base["epochs"] == 2 and a.grid == {}
    assert SweepSpec.from_dict(a.to_dict()) == a


def test_expand_orders_models_grid_then_seeds_and_applies_dotted_grid_keys(tmp_path):
    grid = '[grid]\nweight_decay = [0.0, 1e-4]\n"model_options.width" = [2, 3]\n'
    spec = load_sweep(_write(tmp_path, TINY_TOML + grid))
    runs = expand(spec)
    assert len(runs) == 2 * 4 * 2
    first = runs[:8]
    assert [r.label for r in first] == ["rn"] * 8
    assert [(r.grid_values["weight_decay"], r.grid_values["model_options.width"], r.seed) for r in first[:4]] == [
        (0.0, 2, 0), (0.0, 2, 1), (0.0, 3, 0), (0.0, 3, 1)]
    assert runs[2].config.model_options == {"width": 3} and runs[2].config.weight_decay == 0.0
    assert runs[2].config.dataset_options["n_train"] == 64  # grid keys leave the rest of the dicts alone
    assert len({r.run_id for r in runs}) == len(runs)


def test_per_model_seeds_and_base_override_the_sweep_ones(tmp_path):
    text = TINY_TOML.replace('name = "a_resnest20"', 'name = "a_resnest20"\nseeds = [5]\nbase = { lr = 0.2 }')
    runs = expand(load_sweep(_write(tmp_path, text)))
    assert [(r.label, r.seed, r.config.lr) for r in runs] == [
        ("rn", 0, 0.05), ("rn", 1, 0.05), ("a_resnest20", 5, 0.2)]


def test_shipped_configs_load(tmp_path):
    smoke = expand(load_sweep(CONFIG_DIR / "digits_smoke.toml"))
    assert len(smoke) == 4 and {r.config.dataset for r in smoke} == {"digits"}
    cifar = expand(load_sweep("cifar10_resnest"))  # a bare name resolves to experiments/configs
    assert len(cifar) == 12
    assert sorted({r.model for r in cifar}) == ["a_resnest20", "bn_resnest20", "resnest20", "resnet20"]
    assert {r.config.dataset for r in cifar} == {"cifar10_jpeg"} and {r.config.device for r in cifar} == {"cuda"}
    assert all(r.config.augment for r in cifar)
    yaml_grid = expand(load_sweep(CONFIG_DIR / "digits_lr_grid.yaml"))
    assert len(yaml_grid) == 8 and {r.grid_values["lr"] for r in yaml_grid} == {0.02, 0.05}


@pytest.mark.parametrize("edit, message", [
    (lambda t: "colour = 'red'\n" + t, "unknown key(s) 'colour'; valid keys: name, description, seeds, base, models"),
    (lambda t: t.replace("epochs = 2", "epoch = 2"), "base.epoch: unknown TrainConfig field; valid fields: augment"),
    (lambda t: t.replace('"resnest20"', '"resnet20_resnest"'),
     "models[0].name: unknown model 'resnet20_resnest'; registered models: a_resnest110"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = []"), "seeds: is empty; give at least one seed"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [0, 0]"), "seeds: repeats seed(s) [0]"),
    (lambda t: t.replace("seeds = [0, 1]", 'seeds = ["a"]'), "seeds: must hold integers >= 0; got 'a'"),
    (lambda t: t.replace("lr = 0.05", 'lr = "fast"'), "models[0] (rn), seed 0: lr must be a real number; got str"),
    (lambda t: t.replace("epochs = 2", "epochs = 2\nseeds = [3]"), "base.seeds: seeds is a top-level key"),
    (lambda t: t.replace("epochs = 2", "epochs = 2\nseed = 3"), "base.seed: is set by seeds"),
    (lambda t: t.replace("{ width = 2 }", "{ widht = 2 }", 1),
     "models[0].options: unknown option(s) 'widht' for model 'resnest20'; valid options: width"),
    (lambda t: t.replace('label = "rn"', 'label = "a_resnest20"'), "label(s) ['a_resnest20'] used twice"),
    (lambda t: t.replace('label = "rn"', 'label = "r/n"'), "models[0].label: must be a non-empty string"),
    (lambda t: t + "[grid]\nlearning_rate = [0.1]\n", "grid.learning_rate: unknown TrainConfig field"),
    (lambda t: t + "[grid]\nmomentum = []\n", "grid.momentum: must be a non-empty list of values"),
    (lambda t: t + "[grid]\nlr = [0.1]\n", "grid.lr: is also set in a base table"),
    (lambda t: t + "[grid]\n\"optimizer.beta\" = [0.1]\n", "grid.optimizer.beta: a dotted grid key must start with"),
    (lambda t: t.replace("[[models]]", "[[modelz]]"), "unknown key(s) 'modelz'"),
    (lambda t: t + "[base2\n", "invalid TOML"),
])
def test_bad_sweep_files_raise_errors_naming_the_file_and_key(tmp_path, edit, message):
    path = _write(tmp_path, edit(TINY_TOML))
    with pytest.raises(SweepConfigError, match="^" + str(path).replace(".", r"\.")) as exc:
        load_sweep(path)
    assert message in str(exc.value)


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sweep config .*nope\.toml.* not found .*shipped configs: .*smoke"):
        load_sweep(tmp_path / "nope.toml")
    path = _write(tmp_path, TINY_TOML, "sweep.json")
    with pytest.raises(SweepConfigError, match=r"unsupported sweep file type '\.json'; use one of \.toml, \.yaml"):
        load_sweep(path)


def test_from_dict_requires_a_name_and_models():
    with pytest.raises(SweepConfigError, match="name: is required"):
        SweepSpec.from_dict({"models": [{"name": "resnet20"}]})
    with pytest.raises(SweepConfigError, match="models: must be a non-empty list"):
        SweepSpec.from_dict({"name": "x", "models": []})


# --- run ids ----------------------------------------------------------------------------------

def _cfg(**kw):
    return TrainConfig(**{"model": "resnest20", "dataset": "digits", "model_options": {"width": 4}, "seed": 1, **kw})


def test_run_id_is_pinned_so_stored_runs_stay_findable():
    # A golden value: a change to the canonical form (field set, float/tuple handling, JSON layout)
    # would orphan every stored run, so it must be a deliberate edit of this line.
    assert run_id_for("rn", _cfg()) == "rn-s1-" + __import__("hashlib").sha256(
        b'{"model":"resnest20","model_options":{"width":4},"seed":1}').hexdigest()[:8]
    # dataset "digits" is TrainConfig's default, so it is left out like every other default.
    assert canonical_config(_cfg(lr=0.2, milestones=(5, 10), dataset="synthetic")) == {
        "dataset": "synthetic", "model": "resnest20", "model_options": {"width": 4}, "seed": 1, "lr": 0.2,
        "milestones": [5, 10]}


def test_run_ids_differ_exactly_when_the_computation_does():
    base = run_id_for("rn", _cfg())
    assert base.startswith("rn-s1-") and len(base.rsplit("-", 1)[1]) == 8
    different = [run_id_for("rn", _cfg(seed=2)), run_id_for("rn", _cfg(lr=0.05)), run_id_for("rn2", _cfg()),
                 run_id_for("rn", _cfg(model_options={"width": 8})), run_id_for("rn", _cfg(precision="bf16")),
                 run_id_for("rn", _cfg(dataset_options={"seed": 1})), run_id_for("rn", _cfg(epochs=11))]
    assert len({base, *different}) == len(different) + 1
    # Same computation: execution fields, a default written out, an int for a float, a tuple for a list.
    same = [_cfg(device="cuda"), _cfg(compile=True, channels_last=True), _cfg(weight_decay=5e-4), _cfg(lr=0.1),
            _cfg(momentum=0.9), _cfg(dataset_options={"progress": False})]
    assert {run_id_for("rn", c) for c in same} == {base}
    assert run_id_for("rn", _cfg(lr=1)) == run_id_for("rn", _cfg(lr=1.0))


def test_data_location_is_out_of_the_id_only_for_content_checked_datasets():
    jpeg = lambda p: _cfg(dataset="cifar10_jpeg", dataset_options={"path": p, "cache_dir": p})  # noqa: E731
    assert run_id_for("rn", jpeg("/a/c.zip")) == run_id_for("rn", jpeg("/b/c.zip"))
    folder = lambda p: _cfg(dataset="image_folder", dataset_options={"path": p})  # noqa: E731
    assert run_id_for("rn", folder("/a")) != run_id_for("rn", folder("/b"))


# --- summaries on a hand-made table -----------------------------------------------------------

def _table():
    rows = []
    for label, accs in (("block", {0: 0.8, 1: 0.6, 2: 0.7}), ("base", {0: 0.5, 1: 0.55, 2: 0.9})):
        for seed, acc in accs.items():
            for epoch in (1, 2):
                rows.append({"run_id": f"{label}-s{seed}", "label": label, "seed": seed, "grid.lr": 0.1,
                             "epoch": epoch, "test_acc": acc if epoch == 2 else 0.0, "finished": True})
    rows.append({"run_id": "block-s9", "label": "block", "seed": 9, "grid.lr": 0.1, "epoch": 1,
                 "test_acc": 1.0, "finished": False})
    return pd.DataFrame(rows)


def test_summarize_takes_final_epochs_of_finished_runs():
    s = summarize(_table())
    assert s["label"].tolist() == ["block", "base"] and s["n"].tolist() == [3, 3]
    row = s.iloc[0]
    assert row["metric"] == "test_acc" and row["mean"] == pytest.approx(0.7) and row["min"] == 0.6
    assert row["std"] == pytest.approx(0.1)  # sample std of 0.8, 0.6, 0.7 (ddof=1)
    with pytest.raises(ValueError, match="metric 'top5' not in the results table; columns: run_id"):
        summarize(_table(), "top5")
    with pytest.raises(ValueError, match="group column.* 'width' not in the results table"):
        summarize(_table(), by=("label", "width"))


def test_paired_differences_match_seeds():
    d = paired_differences(_table(), "block", "base")
    assert d["seed"].tolist() == [0, 1, 2]
    # Accuracies come in percentage points, the unit paired_stats labels its input with: chained,
    # they report +30 pts for 0.8 vs 0.5, not +0.3.
    assert d["difference"].tolist() == pytest.approx([30.0, 5.0, -20.0])
    assert d["block_value"].tolist() == pytest.approx([80.0, 60.0, 70.0])
    from experiments.audit.stats import paired_stats
    assert paired_stats(d["difference"]).text().startswith("+5.00 pts")
    assert set(d["block"]) == {"block"} and set(d["baseline"]) == {"base"} and "grid.lr" in d
    with pytest.raises(ValueError, match="baseline label 'resnet' is not in the results table; labels: block, base"):
        paired_differences(_table(), "block", "resnet")


# --- running ----------------------------------------------------------------------------------

def test_run_sweep_writes_the_tidy_table_and_summaries(tmp_path, tiny_spec, capsys, monkeypatch):
    store = tmp_path / "store"
    df = run_sweep(tiny_spec, store, progress=True)
    assert "0 of 4 runs already done" in capsys.readouterr().out
    assert len(df) == 4 * 2
    assert list(df.columns[:5]) == ["sweep", "run_id", "label", "model", "seed"]
    assert {"epoch", "lr", "loss", "acc", "test_loss", "test_acc", "seconds", "finished"} <= set(df.columns)
    assert df["finished"].all() and set(df["sweep"]) == {"tiny"}
    assert sorted(df.groupby("label")["seed"].unique().map(list).tolist()) == [[0, 1], [0, 1]]
    for run in expand(tiny_spec):
        assert (store / "runs" / run.run_id / "metrics.csv").is_file()
    out = store / "sweeps" / "tiny"
    reloaded = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(reloaded, results_table(tiny_spec, store), check_dtype=False)
    summary = pd.read_csv(out / "summary.csv")
    acc = summary[summary["metric"] == "test_acc"].set_index("label")
    final = df[df["epoch"] == 2].groupby("label")["test_acc"]
    assert acc.loc["rn", "n"] == 2 and acc.loc["rn", "mean"] == pytest.approx(final.mean()["rn"], rel=1e-12)
    assert acc.loc["a_resnest20", "std"] == pytest.approx(final.std()["a_resnest20"], rel=1e-12)
    md = (out / "summary.md").read_text()
    assert "| label | model | n | test_acc (mean ± std) |" in md and "| rn | resnest20 | 2 |" in md
    meta = json.loads((out / "sweep.json").read_text())
    assert [r["run_id"] for r in meta["runs"]] == [r.run_id for r in expand(tiny_spec)]

    # A second call trains nothing: train is replaced by a function that fails the test if called.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep_mod, "train", no_training)
    again = run_sweep(tiny_spec, store, progress=True)
    assert "4 of 4 runs already done" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again, df)


def test_unfinished_runs_resume_instead_of_restarting(tmp_path, tiny_spec):
    store = tmp_path / "store"
    first = run_sweep(tiny_spec, store, progress=False, max_epochs_this_call=1)
    assert len(first) == 4 and not first["finished"].any() and (first["epoch"] == 1).all()
    assert summarize(first).empty  # an unfinished run has no final epoch yet
    assert set(run_status(tiny_spec, store)["status"]) == {"partial"}
    second = run_sweep(tiny_spec, store, progress=False)
    assert len(second) == 8 and second["finished"].all()
    # Epoch 1 rows are the stored ones (their wall-clock seconds too), so nothing was retrained.
    pd.testing.assert_frame_equal(second[second["epoch"] == 1].drop(columns="finished").reset_index(drop=True),
                                  first.drop(columns="finished").reset_index(drop=True))


def test_only_trains_the_chosen_labels_and_device_keeps_ids(tmp_path, tiny_spec, monkeypatch):
    store = tmp_path / "store"
    df = run_sweep(tiny_spec, store, progress=False, only=["rn"])
    assert set(df["label"]) == {"rn"}
    status = run_status(tiny_spec, store)
    assert status.set_index("label")["status"].to_dict() == {"rn": "done", "a_resnest20": "new"}
    with pytest.raises(ValueError, match="only: unknown label.* 'rm'; labels of sweep 'tiny': rn, a_resnest20"):
        run_sweep(tiny_spec, store, progress=False, only=["rm"])
    # "cpu:0" names the same device under another string: same ids, so the finished runs are skipped.
    real_train, trained = sweep_mod.train, []

    def recording_train(config, run_dir, **kw):
        trained.append(config.device)
        return real_train(config, run_dir, **kw)

    monkeypatch.setattr(sweep_mod, "train", recording_train)
    run_sweep(tiny_spec, store, progress=False, device="cpu:0")
    assert trained == ["cpu:0", "cpu:0"]  # the two a_resnest20 runs only


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, tiny_spec, monkeypatch):
    store = tmp_path / "store"
    real_train = sweep_mod.train

    def flaky(config, run_dir, **kw):
        if config.model == "a_resnest20" and config.seed == 1:
            raise RuntimeError("simulated out of memory")
        return real_train(config, run_dir, **kw)

    monkeypatch.setattr(sweep_mod, "train", flaky)
    with pytest.raises(SweepFailed) as exc:
        run_sweep(tiny_spec, store, progress=False)
    bad = [r.run_id for r in expand(tiny_spec) if r.label == "a_resnest20" and r.seed == 1][0]
    assert exc.value.failures == {bad: "RuntimeError: simulated out of memory"}
    assert bad in str(exc.value)
    assert "simulated out of memory" in (store / "runs" / bad / "error.txt").read_text()
    assert exc.value.results["run_id"].nunique() == 3 and exc.value.results["finished"].all()
    assert (store / "sweeps" / "tiny" / "summary.md").is_file()


def test_two_workers_give_the_same_table_as_one(tmp_path, tiny_spec, monkeypatch):
    # Both paths train with one torch thread (the fixture here; cpu_count // workers = 1 on the
    # 2-core CI machine, and forced below otherwise), so CPU results are bit-identical.
    # Two runs (one label): one per worker, enough to interleave them and to keep the test short.
    one = run_sweep(tiny_spec, tmp_path / "a", progress=False, only=["rn"])
    monkeypatch.setattr(sweep_mod.os, "cpu_count", lambda: 2)
    two = run_sweep(tiny_spec, tmp_path / "b", progress=False, workers=2, only=["rn"])
    assert len(one) == 2 * 2 and set(one["label"]) == {"rn"}
    pd.testing.assert_frame_equal(_strip_timing(one), _strip_timing(two))
    env = json.loads(RunDir(tmp_path / "b" / "runs" / one["run_id"].iloc[0]).environment_path.read_text())
    assert env["torch_threads"] == 1


def test_a_stored_config_that_computes_something_else_is_refused(tmp_path, tiny_spec):
    store = tmp_path / "store"
    run = expand(tiny_spec)[0]
    rd = RunDir(store / "runs" / run.run_id)
    rd.path.mkdir(parents=True)
    rd.config_path.write_text(json.dumps(dataclasses.replace(run.config, lr=0.5).to_dict()))
    with pytest.raises(SweepConfigError, match=r"holds a different config than run .* \{'lr': \(0\.5, 0\.05\)\}"):
        run_sweep(tiny_spec, store, progress=False)


# --- command line -------------------------------------------------------------------------------

def test_cli_sweep_dry_run_then_run_then_nothing_to_do(tmp_path, capsys):
    path = _write(tmp_path, TINY_TOML)
    store = tmp_path / "store"
    assert main(["sweep", str(path), "--store", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "| run_id | label | model | seed | epochs_done | epochs | status |" in out
    assert "0 of 4 runs already done" in out and not (store / "runs").exists()
    assert main(["sweep", str(path), "--store", str(store), "--no-progress", "--only", "rn"]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 runs already done" in out and "| rn | resnest20 | 2 |" in out and "a_resnest20 |" not in out
    assert main(["sweep", str(path), "--store", str(store), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 of 4 runs already done" in out and "| a_resnest20 | a_resnest20 | 2 |" in out
    assert f"wrote {store / 'sweeps' / 'tiny' / 'results.csv'} (8 rows)" in out


def test_cli_sweep_errors(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "blockaudit sweep: error: sweep config" in capsys.readouterr().err
    path = _write(tmp_path, TINY_TOML.replace('"resnest20"', '"resnet20_resnest"'))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert "unknown model 'resnet20_resnest'" in capsys.readouterr().err
    assert main(["sweep", str(_write(tmp_path, TINY_TOML)), "--store", str(tmp_path / "s"), "--dry-run",
                 "--only", "xx"]) == 2
    assert "--only: unknown label(s) 'xx'; labels: rn, a_resnest20" in capsys.readouterr().err


def test_cli_sweep_exits_non_zero_when_a_run_fails(tmp_path, capsys, monkeypatch):
    def broken(config, run_dir, **kw):
        raise FloatingPointError("non-finite training loss")

    monkeypatch.setattr(sweep_mod, "train", broken)
    path = _write(tmp_path, TINY_TOML)
    assert main(["sweep", str(path), "--store", str(tmp_path / "s"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "4 run(s) failed" in err and "FloatingPointError: non-finite training loss" in err


def test_shipped_digits_smoke_sweep_reproduces_a_model_by_seed_table(tmp_path):
    """The CI check that a sweep file runs end to end on the CPU: 2 models x 2 seeds on digits."""
    spec = load_sweep(CONFIG_DIR / "digits_smoke.toml")
    df = run_sweep(spec, tmp_path, progress=False)
    epochs = spec.base["epochs"]
    assert len(df) == 4 * epochs and df["finished"].all()
    s = summarize(df).set_index("label")
    assert s["n"].to_dict() == {"resnest20": 2, "a_resnest20": 2}
    # Ten balanced classes: chance is 0.1. Two short epochs reach 0.4-0.7 on every seed; 0.2 fails
    # only if training or evaluation is broken.
    assert (s["min"] > 0.2).all(), s
    assert all(math.isfinite(v) for v in df["loss"])
    d = paired_differences(df, "a_resnest20", "resnest20")
    assert d["seed"].tolist() == [0, 1]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]  # after "pid (comm)"; comm may hold spaces
    return state, int(ppid)


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited; only its entry is left


def _spawned_workers(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (_proc_stat(int(entry.name)) or ("", 0))[1] == parent:
            try:
                if b"spawn_main" in (entry / "cmdline").read_bytes():  # not the resource tracker
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow  # ~8 s: a sweep process and two spawned workers each import torch on 2 cores
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_workers_die_with_a_sweep_killed_by_sigkill(tmp_path):
    """kill -9 of `blockaudit sweep --workers 2` ends its workers (they used to finish their runs and idle forever)."""
    import signal
    import subprocess
    import sys
    import time

    path = _write(tmp_path, TINY_TOML.replace("epochs = 2", "epochs = 1000"))
    store = tmp_path / "store"
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "sweep", str(path), "--store", str(store),
                             "--workers", "2", "--only", "rn", "--no-progress"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        # Both workers training (their run directories written): their initializers have run.
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _spawned_workers(proc.pid)
            if len(workers) == 2 and len(list(store.glob("runs/*/config.json"))) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2 and proc.poll() is None, f"sweep did not start two workers: {workers}"
        proc.kill()
        proc.wait()
        # prctl(PR_SET_PDEATHSIG) kills them at once; the watchdog fallback polls every 0.5 s.
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived the killed sweep"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_cuda_without_a_gpu_is_refused_before_any_training(tmp_path, tiny_spec):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal under test cannot happen")
    with pytest.raises(ValueError, match=r"device 'cuda' requested but torch.cuda.is_available\(\) is False"):
        run_sweep(tiny_spec, tmp_path, progress=False, device="cuda")
    assert not (tmp_path / "runs").exists()
