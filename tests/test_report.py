"""``blockaudit report``: notebooks built from a tiny fake store and audit, the helpers behind them, errors.

Two tests start a Jupyter kernel (a few seconds each); everything else runs in-process.
"""
import ast
import json
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from analysis.probes.landscape import LandscapeResult  # noqa: E402
from analysis.probes.risk_gap import RiskGapResult, SolverCertificate  # noqa: E402
from experiments import report  # noqa: E402
from experiments.claims import CLAIMS, PAPERS  # noqa: E402
from experiments.cli import main  # noqa: E402

RN_IDS = [c.id for c in CLAIMS if c.paper == "RN"]
SEEDS = (0, 1, 2)
EPOCHS = 4


def _fake_audit(path: Path) -> Path:
    """An audit.json as `blockaudit audit` writes it, plus fields another tool may add (effect, CI)."""
    verdicts = []
    for c in CLAIMS:
        if c.id == "RN-C3":
            continue  # a claim the audit did not cover: the table must say so
        v = {"claim_id": c.id, "status": "fails" if c.id == "RN-cifar" else "holds",
             "evidence": f"evidence for {c.id}", "check": c.check_label, "runs": [], "statement": c.statement}
        if c.id == "RN-cifar":  # the fields of experiments.audit.run's training comparisons, and one unknown
            comparison = {"block": "resnest", "baseline": "standard", "n": 3, "mean": -1.25, "std": 0.3,
                          "ci_low": -1.6, "ci_high": -0.9, "confidence": 0.95, "region": [-1e300, 0.0],
                          "status": "holds", "paper": "-1.58 pts", "values": [-1.0, -1.2, -1.55]}
            v |= {"runs": ["resnet20-s0", "resnest20-s0"], "p_value": 0.031,
                  "details": {"effect": -1.25, "ci": [-1.6, -0.9], "n_seeds": 3, "comparisons": [comparison]}}
        verdicts.append(v)
    payload = {"meta": {"profile": "quick", "date": "2026-01-01 00:00 UTC", "machine": "test machine"},
               "counts": {}, "verdicts": verdicts}
    path.write_text(json.dumps(payload))
    return path


def _test_acc(label: str, seed: int, epoch: int) -> float:
    return 0.4 + 0.1 * epoch - (0.05 if label == "ResNEst-20" else 0.0) + 0.01 * seed


def _landscape(run: Path, model: str, scale: float, points: int = 5) -> None:
    axis = np.linspace(-1.0, 1.0, points)
    a, b = np.meshgrid(axis, axis, indexing="ij")
    loss = 0.3 + scale * (a ** 2 + 0.5 * b ** 2)
    LandscapeResult(axis, axis, loss, 1 - loss / loss.max(),
                    {"kind": "random", "normalization": "filter", "ignore": "biasbn", "seed": 0}, "eval", 64,
                    meta={"model": model, "dataset": "synthetic", "range": 1.0, "centre_loss": 0.3}
                    ).save(run / "landscape")


def _fake_store(root: Path) -> Path:
    """A sweep named after RN-cifar, two loose RN runs with a landscape each, a risk gap, a curvature
    summary, an unreadable curvature file and an NRL run (which the RN notebook must leave out)."""
    store = root / "store"
    rows = [{"sweep": "rn-cifar", "run_id": f"{model}-s{seed}", "label": label, "model": model, "seed": seed,
             "epoch": epoch, "lr": 0.1, "loss": 2.0 / epoch, "acc": 0.5, "test_loss": 2.2 / epoch,
             "test_acc": _test_acc(label, seed, epoch), "seconds": 1.0}
            for label, model in (("ResNet-20", "resnet20"), ("ResNEst-20", "resnest20"))
            for seed in SEEDS for epoch in range(1, EPOCHS + 1)]
    (store / "sweeps" / "rn-cifar").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(store / "sweeps" / "rn-cifar" / "results.csv", index=False)
    for rid, model, scale in (("run-a", "a_resnest20", 1.0), ("run-b", "resnet20", 3.0), ("run-n", "resnet18", 1.0)):
        run = store / "runs" / rid
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"model": model, "dataset": "synthetic", "seed": 0}))
        pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.8], "acc": [0.5, 0.6], "test_loss": [1.1, 0.9],
                      "test_acc": [0.45, 0.55]}).to_csv(run / "metrics.csv", index=False)
        _landscape(run, model, scale)
    RiskGapResult("cross_entropy", 64, 64, [3, 4, 4], 0.9, 0.7, [1.5, 1.0, 0.7],
                  [SolverCertificate("lbfgs", 1e-6, 1e-5, 10, True)] * 3, 1.0, 0.8, [1.6, 1.2, 0.8],
                  meta={"model": "a_resnest20", "dataset": "synthetic"}).save(store / "runs" / "run-a", "risk_gap")
    nodes = np.array([[-0.1, 0.5, 1.0, 3.0], [-0.05, 0.4, 1.2, 2.9]])
    (store / "runs" / "run-a" / "curvature.json").write_text(json.dumps({
        "model": "a_resnest20", "module": None, "dim": 100, "bn": "eval", "num_samples": 64, "loss": 0.9,
        "top_eigenvalues": [3.0, 2.0], "top_error_bounds": [1e-6, 1e-5], "min_eigenvalue": -0.1,
        "min_error_bound": 1e-4, "trace": {"value": 10.0, "std_error": 0.5, "num_matvecs": 12},
        "density": {"nodes": nodes.tolist(), "weights": np.full_like(nodes, 1 / nodes.size).tolist()}}))
    (store / "runs" / "run-b" / "curvature.json").write_text("{not json")
    return store


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return {"root": root, "store": _fake_store(root), "audit": _fake_audit(root / "audit.json")}


