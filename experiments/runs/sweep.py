"""Multi-seed sweeps over models and a config grid, and the results store they fill.

A sweep file (TOML or YAML, see ``experiments/configs/``) names a base ``TrainConfig``, the models
(a registered name, a label, builder options), the seeds and an optional grid::

    name = "rn-digits"
    seeds = [0, 1]            # top level: before the first [table]; a [[models]] entry may override it
    [base]                    # any TrainConfig field except model / model_options / seed
    dataset = "digits"
    epochs = 5
    [[models]]
    label = "resnest"         # optional, defaults to name; used in run ids and tables
    name = "resnest20"        # see `blockaudit models`
    options = { width = 8 }   # builder options (model_options)
    base = { lr = 0.05 }      # optional per-model TrainConfig overrides
    [grid]                    # optional cartesian product over TrainConfig fields;
    lr = [0.05, 0.1]          # "model_options.width" / "dataset_options.n_train" reach into the option dicts

``expand(spec)`` turns it into one ``RunSpec`` per (model, grid point, seed), in that nesting
order. The store (default ``runs/``, git-ignored) holds::

    STORE/runs/<run_id>/          a normal run directory (experiments.runs.store), shared by every sweep
    STORE/sweeps/<name>/
        sweep.json                the resolved sweep: its spec and every run's id and config
        results.csv               tidy: one row per run per finished epoch (``results_table``)
        summary.csv / summary.md  final-epoch n, mean, std, min, max per label and grid point

Run ids are ``<label>-s<seed>-<hash>``: the first 8 hex digits of the SHA-256 of the canonical
JSON of the config (``canonical_config``), so the same config gets the same id on every machine
and in every session, and two sweeps that share a run share its directory. The hash leaves out
``EXECUTION_FIELDS`` (where and how fast a run executes: ``device``, ``compile``,
``compile_mode``, ``channels_last``, ``deterministic``, ``eval_batch_size``; they change the
numbers by floating-point rounding at most); the device each session used is in the run's
``environment.json``. A CPU run is the exception: its thread count (``threads``, ``CPU_THREADS``
unless the file sets it) and torch's CPU kernel set (``numeric_environment``, e.g.
``cpu-AVX512-t1``) enter its hash, because a training run amplifies their rounding into different
accuracies; a store made on one CPU is therefore not reused on a CPU with other kernels. Give a GPU
sweep's device in its file (``base.device = "cuda"``): ``--device`` only moves runs, ids stay. It also leaves out
fields at their TrainConfig default: adding a field with a default to TrainConfig keeps every
existing id. A stored config that disagrees with the expected one (a changed default) is refused,
never mixed into the table.

A run is finished when its directory has ``result.json`` or ``config.epochs`` metric rows;
``run_sweep`` skips finished runs and resumes unfinished ones from their checkpoints.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from analysis.validation import check_int
from experiments.runs.provenance import numeric_environment
from experiments.runs.store import RunDir, TrainConfig
from experiments.runs.train import train

__all__ = [
    "SweepSpec", "ModelSpec", "RunSpec", "SweepConfigError", "SweepFailed", "load_sweep", "expand",
    "run_id_for", "canonical_config", "run_sweep", "train_runs", "results_table", "run_status", "summarize",
    "paired_differences", "grid_column", "shipped_configs", "CONFIG_DIR", "EXECUTION_FIELDS",
    "LOADING_OPTIONS", "LOCATION_OPTIONS", "DEFAULT_STORE", "add_subcommand",
]

# torch threads of a sweep's CPU runs unless its config sets ``threads``: fixed, so that the numbers
# do not depend on --workers or the core count (1 vs 2 threads moved a run's test accuracy from 42%
# to 20% in one probe), and one because small CPU models gain nothing from a second thread: workers
# use the cores instead.
CPU_THREADS = 1
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ACCURACY_METRICS = ("acc", "test_acc")  # stored as fractions; paired_differences gives them in points
DEFAULT_STORE = Path("runs")
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
# How fast (not what) a run computes: the same numbers up to floating-point rounding. bf16
# ``precision`` changes results beyond rounding, so it stays in the hash.
EXECUTION_FIELDS = frozenset({"device", "compile", "compile_mode", "channels_last", "deterministic",
                              "eval_batch_size"})
# Loader options that say where the data is or how fast it loads, not what it is. ``path``/``root``
# only for loaders that check the content (CIFAR's class names and counts), so the same CIFAR-10 at
# another path is the same run; an ``image_folder``'s path is its identity and stays in the hash.
LOADING_OPTIONS = frozenset({"cache_dir", "workers", "progress"})
LOCATION_OPTIONS = {"cifar10": frozenset({"root"}), "cifar100": frozenset({"root"}),
                    "cifar10_jpeg": frozenset({"path"})}
SWEEP_KEYS = ("name", "description", "seeds", "base", "models", "grid")
MODEL_KEYS = ("label", "name", "options", "seeds", "base")
# Set by the sweep's own keys, so a base/grid entry for them would be ambiguous.
_SET_ELSEWHERE = {"model": "a [[models]] entry's name", "model_options": "a [[models]] entry's options",
                  "seed": "seeds"}
_OPTION_DICTS = ("model_options", "dataset_options")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_ID_COLUMNS = ("sweep", "run_id", "label", "model", "seed")
_METRIC_ORDER = ("epoch", "lr", "loss", "acc", "test_loss", "test_acc", "seconds")


class SweepConfigError(ValueError):
    """A sweep file or spec is malformed; the message names the file and the key."""


class SweepFailed(RuntimeError):
    """Some runs of a sweep raised; the others ran. ``failures``: run id -> error; ``results``: the table."""

    def __init__(self, failures: dict[str, str], results: pd.DataFrame) -> None:
        self.failures = dict(failures)
        self.results = results
        lines = "\n".join(f"  {rid}: {err}" for rid, err in self.failures.items())
        super().__init__(f"{len(self.failures)} run(s) failed (traceback in STORE/runs/<run_id>/error.txt):\n{lines}")


# --- the spec -----------------------------------------------------------------------------------

@dataclass
class ModelSpec:
    """One model of a sweep: ``name`` (registered), ``label`` (in ids and tables), builder ``options``.

    ``seeds`` (None: the sweep's) and ``base`` (TrainConfig overrides on top of the sweep's base)
    are per-model extras.
    """

    label: str
    name: str
    options: dict = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    base: dict = field(default_factory=dict)


@dataclass
class SweepSpec:
    """A sweep: ``models`` x ``grid`` x ``seeds`` runs of ``base`` (module docstring)."""

    name: str
    base: dict
    models: list[ModelSpec]
    seeds: tuple[int, ...] = (0,)
    grid: dict = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict, *, source: str | None = None) -> "SweepSpec":
        """Validate a parsed sweep file; errors name ``source`` (the file) and the key."""
        return _spec_from_dict(d, source or "sweep config")

    def to_dict(self) -> dict:
        """The file form (``from_dict(spec.to_dict()) == spec``)."""
        models = []
        for m in self.models:
            entry = {"label": m.label, "name": m.name, "options": dict(m.options)}
            if m.seeds is not None:
                entry["seeds"] = list(m.seeds)
            if m.base:
                entry["base"] = dict(m.base)
            models.append(entry)
        out = {"name": self.name, "seeds": list(self.seeds), "base": dict(self.base), "models": models,
               "grid": {k: list(v) for k, v in self.grid.items()}}
        if self.description:
            out["description"] = self.description
        return out

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.models]


@dataclass
class RunSpec:
    """One run of a sweep: its id, model label, seed, the full config and its grid coordinates."""

    run_id: str
    label: str
    seed: int
    config: TrainConfig
    grid_values: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.config.model


def _fail(where: str, key: str, message: str) -> SweepConfigError:
    return SweepConfigError(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def _train_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_table(where: str, key: str, value, allowed: Sequence[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, key, f"must be a table/mapping; got {type(value).__name__} {value!r}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise _fail(where, key, f"keys must be strings; got {bad!r}")
    if allowed is not None:
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise _fail(where, key, f"unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(allowed)}")
    return dict(value)


def _check_name(where: str, key: str, value) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise _fail(where, key, f"must be a non-empty string of letters, digits and _ . + - (it names a folder); "
                                f"got {value!r}")
    return value


def _check_seeds(where: str, key: str, value) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise _fail(where, key, f"must be a list of integers >= 0, e.g. [0, 1, 2]; "
                                f"got {type(value).__name__} {value!r}")
    if not value:
        raise _fail(where, key, "is empty; give at least one seed, e.g. [0, 1, 2]")
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise _fail(where, key, f"must hold integers >= 0; got {s!r} in {list(value)!r}")
    dup = sorted({s for s in value if list(value).count(s) > 1})
    if dup:
        raise _fail(where, key, f"repeats seed(s) {dup}; each seed would be the same run")
    return tuple(value)


def _check_base(where: str, key: str, value) -> dict:
    base = _check_table(where, key, value)
    names = _train_fields()
    for k in base:
        if k in _SET_ELSEWHERE:
            raise _fail(where, f"{key}.{k}", f"is set by {_SET_ELSEWHERE[k]}, not in {key}")
        if k == "seeds":
            raise _fail(where, f"{key}.seeds", "seeds is a top-level key (TOML: write it before the first [table]) "
                                               "or a key of a [[models]] entry")
        if k not in names:
            valid = sorted(set(names) - set(_SET_ELSEWHERE))
            raise _fail(where, f"{key}.{k}", f"unknown TrainConfig field; valid fields: {', '.join(valid)}")
    return base


def _check_grid(where: str, value, base_keys: set[str]) -> dict:
    grid = _check_table(where, "grid", value)
    names = _train_fields()
    for k, values in grid.items():
        head, _, option = k.partition(".")
        if option:
            if head not in _OPTION_DICTS:
                raise _fail(where, f"grid.{k}", f"a dotted grid key must start with {' or '.join(_OPTION_DICTS)}")
        elif k in _SET_ELSEWHERE:
            raise _fail(where, f"grid.{k}", f"is set by {_SET_ELSEWHERE[k]}; list models or seeds instead")
        elif k not in names:
            valid = sorted(set(names) - set(_SET_ELSEWHERE))
            raise _fail(where, f"grid.{k}", f"unknown TrainConfig field; valid fields: {', '.join(valid)} "
                                            f"(or model_options.KEY / dataset_options.KEY)")
        if k in base_keys:
            raise _fail(where, f"grid.{k}", "is also set in a base table; the grid would override it, remove one")
        if not isinstance(values, (list, tuple)) or not values:
            raise _fail(where, f"grid.{k}", f"must be a non-empty list of values; got {values!r}")
        canon = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(canon)) != len(canon):
            raise _fail(where, f"grid.{k}", f"repeats a value in {list(values)!r}")
        grid[k] = list(values)
    return grid


def _check_model(where: str, i: int, entry) -> ModelSpec:
    from analysis.models import list_models, model_info

    key = f"models[{i}]"
    entry = _check_table(where, key, entry, MODEL_KEYS)
    if "name" not in entry:
        raise _fail(where, key, "has no name; give a registered model name (see `blockaudit models`)")
    name = entry["name"]
    if not isinstance(name, str) or name not in list_models():
        raise _fail(where, f"{key}.name", f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    label = _check_name(where, f"{key}.label", entry.get("label", name))
    options = _check_table(where, f"{key}.options", entry.get("options", {}))
    valid = model_info(name).options
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise _fail(where, f"{key}.options", f"unknown option(s) {', '.join(map(repr, unknown))} for model {name!r}; "
                                             f"valid options: {', '.join(valid)}")
    seeds = _check_seeds(where, f"{key}.seeds", entry["seeds"]) if "seeds" in entry else None
    base = _check_base(where, f"{key}.base", entry.get("base", {}))
    return ModelSpec(label=label, name=name, options=options, seeds=seeds, base=base)


def _spec_from_dict(d, where: str) -> SweepSpec:
    d = _check_table(where, "", d, SWEEP_KEYS)
    if "name" not in d:
        raise _fail(where, "name", "is required (it names STORE/sweeps/<name>/)")
    name = _check_name(where, "name", d["name"])
    description = d.get("description", "")
    if not isinstance(description, str):
        raise _fail(where, "description", f"must be a string; got {description!r}")
    seeds = _check_seeds(where, "seeds", d["seeds"]) if "seeds" in d else (0,)
    base = _check_base(where, "base", d.get("base", {}))
    models_raw = d.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise _fail(where, "models", "must be a non-empty list of model entries (TOML: [[models]] tables with "
                                     f"name = \"...\"); got {models_raw!r}")
    models = [_check_model(where, i, m) for i, m in enumerate(models_raw)]
    labels = [m.label for m in models]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise _fail(where, "models", f"label(s) {dup} used twice; give each [[models]] entry a distinct label")
    base_keys = set(base) | {k for m in models for k in m.base}
    grid = _check_grid(where, d.get("grid", {}), base_keys)
    spec = SweepSpec(name=name, base=base, models=models, seeds=seeds, grid=grid, description=description)
    _expand(spec, where)  # builds every TrainConfig, so bad values fail now, naming the run
    return spec


def shipped_configs() -> list[Path]:
    """The sweep files shipped in ``experiments/configs``."""
    return sorted(p for p in CONFIG_DIR.glob("*") if p.suffix in CONFIG_SUFFIXES)


def _resolve_config_path(path: Path | str) -> Path:
    path = Path(path).expanduser()
    if path.exists():
        return path
    # A bare name of a shipped config (``digits_smoke``) is accepted too.
    if path.parent == Path("."):
        for suffix in ("", *CONFIG_SUFFIXES):
            candidate = CONFIG_DIR / (path.name + suffix)
            if candidate.is_file():
                return candidate
    shipped = ", ".join(str(p) for p in shipped_configs()) or "none"
    raise FileNotFoundError(f"sweep config {str(path)!r} not found (tried {path.resolve()} and {CONFIG_DIR}); "
                            f"shipped configs: {shipped}")


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and validate a TOML (``.toml``) or YAML (``.yaml``/``.yml``) sweep file.

    ``name`` defaults to the file's stem. A bare name of a shipped config (``"digits_smoke"``)
    resolves to ``experiments/configs``.
    """
    path = _resolve_config_path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise SweepConfigError(f"{path}: unsupported sweep file type {path.suffix!r}; use one of "
                               f"{', '.join(CONFIG_SUFFIXES)}")
    text = path.read_text()
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SweepConfigError(f"{path}: invalid TOML: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SweepConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return SweepSpec.from_dict(data, source=str(path))


# --- expansion and run ids ------------------------------------------------------------------------

def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _canonical_value(value, is_float: bool):
    if isinstance(value, tuple):
        value = list(value)
    if is_float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # lr = 1 and lr = 1.0 are the same run
    return value


def canonical_config(config: TrainConfig) -> dict:
    """The fields that define what a run computes: all but ``EXECUTION_FIELDS`` and default values.

    Dataset options in ``LOADING_OPTIONS`` (and ``LOCATION_OPTIONS`` of content-checked loaders)
    are left out too: they say where the data is and how it loads, not what it is.

    Fields declared ``float`` are cast to float and tuples to lists, so equal configs written
    differently (``1`` / ``1.0``, a tuple / a list) canonicalise equally.
    """
    out = {}
    values = config.to_dict()
    for name, f in _train_fields().items():
        if name in EXECUTION_FIELDS:
            continue
        is_float = f.type in (float, "float")
        value = _canonical_value(values[name], is_float)
        default = _field_default(f)
        if default is not dataclasses.MISSING and _canonical_value(default, is_float) == value \
                and type(_canonical_value(default, is_float)) is type(value):
            continue
        out[name] = value
    if values.get("threads") is not None and str(values["device"]).split(":")[0] == "cpu":
        # A CPU run's numbers depend on torch's kernel set as well as its thread count: the same
        # config on an AVX2 and an AVX512 machine is two results, so two ids.
        out["numeric_environment"] = numeric_environment("cpu", values["threads"])
    if "dataset_options" in out:
        drop = LOADING_OPTIONS | LOCATION_OPTIONS.get(config.dataset, frozenset())
        out["dataset_options"] = {k: v for k, v in out["dataset_options"].items() if k not in drop}
        if not out["dataset_options"]:
            del out["dataset_options"]
    return out


def run_id_for(label: str, config: TrainConfig) -> str:
    """``f"{label}-s{seed}-{h}"``, ``h`` = first 8 hex digits of SHA-256 of ``canonical_config`` as sorted JSON."""
    text = json.dumps(canonical_config(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{label}-s{config.seed}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def grid_column(key: str) -> str:
    """The results-table column of grid key ``key``: ``grid.<key>`` (``grid.lr`` beside the epoch's ``lr``)."""
    return f"grid.{key}"


def _grid_points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _expand(spec: SweepSpec, where: str) -> list[RunSpec]:
    runs, seen = [], {}
    for i, m in enumerate(spec.models):
        for point in _grid_points(spec.grid):
            for seed in (m.seeds if m.seeds is not None else spec.seeds):
                fields = {**spec.base, **m.base, "model": m.name, "model_options": dict(m.options), "seed": seed}
                for k in _OPTION_DICTS:
                    fields[k] = dict(fields.get(k, {}))
                for k, v in point.items():
                    head, _, option = k.partition(".")
                    if option:
                        fields[head][option] = v
                    else:
                        fields[k] = v
                if fields.get("threads") is None and str(fields.get("device", "cpu")).split(":")[0] == "cpu":
                    fields["threads"] = CPU_THREADS
                try:
                    config = TrainConfig.from_dict(fields)
                except (TypeError, ValueError) as exc:
                    at = f"models[{i}] ({m.label}), seed {seed}" + (f", grid point {point}" if point else "")
                    raise SweepConfigError(f"{where}: {at}: {exc}") from None
                run = RunSpec(run_id_for(m.label, config), m.label, seed, config, dict(point))
                if run.run_id in seen:
                    raise SweepConfigError(f"{where}: runs {seen[run.run_id]} and {point or seed} of {m.label!r} "
                                           f"have the same config (id {run.run_id})")
                seen[run.run_id] = point or seed
                runs.append(run)
    return runs


def expand(spec: SweepSpec) -> list[RunSpec]:
    """One ``RunSpec`` per model x grid point x seed (that nesting order)."""
    return _expand(spec, f"sweep {spec.name!r}")


# --- the store ------------------------------------------------------------------------------------

def _run_dir(store: Path, run: RunSpec) -> Path:
    return Path(store) / "runs" / run.run_id


def _finished(rd: RunDir, config: TrainConfig, rows: list[dict]) -> bool:
    # result.json marks a finished run even without metrics rows for every epoch; older runs have
    # no result.json, so a full metrics.csv counts too.
    return (rd.path / "result.json").exists() or len(rows) >= config.epochs


def _progress_of(rd: RunDir, config: TrainConfig) -> tuple[int, bool]:
    """(epochs recorded, finished) of a run directory."""
    rows = rd.read_metrics()
    return len(rows), _finished(rd, config, rows)


def _check_stored_config(rd: RunDir, run: RunSpec) -> TrainConfig | None:
    """The stored config, after refusing one that computes something else than ``run.config``."""
    if not rd.config_path.exists():
        return None
    stored = rd.load_config()
    a, b = canonical_config(stored), canonical_config(run.config)
    if a != b:
        diff = {k: (a.get(k, "<default>"), b.get(k, "<default>")) for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)}
        raise SweepConfigError(
            f"run directory {rd.path} holds a different config than run {run.run_id} expects (stored, expected: "
            f"{diff}); a TrainConfig default probably changed since it ran. Move it away to re-run it.")
    return stored


def run_status(spec: SweepSpec, store: Path | str = DEFAULT_STORE) -> pd.DataFrame:
    """One row per run: run_id, label, model, seed, grid columns, epochs_done, epochs, status (new/partial/done)."""
    rows = []
    for run in expand(spec):
        rd = RunDir(_run_dir(Path(store), run))
        _check_stored_config(rd, run)
        done, finished = _progress_of(rd, run.config)
        status = "done" if finished else ("partial" if done else "new")
        rows.append({"run_id": run.run_id, "label": run.label, "model": run.model, "seed": run.seed,
                     **{grid_column(k): _cell(v) for k, v in run.grid_values.items()},
                     "epochs_done": done, "epochs": run.config.epochs, "status": status})
    return pd.DataFrame(rows)


def _cell(value):
    # Lists/dicts (a grid over milestones) go into the table as JSON so the CSV reloads to the same text.
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple, dict)) else value


