"""Numeric reproductions of the papers' tables (``blockaudit reproduce NAME``).

Each reproduction is a module that defines ``REPRODUCTION = Reproduction(...)``:

- ``add_arguments(parser)`` adds its command-line options;
- ``config_from_args(args)`` turns them into its typed config dataclass;
- ``quick_config()`` is the reduced config that ``blockaudit audit --profile quick`` runs, and
  ``full_config()`` the paper-scale one that ``--profile full`` runs;
- ``run(config, out_dir, progress)`` computes the table, writes CSV + markdown under ``out_dir``
  and returns a ``ReproductionResult`` with one computed ``Verdict`` per claim id it settles.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from experiments.claims import Verdict
from experiments.runs.provenance import provenance

# name -> module; modules are imported only when asked for, so `blockaudit --help` stays fast.
_MODULES = {
    "nd-table2": "experiments.reproduce.nd_table2",
    "oai-table2": "experiments.reproduce.oai_table2",
}


@dataclass
class ReproductionResult:
    name: str
    table: pd.DataFrame
    verdicts: list[Verdict]
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Reproduction:
    name: str
    claim_ids: tuple[str, ...]
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    config_from_args: Callable[[argparse.Namespace], Any]
    quick_config: Callable[[], Any]
    run: Callable[..., ReproductionResult]
    full_config: Callable[[], Any] | None = None

    def execute(self, config: Any, out_dir: Path | str, progress: bool = True) -> ReproductionResult:
        """``run``, then ``OUT_DIR/provenance.json``: the config, commit, packages and machine behind the table."""
        result = self.run(config, Path(out_dir), progress=progress)
        cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config)
        path = Path(out_dir) / "provenance.json"
        path.write_text(json.dumps(provenance("cpu", reproduction=self.name, config=cfg), indent=2, default=str) + "\n")
        result.files.append(path)
        return result


def list_reproductions() -> list[str]:
    return list(_MODULES)


def get_reproduction(name: str) -> Reproduction:
    if name not in _MODULES:
        raise KeyError(f"unknown reproduction {name!r}; valid names: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).REPRODUCTION
