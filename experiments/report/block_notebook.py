"""The executed notebook of a block audit: ``block_audit.ipynb`` (+ ``.html``) beside its verdict table.

``build_block_notebook(folder, store=...)`` executes ``notebooks/block_audit.py`` (jupytext percent
format) in a fresh kernel with ``folder`` as working directory: it reads the audit written there
(``experiments.audit.block.BlockAuditResult.read``) and the runs of the store, and draws block and
baseline on shared axes (training curves, ratio checks, per-seed pairs, the loss along a shared
filter-normalised direction). ``audit_block(..., out=DIR)`` calls it; to rebuild by hand::

    python -m experiments.report.block_notebook reports/blocks/SEBlock --store runs
"""
from __future__ import annotations

import argparse
from pathlib import Path

from experiments.report.notebook import _inject_parameters, _relative, execute_notebook, write_notebook

__all__ = ["BLOCK_NOTEBOOK_SOURCE", "build_block_notebook"]

BLOCK_NOTEBOOK_SOURCE = Path(__file__).resolve().parent / "notebooks" / "block_audit.py"


def build_block_notebook(folder: Path | str, *, store: Path | str = "runs", html: bool = True,
                         timeout: int = 600, block_root: Path | str | None = None) -> list[Path]:
    """Execute the block-audit notebook on the audit in ``folder``; write it there (module docstring).

    ``block_root``: where a relative ``FILE.py`` block reference is found (default: the working directory).
    """
    import jupytext

    folder = Path(folder)
    if not (folder / "block_audit.json").is_file():
        raise FileNotFoundError(f"no block audit in {folder} (block_audit.json is missing); run "
                                "`blockaudit audit-block ... --out DIR` first")
    nb = jupytext.read(BLOCK_NOTEBOOK_SOURCE, fmt="py:percent")
    _inject_parameters(nb, {"AUDIT_DIR": ".", "STORE": _relative(Path(store), folder),
                            "BLOCK_ROOT": _relative(Path(block_root) if block_root else Path.cwd(), folder)})
    execute_notebook(nb, folder, f"the block-audit notebook ({BLOCK_NOTEBOOK_SOURCE.name} in {folder})", timeout)
    return write_notebook(nb, folder / "block_audit.ipynb", f"blockaudit block audit: {folder.name}",
                          f"from `block_audit.json` here and the store `{_relative(Path(store), folder)}`", html)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the audit's --out folder (holds block_audit.json)")
    p.add_argument("--store", type=Path, default=Path("runs"), help="results store (default: %(default)s)")
    p.add_argument("--no-html", action="store_true", help="write the .ipynb only")
    args = p.parse_args(argv)
    for path in build_block_notebook(args.folder, store=args.store, html=not args.no_html):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