def results_table(spec: SweepSpec, store: Path | str = DEFAULT_STORE) -> pd.DataFrame:
    """The tidy table of the runs of ``spec`` found in ``store`` (trains nothing).

    One row per run per recorded epoch: sweep, run_id, label, model, seed, ``grid.<key>`` per grid
    key, every metrics.csv column (epoch, lr, loss, acc, test_loss, test_acc, seconds, ...), and
    ``finished`` (the run reached its last epoch). Runs with no finished epoch have no rows.
    """
    runs = expand(spec)
    grid_cols = [grid_column(k) for k in spec.grid]
    rows, metric_cols = [], list(_METRIC_ORDER)
    for run in runs:
        rd = RunDir(_run_dir(Path(store), run))
        metrics = rd.read_metrics()
        if not metrics:
            continue
        finished = _finished(rd, run.config, metrics)
        ident = {"sweep": spec.name, "run_id": run.run_id, "label": run.label, "model": run.model, "seed": run.seed,
                 **{grid_column(k): _cell(v) for k, v in run.grid_values.items()}}
        for m in metrics:
            metric_cols += [k for k in m if k not in metric_cols]
            rows.append({**ident, **m, "finished": finished})
    columns = [*_ID_COLUMNS, *grid_cols, *metric_cols, "finished"]
    return pd.DataFrame(rows, columns=columns)


