"""Building the report notebooks: one executed notebook per paper (``.ipynb`` with outputs, plus HTML).

A paper's notebook source is ``experiments/report/notebooks/<paper>.py``: a ``NOTEBOOK`` spec on the
one template of ``experiments.report.template``, rendered into jupytext's "percent" format (or, from
``--sources``, a jupytext percent-format notebook as it is). ``build_notebook`` reads a source,
injects a parameters cell (``PAPER``, ``STORE``, ``AUDIT_JSON``, ``REPORTS`` as Python literals,
after the cell tagged ``parameters``), executes it in a fresh ``ipykernel`` of the current
interpreter with the output folder as working directory, and writes ``<paper>.ipynb`` (outputs,
PNG figures, compacted to a palette) and ``<paper>.html`` (figures embedded). A cell that raises
makes the build fail with that cell's error; nothing is written then.

The Jupyter stack (jupytext, nbformat, nbclient, nbconvert) and Pillow are imported where they are
used: ``experiments.report`` is imported by the audit and inside every notebook kernel, neither of
which needs them.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import tempfile
from html import escape
from pathlib import Path

from tqdm.auto import tqdm

from analysis.validation import check_int
from experiments.claims import PAPERS
from experiments.report.store_index import paper_id
from experiments.report.template import read_source
from experiments.report.verdicts import load_audit
from experiments.runs.provenance import provenance, provenance_line

__all__ = ["NOTEBOOK_SOURCES", "NotebookExecutionError", "notebook_source", "notebook_text", "build_notebook",
           "execute_notebook", "write_notebook", "build_reports"]

NOTEBOOK_SOURCES = Path(__file__).resolve().parent / "notebooks"


class NotebookExecutionError(RuntimeError):
    """A cell of a report notebook raised; the message names the paper, the cell and the error."""


def notebook_source(paper: str, sources: Path | str | None = None) -> Path:
    """The source of ``paper``'s notebook (``<sources>/<paper lower-case>.py``; ``read_source`` reads it)."""
    paper = paper_id(paper)
    folder = Path(sources) if sources is not None else NOTEBOOK_SOURCES
    path = folder / f"{paper.lower()}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no notebook source for {paper} at {path}; expected one .py file per paper "
                                f"({', '.join(p.lower() + '.py' for p in PAPERS)}) in {folder}, each a NOTEBOOK "
                                "spec on the report template (experiments.report.template) or a jupytext "
                                "percent-format notebook")
    return path


def notebook_text(paper: str, sources: Path | str | None = None) -> str:
    """``paper``'s notebook source as jupytext percent-format text: what ``build_notebook`` executes
    (write it to ``DIR/<paper>.py`` and edit it to build from ``--sources DIR``)."""
    paper = paper_id(paper)
    return read_source(notebook_source(paper, sources), paper)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _relative(path: Path, start: Path) -> str:
    # Inside the working directory (the repository, usually) paths are written relative to the
    # notebook's folder, the kernel's working directory, so a committed notebook names no machine's
    # absolute paths and re-runs where it lies; anything else stays absolute rather than "../../..".
    path, start, cwd = Path(path).resolve(), Path(start).resolve(), Path.cwd().resolve()
    if path.is_relative_to(cwd) and start.is_relative_to(cwd):
        return os.path.relpath(path, start)
    return str(path)


def _inject_parameters(nb, params: dict) -> None:
    import nbformat

    source = "# Parameters injected by `blockaudit report`\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)


def _kernel_spec_dir(tmp: Path) -> Path:
    # A kernelspec of our own naming this interpreter: a "python3" spec installed elsewhere on the
    # machine may point at another Python without this package.
    kdir = tmp / "kernels" / "blockaudit-python3"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return tmp / "kernels"


