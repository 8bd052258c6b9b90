"""Sweep files: the spec, its validation, and the run ids it expands to.

A sweep is multi-seed training over models and a config grid, filling a results store.

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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from analysis.models import list_models, model_info
from experiments.runs.provenance import numeric_environment
from experiments.runs.store import TrainConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

__all__ = [
    "SweepSpec", "ModelSpec", "RunSpec", "SweepConfigError", "load_sweep", "expand", "run_id_for",
    "canonical_config", "grid_column", "shipped_configs", "CONFIG_DIR", "CPU_THREADS", "EXECUTION_FIELDS",
    "LOADING_OPTIONS", "LOCATION_OPTIONS", "DEFAULT_STORE", "ACCURACY_METRICS",
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
# ``claim`` / ``paper``: what the runs are trained for (the audit sets them); recorded with each run
# (its ``claim.json``) and in the results table, never in the run id, so two claims share one run.
SWEEP_KEYS = ("name", "description", "seeds", "base", "models", "grid", "claim", "paper")
MODEL_KEYS = ("label", "name", "options", "seeds", "base")
# Set by the sweep's own keys, so a base/grid entry for them would be ambiguous.
_SET_ELSEWHERE = {"model": "a [[models]] entry's name", "model_options": "a [[models]] entry's options",
                  "seed": "seeds"}
_OPTION_DICTS = ("model_options", "dataset_options")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SweepConfigError(ValueError):
    """A sweep file or spec is malformed; the message names the file and the key."""




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
    claim: str = ""
    paper: str = ""

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
        for key in ("description", "claim", "paper"):
            if getattr(self, key):
                out[key] = getattr(self, key)
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
    claim: str = ""  # the claim id and paper the sweep trains it for ("" when none): not in the run id
    paper: str = ""

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
    text = {}
    for key in ("description", "claim", "paper"):
        text[key] = d.get(key, "")
        if not isinstance(text[key], str):
            raise _fail(where, key, f"must be a string; got {text[key]!r}")
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
    spec = SweepSpec(name=name, base=base, models=models, seeds=seeds, grid=grid, **text)
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
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SweepConfigError(f"{path}: invalid TOML: {exc}") from None
    else:
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
                run = RunSpec(run_id_for(m.label, config), m.label, seed, config, dict(point), spec.claim, spec.paper)
                if run.run_id in seen:
                    raise SweepConfigError(f"{where}: runs {seen[run.run_id]} and {point or seed} of {m.label!r} "
                                           f"have the same config (id {run.run_id})")
                seen[run.run_id] = point or seed
                runs.append(run)
    return runs


def expand(spec: SweepSpec) -> list[RunSpec]:
    """One ``RunSpec`` per model x grid point x seed (that nesting order)."""
    return _expand(spec, f"sweep {spec.name!r}")