def _final_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    final = df.sort_values("epoch", kind="stable").groupby("run_id", sort=False).tail(1)
    if "finished" in final:
        final = final[final["finished"].astype(bool)]
    # Back to the table's run order (the spec's model, grid, seed order).
    order = {rid: i for i, rid in enumerate(dict.fromkeys(df["run_id"]))}
    return final.sort_values("run_id", key=lambda s: s.map(order), kind="stable")


def _check_columns(df: pd.DataFrame, names: Iterable[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a results DataFrame (results_table / run_sweep); got {type(df).__name__}")
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"{what} {', '.join(map(repr, missing))} not in the results table; "
                         f"columns: {', '.join(map(str, df.columns))}")


def summarize(df: pd.DataFrame, metric: str = "test_acc", by: Sequence[str] = ("label",)) -> pd.DataFrame:
    """Final-epoch ``metric`` of every finished run, aggregated per ``by`` group.

    Columns: ``*by``, metric, n, mean, std, min, max. ``std`` is the sample standard deviation
    (ddof=1) across the group's runs (seeds), NaN when n = 1. Groups keep the table's order.
    """
    by = [by] if isinstance(by, str) else list(by)
    _check_columns(df, ["run_id", "epoch"], "column(s)")
    _check_columns(df, [metric], "metric")
    _check_columns(df, by, "group column(s)")
    final = _final_rows(df)
    if final.empty:
        return pd.DataFrame(columns=[*by, "metric", "n", "mean", "std", "min", "max"])
    values = pd.to_numeric(final[metric], errors="raise")
    g = values.groupby([final[c] for c in by], sort=False, dropna=False)
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "std": g.std(ddof=1), "min": g.min(), "max": g.max()})
    out = out.reset_index()
    out.insert(len(by), "metric", metric)
    return out