def _execution_error(nb, exc, what: str) -> NotebookExecutionError:
    where = ""
    for i, cell in enumerate(nb.cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
            where = f" in cell {i} ({first.strip()[:80]!r})"
            break
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    tb = _ANSI.sub("", getattr(exc, "traceback", "") or str(exc)).strip()
    tail = "\n".join(tb.splitlines()[-15:])
    return NotebookExecutionError(f"{what} failed{where}: {ename}: {evalue}\n{tail}")


def _compact_png(data: str) -> str:
    """A base64 PNG quantised to a 256-colour palette (on white), if that is smaller.

    Filled contours antialiased in RGBA cost ~140 KB a figure; the palette version looks the same
    at ~1/4 of the size, which keeps a notebook with a dozen figures well under 1 MB.
    """
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it the figures stay as they are
        return data
    raw = base64.b64decode(data)
    image = Image.open(io.BytesIO(raw)).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    small = Image.alpha_composite(white, image).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii") if buf.tell() < len(raw) else data


def _compact_outputs(nb) -> None:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if isinstance(png, str):
                output["data"]["image/png"] = _compact_png(png.replace("\n", ""))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_notebook(paper: str, *, audit_json: Path | str, store: Path | str, reports: Path | str,
                   out: Path | str, source: Path | str | None = None, html: bool = True,
                   timeout: int = 600) -> list[Path]:
    """Execute ``paper``'s notebook source on the given inputs; write ``<out>/<paper>.ipynb`` (+ ``.html``).

    ``source`` defaults to ``experiments/report/notebooks/<paper>.py`` (``notebook_source``). Raises
    ``NotebookExecutionError`` (the failing cell and its traceback) if a cell raises; then nothing is written.
    """
    import jupytext

    paper = paper_id(paper)
    source = Path(source) if source is not None else notebook_source(paper)
    if not source.is_file():
        raise FileNotFoundError(f"no notebook source at {source}")
    timeout = check_int("timeout", timeout, min_value=1)
    load_audit(audit_json)  # fail here, with the path and the fix, not inside the kernel
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    nb = jupytext.reads(read_source(source, paper), fmt="py:percent")
    _inject_parameters(nb, {"PAPER": paper, "STORE": _relative(Path(store), out),
                            "AUDIT_JSON": _relative(Path(audit_json), out), "REPORTS": _relative(Path(reports), out)})
    execute_notebook(nb, out, f"the {paper} notebook ({source})", timeout)
    note = f"from `{_relative(Path(audit_json), out)}` and the store `{_relative(Path(store), out)}`"
    return write_notebook(nb, out / f"{paper.lower()}.ipynb", f"blockaudit report: {paper}", note, html)


def execute_notebook(nb, out: Path, what: str, timeout: int = 600) -> None:
    """Run every cell of ``nb`` in a fresh kernel of this interpreter, ``out`` as working directory.

    Fixes the cell ids (a rebuild is byte-identical); raises ``NotebookExecutionError`` naming ``what``,
    the failing cell and its traceback, or the kernel's last output if it died.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb.metadata.pop("jupytext", None)  # its version and paths would churn every diff
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # nbformat draws random ids; fixed ones keep a rebuild byte-identical
    repo_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    # The kernel imports this very checkout even where the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join([repo_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiets ipykernel's debugger warning on stderr
    env.pop("MPLBACKEND", None)  # the notebook chooses the inline backend itself
    with tempfile.TemporaryDirectory(prefix="blockaudit-kernel-") as tmp:
        ksm = KernelSpecManager(kernel_dirs=[str(_kernel_spec_dir(Path(tmp)))])
        km = AsyncKernelManager(kernel_name="blockaudit-python3", kernel_spec_manager=ksm)
        client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False, allow_errors=False,
                                resources={"metadata": {"path": str(out.resolve())}})
        log_path = Path(tmp) / "kernel.log"
        # The kernel's own console output (transport warnings, shutdown notices) is kept out of the
        # user's terminal; it is shown only if the kernel dies.
        with open(log_path, "w") as log:
            try:
                client.execute(env=env, cwd=str(out.resolve()), stdout=log, stderr=log)
            except (CellExecutionError, CellTimeoutError) as exc:
                raise _execution_error(nb, exc, what) from None
            except DeadKernelError as exc:
                log.flush()
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                raise NotebookExecutionError(f"the kernel running {what} died: {exc}\n"
                                             f"kernel output:\n{tail}") from None


def write_notebook(nb, ipynb: Path, title: str, built_from: str, html: bool = True) -> list[Path]:
    """Compact the figures, stamp what built it (command, commit, machine), write ``ipynb`` (+ ``.html``)."""
    import nbformat

    _compact_outputs(nb)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    # What built this notebook: the command, commit and machine (the cells show the audit's own).
    prov = provenance("cpu")
    nb.metadata["blockaudit"] = {"built_by": prov}
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        f"*Built by `{prov['command']}` at {provenance_line(prov)}, {built_from}.*", id="cell-provenance"))
    _write_atomic(ipynb, nbformat.writes(nb) + "\n")
    files = [ipynb]
    if html:
        from nbconvert import HTMLExporter

        # The "basic" template is the notebook's cells alone; the "lab" page adds ~280 kB of JupyterLab
        # styles and scripts to every file, which the committed reports cannot afford (the tree that
        # travels to the GPU machine is capped). A few lines of CSS keep tables and code readable.
        body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
        path = ipynb.with_suffix(".html")
        _write_atomic(path, _html_page(title, body))
        files.append(path)
    return files


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
pre, code { font-family: ui-monospace, monospace; font-size: 0.9em; }
div.input pre, .highlight pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; }
.prompt { display: none; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; vertical-align: top; }
th { background: #f0f0f0; }
img { max-width: 100%; }
"""


def _html_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
            f"<title>{escape(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def build_reports(papers=None, *, audit_json="reports/audit.json", store="runs", reports="reports",
                  out="reports/notebooks", sources=None, html: bool = True, timeout: int = 600,
                  progress: bool = True) -> list[Path]:
    """``build_notebook`` for each of ``papers`` (default: all), with a progress bar; returns the files."""
    papers = list(PAPERS) if not papers else [paper_id(p) for p in papers]
    load_audit(audit_json)
    sources_of = {p: notebook_source(p, sources) for p in papers}
    # Imported here: tqdm.auto imported where a notebook kernel imports this module would warn
    # into the notebook's output.

    files = []
    bar = tqdm(papers, desc="report", unit="notebook", disable=not progress)
    for paper in bar:
        bar.set_postfix_str(paper)
        files += build_notebook(paper, audit_json=audit_json, store=store, reports=reports, out=out,
                                source=sources_of[paper], html=html, timeout=timeout)
    return files