def _outputs(cell) -> list:
    return cell.get("outputs", [])


def _text(cell) -> str:
    parts = []
    for o in _outputs(cell):
        parts.append(o.get("text", ""))
        parts += [v for k, v in o.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(parts)


def _cell_calling(nb, name: str):
    found = [c for c in nb.cells if c.cell_type == "code" and name in c.source]
    assert len(found) == 1, f"expected one cell calling {name}"
    return found[0]


# ----------------------------------------------------------------------------------------------
# executed notebooks (these start kernels)
# ----------------------------------------------------------------------------------------------

def test_cli_builds_an_executed_rn_notebook_and_html(fake, capsys):
    out = fake["root"] / "out"
    assert main(["report", "--paper", "rn", "--audit", str(fake["audit"]), "--store", str(fake["store"]),
                 "--reports", str(fake["root"]), "--out", str(out), "--no-progress"]) == 0
    assert f"wrote {out / 'rn.ipynb'}" in capsys.readouterr().out
    nb = nbformat.read(out / "rn.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in _outputs(c) if o.output_type == "error"]

    # The injected cell follows the source's parameters cell and holds only literals.
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    i = next(k for k, t in enumerate(tags) if "parameters" in t)
    assert "injected-parameters" in tags[i + 1]
    values = {t.targets[0].id: ast.literal_eval(t.value) for t in ast.parse(nb.cells[i + 1].source).body}
    assert values == {"PAPER": "RN", "STORE": str(fake["store"].resolve()),
                      "AUDIT_JSON": str(fake["audit"].resolve()), "REPORTS": str(fake["root"].resolve())}

    claims = _text(_cell_calling(nb, "show_claims"))
    assert all(cid in claims for cid in RN_IDS)
    assert "not in this audit.json" in claims  # RN-C3 left out of the fake audit
    # The headline effect and CI, an unknown extra field, and the per-comparison table.
    assert "[-1.6, -0.9]" in claims and "p_value" in claims and "0.031" in claims
    assert "resnest - standard" in claims and "-1.25" in claims
    for name in ("show_training_curves", "show_landscapes", "show_risk_gaps", "show_curvature"):
        cell = _cell_calling(nb, name)
        assert any("image/png" in o.get("data", {}) for o in _outputs(cell)), f"{name} drew no PNG"
        assert "not run" not in _text(cell)
    curves = _text(_cell_calling(nb, "show_training_curves"))
    assert "rn-cifar" in curves and "runs on synthetic" in curves and "resnet18" not in curves
    assert "run-b/curvature.json" in _text(_cell_calling(nb, "show_header"))  # unreadable file listed

    html = (out / "rn.html").read_text()
    assert all(cid in html for cid in RN_IDS) and html.count("data:image/png") >= 4
    # Budget from the issue: each notebook and its HTML stay under 1 MB in the repository.
    assert (out / "rn.ipynb").stat().st_size < 1_000_000 and (out / "rn.html").stat().st_size < 1_000_000


def test_a_failing_cell_fails_the_command_with_its_error_and_writes_nothing(fake, tmp_path, capsys):
    # A hand-written jupytext source from --sources: the RN notebook's text with one cell that raises.
    sources = tmp_path / "sources"
    sources.mkdir()
    text = report.notebook_text("RN")
    marker = "report.show_claims(ctx)"
    assert marker in text
    (sources / "rn.py").write_text(text.replace(marker, marker + "\nraise ValueError('boom from a cell')"))
    out = tmp_path / "out"
    code = main(["report", "--paper", "RN", "--sources", str(sources), "--audit", str(fake["audit"]),
                 "--store", str(fake["store"]), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "the RN notebook" in err and "failed in cell" in err and "ValueError: boom from a cell" in err
    assert not (out / "rn.ipynb").exists() and not (out / "rn.html").exists()


# ----------------------------------------------------------------------------------------------
# sources and errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("paper", list(PAPERS))
def test_sources_render_to_canonical_jupytext_with_a_parameters_cell(paper):
    import jupytext

    path = report.notebook_source(paper)
    assert path.parent == report.NOTEBOOK_SOURCES and path.name == f"{paper.lower()}.py"
    text = report.notebook_text(paper)
    nb = jupytext.reads(text, fmt="py:percent")
    # Written back unchanged: the template renders exactly what jupytext produces, so the text a
    # user saves to edit and build with --sources is the notebook, cell for cell.
    assert jupytext.writes(nb, fmt="py:percent") == text
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    names = [t.targets[0].id for t in ast.parse(params[0].source).body]
    assert sorted(names) == sorted(report.PARAMETER_NAMES)
    assert ast.literal_eval(ast.parse(params[0].source).body[0].value) == paper
    for cell in nb.cells:
        if cell.cell_type == "code":
            compile(cell.source, f"{path.name} cell", "exec")


def _rendered_cells(paper: str) -> list:
    import jupytext

    return jupytext.reads(report.notebook_text(paper), fmt="py:percent").cells


def test_every_notebook_has_the_templates_sections_and_its_own():
    # After the parameters and setup cells: the claims, then the sections of the paper's spec.
    calls = {p: [c.source for c in _rendered_cells(p) if c.cell_type == "code"][2:] for p in PAPERS}
    for paper, cells in calls.items():
        assert cells[0] == "report.show_claims(ctx)"
        for name in ("show_training_curves", "show_landscapes", "show_risk_gaps", "show_curvature"):
            assert f"report.{name}(ctx)" in cells, f"{paper} lacks {name}"
    assert [c for c in calls["ND"] if "reproduction" in c] == ['report.show_reproduction(ctx, "nd-table2")']
    assert [c for c in calls["OAI"] if "reproduction" in c] == ['report.show_reproduction(ctx, "oai-table2")']
    assert [p for p, cells in calls.items() if "report.show_fp16(ctx)" in cells] == ["NRL"]


def test_unknown_paper_lists_the_valid_ids(fake, capsys):
    assert main(["report", "--paper", "XX", "--audit", str(fake["audit"])]) == 2
    assert "--paper must be one of 'NRL', 'ND', 'OAI', 'RN', 'IM'; got 'XX'" in capsys.readouterr().err


def test_missing_audit_names_the_path_and_the_command_that_makes_it(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "audit.json"
    assert main(["report", "--paper", "RN", "--audit", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"audit results not found at {missing}" in err and "blockaudit audit" in err


def test_malformed_audit_is_rejected_with_the_expected_format(tmp_path):
    bad = tmp_path / "audit.json"
    bad.write_text(json.dumps({"meta": {}}))
    with pytest.raises(ValueError, match="has no 'verdicts' list"):
        report.load_audit(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        report.load_audit(bad)


def test_missing_source_names_the_path_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no notebook source for RN at {tmp_path / 'rn.py'}"):
        report.notebook_source("RN", tmp_path)


def test_a_spec_source_must_define_the_notebook_of_its_paper(tmp_path):
    (tmp_path / "rn.py").write_text("NOTEBOOK = None\n")
    with pytest.raises(TypeError, match=r"rn.py must define NOTEBOOK = NotebookSpec\(\.\.\.\)"):
        report.notebook_text("RN", tmp_path)
    (tmp_path / "rn.py").write_text(report.notebook_source("IM").read_text())
    with pytest.raises(ValueError, match="holds the notebook of 'IM', not of 'RN'"):
        report.notebook_text("RN", tmp_path)


# ----------------------------------------------------------------------------------------------
# the helpers, in-process
# ----------------------------------------------------------------------------------------------

def test_store_scan_attributes_results_to_papers_and_lists_unreadable_files(fake):
    index = report.scan_store(fake["store"])
    assert set(index.sweeps) == {"rn-cifar"} and set(index.runs) == {"run-a", "run-b", "run-n"}
    assert [Path(p.split(":")[0]).name for p in index.problems] == ["curvature.json"]
    landscapes = {a.run: a.paper for a in index.artefacts if a.kind == "landscape"}
    assert landscapes == {"run-a": "RN", "run-b": "RN", "run-n": "NRL"}  # resnet18 is registered under NRL
    assert [a.run for a in index.artefacts_of("risk_gap", "RN")] == ["run-a"]
    assert report.scan_store(fake["root"] / "absent").exists is False


def test_a_run_is_attributed_by_its_claim_record_before_its_model(tmp_path):
    # resnet18 is registered under NRL; the run's claim.json says it was trained for RN-cifar.
    store = tmp_path / "store"
    records = {"recorded": json.dumps({"claims": ["RN-cifar"], "paper": "RN"}), "unrecorded": None,
               "unreadable": "{"}
    for rid, record in records.items():
        run = store / "runs" / rid
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"model": "resnet18", "dataset": "synthetic", "seed": 0}))
        pd.DataFrame({"epoch": [1, 2], "test_acc": [0.5, 0.6]}).to_csv(run / "metrics.csv", index=False)
        if record is not None:
            (run / "claim.json").write_text(record)
        _landscape(run, "resnet18", 1.0)
    index = report.scan_store(store)
    assert index.runs["recorded"]["claim"] == {"claims": ["RN-cifar"], "paper": "RN"}
    # An unreadable record is listed; the run stays, attributed as if it had none.
    assert [Path(p.split(":")[0]).relative_to(store).as_posix() for p in index.problems] == [
        "runs/unreadable/claim.json"]
    assert {a.run: a.paper for a in index.artefacts} == {"recorded": "RN", "unrecorded": "NRL", "unreadable": "NRL"}
    assert set(report.training_curves(index, "RN")["run_id"]) == {"recorded"}
    assert set(report.training_curves(index, "NRL")["run_id"]) == {"unrecorded", "unreadable"}


def test_a_sweeps_paper_column_outranks_its_name(tmp_path):
    # Named after NRL-linear's check, but its results record that its runs were trained for RN.
    sweep = tmp_path / "store" / "sweeps" / "nrl-linear"
    (sweep / "r0").mkdir(parents=True)
    pd.DataFrame({"run_id": ["r0"], "label": ["x"], "model": ["resnet18"], "seed": [0], "epoch": [1],
                  "test_acc": [0.5], "paper": ["RN"]}).to_csv(sweep / "results.csv", index=False)
    _landscape(sweep / "r0", "resnet18", 1.0)
    assert set(report.training_curves(tmp_path / "store", "RN")["source"]) == {"nrl-linear"}
    assert report.training_curves(tmp_path / "store", "NRL").empty
    assert [a.paper for a in report.scan_store(tmp_path / "store").artefacts] == ["RN"]


def test_a_sweep_named_after_a_claim_belongs_to_its_paper_whatever_its_models(tmp_path):
    # resnet20 is registered under RN, but a sweep named "<prefix>-nrl-linear" settles NRL-linear.
    sweep = tmp_path / "store" / "sweeps" / "audit-quick-nrl-linear"
    sweep.mkdir(parents=True)
    pd.DataFrame({"run_id": ["a", "b"], "label": ["x", "x"], "model": ["resnet20"] * 2, "seed": [0, 1],
                  "epoch": [1, 1], "test_acc": [0.5, 0.7], "finished": [True, True],
                  "grid.lr": [0.1, 0.1]}).to_csv(sweep / "results.csv", index=False)
    curves = report.training_curves(tmp_path / "store", "NRL")
    assert set(curves["source"]) == {"audit-quick-nrl-linear"} and "finished" not in curves.columns
    assert report.training_curves(tmp_path / "store", "RN").empty


def test_grid_points_of_one_label_are_not_averaged_as_seeds(tmp_path):
    sweep = tmp_path / "store" / "sweeps" / "rn-grid"
    sweep.mkdir(parents=True)
    pd.DataFrame({"run_id": list("abcd"), "label": ["resnet20"] * 4, "model": ["resnet20"] * 4,
                  "seed": [0, 1, 0, 1], "epoch": [1] * 4, "test_acc": [0.5, 0.6, 0.8, 0.9],
                  "grid.lr": [0.05, 0.05, 0.1, 0.1]}).to_csv(sweep / "results.csv", index=False)
    table = report.final_epoch_table(report.training_curves(tmp_path / "store", "RN")).set_index("label")
    assert table.loc["resnet20 (lr=0.05)", "test_acc mean"] == pytest.approx(0.55, abs=1e-12)
    assert table.loc["resnet20 (lr=0.1)", "test_acc mean"] == pytest.approx(0.85, abs=1e-12)


def test_final_epoch_table_is_the_mean_and_sample_std_over_seeds(fake):
    curves = report.training_curves(fake["store"], "RN")
    table = report.final_epoch_table(curves).set_index("label")
    for label in ("ResNet-20", "ResNEst-20"):
        expected = np.array([_test_acc(label, s, EPOCHS) for s in SEEDS])
        row = table.loc[label]
        assert row["seeds"] == len(SEEDS) and row["final epoch"] == str(EPOCHS)
        # Exact up to float64 round-off of a 3-term mean: 1e-12 is ~1e4 ulps at these magnitudes.
        assert row["test_acc mean"] == pytest.approx(expected.mean(), abs=1e-12)
        assert row["test_acc std"] == pytest.approx(expected.std(ddof=1), abs=1e-12)
    assert report.training_curves(fake["store"], "IM").empty


def test_bands_on_a_log_axis_stay_positive():
    # Losses spanning decades with a seed spread larger than the mean: an arithmetic mean - std
    # band would go below 0 and fill a log axis to its bottom; the log-space band cannot.
    rows = [{"source": "s", "label": "m", "seed": seed, "run_id": str(seed), "epoch": epoch,
             "loss": (5.0 if seed == 0 else 0.05) / epoch ** 3}
            for seed in range(3) for epoch in range(1, 6)]
    curves = pd.DataFrame(rows)
    assert curves.groupby("epoch")["loss"].agg(lambda v: v.mean() - v.std()).lt(0).all()
    fig = report.plot_training_curves(curves, metrics=("loss",))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    band = np.concatenate([p.get_paths()[0].vertices for p in ax.collections])
    assert band[:, 1].min() > 0
    # The centre line is the geometric mean over seeds at each epoch.
    line = ax.lines[0].get_ydata()
    expected = curves.groupby("epoch")["loss"].agg(lambda v: np.exp(np.log(v).mean())).to_numpy()
    assert np.allclose(line, expected, rtol=1e-12)


def test_landscapes_split_over_rows_keep_shared_levels(tmp_path):
    store = tmp_path / "store"
    for k in range(6):  # more than one row of panels
        run = store / "runs" / f"r{k}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"model": "resnet20", "dataset": "synthetic", "seed": k}))
        _landscape(run, "resnet20", scale=1.0 + k)
    found = report.scan_store(store).artefacts_of("landscape", "RN")
    figures = report.plot_landscapes(found)
    assert len(figures) == 2
    assert np.array_equal(figures[0].levels, figures[1].levels)
    # Levels span every panel's values: from the common centre loss to the steepest grid's maximum.
    assert figures[0].levels[0] == pytest.approx(0.3) and figures[0].levels[-1] == pytest.approx(0.3 + 6.0 * 1.5)
    labels = report.landscape_table(found)["landscape"]
    assert labels.is_unique  # same model six times: told apart by run


def test_claims_table_marks_claims_absent_from_the_audit(fake):
    table = report.claims_table("rn", fake["audit"]).set_index("claim")
    assert list(table.index) == RN_IDS
    assert table.loc["RN-C3", "verdict"] == "not run"
    assert table.loc["RN-cifar", "runs"] == 2 and table.loc["RN-cifar", "effect"] == -1.25
    assert table.loc["RN-cifar", "CI"] == "[-1.6, -0.9]" and table.loc["RN-cifar", "seeds"] == 3
    comparisons = report.comparisons_table("RN", fake["audit"])
    assert comparisons.to_dict("records") == [{"claim": "RN-cifar", "comparison": "resnest - standard",
                                               "effect": -1.25, "95% CI": "[-1.6, -0.9]", "n": 3,
                                               "region": "(-1e+300, +0)", "result": "holds", "paper": "-1.58 pts"}]
    assert report.comparisons_table("IM", fake["audit"]).empty


def test_sections_say_not_run_for_a_missing_store(fake, tmp_path, capsys):
    ctx = report.ReportContext.from_parameters("IM", tmp_path / "absent", fake["audit"], tmp_path)
    report.show_training_curves(ctx)
    report.show_landscapes(ctx)
    report.show_reproduction(ctx, "nd-table2")
    out = capsys.readouterr().out
    assert out.count("not run:") == 3 and "does not exist" in out and "blockaudit reproduce nd-table2" in out