def paired_differences(df: pd.DataFrame, block: str, baseline: str, metric: str = "test_acc") -> pd.DataFrame:
    """Per-seed final-epoch ``metric`` of label ``block`` minus label ``baseline``.

    Runs are paired on seed and every ``grid.*`` column (same seed: same initialisation stream and
    batch order, so the pairing removes the seed-to-seed noise both share). Columns: seed, grid
    columns, block, baseline, metric, block_value, baseline_value, difference. Only pairs where both
    runs finished appear. Accuracies (``ACCURACY_METRICS``) come in percentage points (x100: the
    unit ``experiments.audit.empirical.paired_stats`` reports), other metrics in their own units.
    """
    _check_columns(df, ["run_id", "epoch", "label", "seed"], "column(s)")
    _check_columns(df, [metric], "metric")
    labels = list(dict.fromkeys(df["label"]))
    for name, value in (("block", block), ("baseline", baseline)):
        if value not in labels:
            raise ValueError(f"{name} label {value!r} is not in the results table; "
                             f"labels: {', '.join(map(str, labels))}")
    keys = ["seed", *[c for c in df.columns if str(c).startswith("grid.")]]
    final = _final_rows(df)
    a = final[final["label"] == block][[*keys, metric]].rename(columns={metric: "block_value"})
    b = final[final["label"] == baseline][[*keys, metric]].rename(columns={metric: "baseline_value"})
    pairs = a.merge(b, on=keys, how="inner")
    if pairs.empty:
        raise ValueError(f"no finished run of {block!r} shares a seed (and grid point) with a finished run of "
                         f"{baseline!r}; seeds: {block}: {sorted(a['seed'].tolist())}, "
                         f"{baseline}: {sorted(b['seed'].tolist())}")
    pairs.insert(len(keys), "block", block)
    pairs.insert(len(keys) + 1, "baseline", baseline)
    pairs.insert(len(keys) + 2, "metric", metric)
    if metric in ACCURACY_METRICS:
        pairs[["block_value", "baseline_value"]] *= 100.0
    pairs["difference"] = pairs["block_value"] - pairs["baseline_value"]
    return pairs.reset_index(drop=True)


def _summary_markdown(spec: SweepSpec, df: pd.DataFrame, by: list[str], n_runs: int) -> str:
    from experiments.report.tables import markdown_table

    acc = summarize(df, "test_acc", by)
    loss = summarize(df, "test_loss", by)
    n_finished = int(_final_rows(df).shape[0]) if not df.empty else 0
    lines = [f"# Sweep {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    if acc.empty:
        lines += [f"No run has finished yet (0 of {n_runs})."]
        return "\n".join(lines) + "\n"
    fmt = lambda m, s: f"{m:.4f} ± {s:.4f}" if pd.notna(s) else f"{m:.4f}"  # noqa: E731
    table = acc[by].copy()
    models = dict(zip(df["label"], df["model"]))
    if "label" in by:
        table.insert(by.index("label") + 1, "model", [models[lab] for lab in acc["label"]])
    table["n"] = acc["n"].astype(int)
    table["test_acc (mean ± std)"] = [fmt(m, s) for m, s in zip(acc["mean"], acc["std"])]
    table["test_acc min"] = acc["min"]
    table["test_acc max"] = acc["max"]
    table["test_loss (mean ± std)"] = [fmt(m, s) for m, s in zip(loss["mean"], loss["std"])]
    lines += [markdown_table(table), "",
              f"- Final epoch of each finished run ({n_finished} of {n_runs} runs); std is the sample standard "
              "deviation (ddof=1) across seeds.",
              "- Raw data: results.csv (one row per run per epoch), summary.csv; runs in STORE/runs/<run_id>/."]
    return "\n".join(lines) + "\n"


def _write_outputs(spec: SweepSpec, store: Path, df: pd.DataFrame, runs: list[RunSpec]) -> Path:
    out = store / "sweeps" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    by = ["label", *[grid_column(k) for k in spec.grid]]

    def atomic(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    atomic(out / "sweep.json", json.dumps({
        "spec": spec.to_dict(),
        "runs": [{"run_id": r.run_id, "label": r.label, "seed": r.seed, "grid": r.grid_values,
                  "config": r.config.to_dict()} for r in runs]}, indent=2))
    atomic(out / "results.csv", df.to_csv(index=False))
    summary = pd.concat([summarize(df, m, by) for m in ("test_acc", "test_loss")], ignore_index=True)
    atomic(out / "summary.csv", summary.to_csv(index=False))
    atomic(out / "summary.md", _summary_markdown(spec, df, by, len(runs)))
    return out


# --- running ------------------------------------------------------------------------------------

def _data_key(config: TrainConfig) -> str:
    return json.dumps([config.dataset, config.dataset_options], sort_keys=True, default=str)


def _record_error(run_dir: Path, exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(text)
    except OSError:
        pass
    return f"{type(exc).__name__}: {exc}"


def _train_one(config: TrainConfig, run_dir: Path, data_cache: dict, data, progress: bool,
               max_epochs: int | None) -> str | None:
    """Train one run; return None or the error (the traceback goes to RUN_DIR/error.txt)."""
    try:
        (run_dir / "error.txt").unlink(missing_ok=True)
        if data is None:
            key = _data_key(config)
            if key not in data_cache:
                from experiments.runs.data import load_dataset

                data_cache.clear()  # one dataset in memory at a time (CIFAR-10 is 184 MB as uint8)
                data_cache[key] = load_dataset(config.dataset, show_progress=progress, **config.dataset_options)
            data = data_cache[key]
        train(config, run_dir, progress=progress, data=data, max_epochs_this_call=max_epochs)
        return None
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
        return _record_error(run_dir, exc)


# Per worker process: the dataset handed over once at start (or loaded by its first run), so a
# worker loads it once rather than once per run. Only ever set inside spawned workers.
_WORKER: dict = {}


def _worker_init(threads: int, data, parent_pid: int | None = None) -> None:
    import signal

    import torch

    # Ctrl-C reaches the whole process group; the sweep process alone handles it (it stops the
    # workers, _run_pool), so the workers print no tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    torch.set_num_threads(threads)
    _WORKER.update(data=data, cache={})


# Seconds between the watchdog's looks at the parent (the fallback where prctl is missing).
_PARENT_POLL_SECONDS = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the sweep process ``parent_pid`` dies, even by ``kill -9``.

    Otherwise an orphaned worker finishes its run and then waits forever for work (it holds a write
    end of its own task queue, so it never sees EOF). Linux: the kernel sends SIGKILL when the parent
    dies (prctl PR_SET_PDEATHSIG). Everywhere, and as a backstop (that signal follows the parent
    *thread* that spawned the worker): a daemon thread that exits once this process's parent is no
    longer ``parent_pid``. Killing is safe: checkpoints are written atomically, so the run resumes
    from its last finished epoch.
    """
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1  # <linux/prctl.h>
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no libc prctl (an odd libc): the watchdog below still ends the worker
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="sweep-parent-watchdog", daemon=True).start()


def _worker_train(config_dict: dict, run_dir: str, max_epochs: int | None) -> str | None:
    return _train_one(TrainConfig.from_dict(config_dict), Path(run_dir), _WORKER["cache"], _WORKER["data"],
                      False, max_epochs)


def _check_devices(runs: list[RunSpec]) -> None:
    import torch

    for dev in sorted({r.config.device for r in runs}):
        try:
            parsed = torch.device(dev)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device {dev!r} is not a torch device ({exc}); e.g. 'cpu', 'cuda', 'cuda:1'") from None
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {dev!r} requested but torch.cuda.is_available() is False (torch "
                             f"{torch.__version__}); pass --device cpu / device='cpu' to run on the CPU")


def run_sweep(spec: SweepSpec, store: Path | str = DEFAULT_STORE, *, device: str | None = None, workers: int = 1,
              progress: bool = True, data=None, max_epochs_this_call: int | None = None,
              only: Sequence[str] | None = None) -> pd.DataFrame:
    """Train every unfinished run of ``spec`` into ``store`` and return ``results_table(spec, store)``.

    Finished runs are skipped ("k of n runs already done" is printed when ``progress``),
    unfinished ones resume from their checkpoints. ``device`` overrides every run's device (the
    run ids do not change). ``workers`` > 1 trains that many runs at once in spawned processes,
    each with ``cpu_count // workers`` torch threads (on one GPU: keeps it busy with small models);
    when all their runs use one dataset it is loaded once here and shared with them. ``data`` is
    the dataset every run uses (skips loading; it must be what the runs' dataset options load). ``max_epochs_this_call`` is passed to
    ``train`` (each run stops after that many more epochs). ``only`` trains just those labels; the
    table and summaries still cover every stored run of the sweep. Writes
    ``STORE/sweeps/<name>/`` (module docstring) even when interrupted. A run that raises is recorded
    (``STORE/runs/<id>/error.txt``), the others go on, and ``SweepFailed`` is raised at the end.
    """
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec (load_sweep / SweepSpec.from_dict); got {type(spec).__name__}")
    workers = check_int("workers", workers, min_value=1)
    if max_epochs_this_call is not None:
        max_epochs_this_call = check_int("max_epochs_this_call", max_epochs_this_call, min_value=1)
    store = Path(store)
    runs = expand(spec)
    if device is not None:
        if not isinstance(device, str) or not device:
            raise TypeError(f"device must be a device string such as 'cpu' or 'cuda'; got {device!r}")
        runs = [dataclasses.replace(r, config=dataclasses.replace(r.config, device=device)) for r in runs]
    selected = runs
    if only is not None:
        only = [only] if isinstance(only, str) else list(only)
        unknown = [lab for lab in only if lab not in spec.labels]
        if unknown:
            raise ValueError(f"only: unknown label(s) {', '.join(map(repr, unknown))}; labels of sweep "
                             f"{spec.name!r}: {', '.join(spec.labels)}")
        selected = [r for r in runs if r.label in only]

    failures: dict[str, str] = {}
    try:
        failures = train_runs(selected, store, workers=workers, progress=progress, data=data,
                              max_epochs_this_call=max_epochs_this_call, desc=f"sweep {spec.name}")
    finally:
        table = results_table(spec, store)
        _write_outputs(spec, store, table, runs)
    if failures:
        raise SweepFailed(failures, table)
    return table


def train_runs(runs: Sequence[RunSpec], store: Path | str, *, workers: int = 1, progress: bool = True, data=None,
               max_epochs_this_call: int | None = None, desc: str = "train") -> dict[str, str]:
    """Train the unfinished ``runs`` (of one sweep or several) into ``store``; return ``{run_id: error}``.

    What ``run_sweep`` does for its runs, without the sweep's tables: finished runs are skipped,
    the others resume; ``workers`` > 1 trains them in one pool of spawned processes (so runs of
    several sweeps share it, as the audit's checks do). A run that raises is recorded in its
    directory's ``error.txt`` and the others go on.
    """
    workers = check_int("workers", workers, min_value=1)
    store = Path(store)
    todo, seen = [], set()
    for run in runs:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        rd = RunDir(_run_dir(store, run))
        stored = _check_stored_config(rd, run)
        if _progress_of(rd, run.config)[1]:
            continue
        if stored is not None and stored.to_dict() != run.config.to_dict():
            # Same computation, other execution fields (a CPU-started run resumed on cuda): record the
            # new ones so RunDir.init accepts the directory; environment.json records the device.
            tmp = rd.config_path.with_name("config.json.tmp")
            tmp.write_text(json.dumps(run.config.to_dict(), indent=2))
            os.replace(tmp, rd.config_path)
        todo.append(run)
    if progress:
        print(f"{len(seen) - len(todo)} of {len(seen)} runs already done")
    if todo:
        _check_devices(todo)

    failures: dict[str, str] = {}
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=desc, unit="run")
    try:
        if workers == 1 or len(todo) <= 1:
            cache: dict = {}
            for run in todo:
                if bar is not None:
                    bar.set_postfix_str(run.run_id)
                err = _train_one(run.config, _run_dir(store, run), cache, data, progress, max_epochs_this_call)
                if err is not None:
                    failures[run.run_id] = err
                if bar is not None:
                    bar.update(1)
        else:
            _run_pool(todo, store, workers, data, max_epochs_this_call, failures, bar)
    finally:
        if bar is not None:
            bar.close()
    return failures


def _run_pool(todo: list[RunSpec], store: Path, workers: int, data, max_epochs: int | None,
              failures: dict, bar) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    n = min(workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // n)
    keys = {_data_key(r.config) for r in todo}
    if data is None and len(keys) == 1:
        # Load once here and share it (torch tensors cross to spawned workers through shared memory):
        # otherwise every worker would decode the same archive, all racing to write one cache file.
        from experiments.runs.data import load_dataset

        config = todo[0].config
        data = load_dataset(config.dataset, show_progress=bar is not None, **config.dataset_options)
    # spawn, not fork: a forked child of a process that has used CUDA (or torch's thread pools) can hang.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                               initargs=(threads, data, os.getpid()))
    interrupted = False
    try:
        futures = {pool.submit(_worker_train, r.config.to_dict(), str(_run_dir(store, r)), max_epochs): r
                   for r in todo}
        for fut in as_completed(futures):
            run = futures[fut]
            try:
                err = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (BrokenProcessPool)
                err = _record_error(_run_dir(store, run), exc)
            if err is not None:
                failures[run.run_id] = err
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(run.run_id)
    except KeyboardInterrupt:
        # Stop the workers now rather than after their current runs (which may take hours): each
        # run resumes from its last checkpoint, written atomically, so nothing finished is lost.
        interrupted = True
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)


# --- command line ---------------------------------------------------------------------------------

def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="train models x seeds (x a grid) from a TOML/YAML sweep file into a results store",
        description="Train every run of a sweep file (skipping finished runs, resuming unfinished ones) and write "
                    "STORE/sweeps/<name>/results.csv, summary.csv and summary.md.")
    p.add_argument("config", metavar="CONFIG", help="sweep file (.toml/.yaml) or the name of a shipped one in "
                                                    "experiments/configs, e.g. digits_smoke")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help="results store (default: %(default)s)")
    p.add_argument("--device", default=None, help="run every run on this device, e.g. cuda (default: the file's)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once in separate processes (default: 1)")
    p.add_argument("--only", nargs="+", action="extend", default=None, metavar="LABEL",
                   help="train only these model labels (the summary still covers the whole sweep)")
    p.add_argument("--max-epochs-this-call", type=int, default=None, metavar="K",
                   help="stop each run after K more epochs (resume later by re-running)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    import sys

    from experiments.report.tables import markdown_table

    spec = load_sweep(args.config)
    if args.dry_run:
        status = run_status(spec, args.store)
        if args.only:
            unknown = [lab for lab in args.only if lab not in spec.labels]
            if unknown:
                raise ValueError(f"--only: unknown label(s) {', '.join(map(repr, unknown))}; labels: "
                                 f"{', '.join(spec.labels)}")
            status = status[status["label"].isin(args.only)]
        print(markdown_table(status))
        print(f"{int((status['status'] == 'done').sum())} of {len(status)} runs already done; "
              f"store {args.store}")
        return 0
    if args.no_progress:
        status = run_status(spec, args.store)
        if args.only:
            status = status[status["label"].isin(args.only)]
        print(f"{int((status['status'] == 'done').sum())} of {len(status)} runs already done")
    code = 0
    try:
        table = run_sweep(spec, args.store, device=args.device, workers=args.workers,
                          progress=not args.no_progress, max_epochs_this_call=args.max_epochs_this_call,
                          only=args.only)
    except SweepFailed as exc:
        print(f"blockaudit sweep: error: {exc}", file=sys.stderr)
        table, code = exc.results, 1
    out = args.store / "sweeps" / spec.name
    print((out / "summary.md").read_text())
    print(f"wrote {out / 'results.csv'} ({len(table)} rows), {out / 'summary.csv'}, {out / 'summary.md'}")
    return code
