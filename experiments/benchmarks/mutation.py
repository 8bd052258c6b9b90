"""Benchmark: mutation testing of the theory modules (analysis/theory) against theory_checks.

How many of the small faults that mutmut plants in ``analysis/theory/`` (nrl, nd, oai, im,
activations, the rn package) the theory checks detect. Goal: at least 90% of the non-equivalent
mutants killed, and every claim id with at least one killed mutant. A benchmark, not a CI step: the
whole run takes tens of minutes on the 2-core machine.

    pip install -e '.[mutation]'      # mutmut 3.x, the optional dependency
    python -m experiments.benchmarks.mutation [--modules nrl nd ...] [--out reports/benchmarks/mutation]
        [--workers 2] [--max-minutes M] [--resume] [--claim-tries 4] [--all-mutants]

Steps: mutmut (configured in ``[tool.mutmut]`` of pyproject.toml) copies ``analysis/`` to
``mutants/`` and writes every mutant of ``analysis/theory/`` into it; this script sets aside the
mutants that only change an error message or input validation (below), runs ``mutmut run`` on the others, then, for each
claim that no first failure credited, runs that claim's tests alone on a few killed mutants they
cover, and writes ``mutation.json`` and ``mutation.md`` to ``--out``.

- Test selection: mutmut runs, for each mutant, only the theory checks that call the mutated
  function (directly or not; its coverage run, "stats"), with ``-x``: the run stops at the first
  failing test. ``experiments.benchmarks.mutation_plugin`` records that test and its claim ids, and
  turns hypothesis' shrinking off (the examples are those of the ``ci`` profile).
- Out of scope (not run unless ``--all-mutants``): mutants that change only what an error says:
  anything inside a ``raise`` statement or a ``warnings.warn`` call, and the label string (the
  ``name`` / ``assumption`` argument) given to a validation helper (``analysis.validation``'s
  ``check_real("alpha", ...)`` and the like, and theory helpers that only pass ``name`` on to them);
  and mutants that change only which inputs are rejected: a bound, shape or choice list given to
  such a helper (``check_real("step", step, min_value=0.0)`` -> ``min_value=None``), and the
  condition of a guard whose body only raises. A theory check feeds valid inputs, on which these
  mutants compute the same; the rejections are tested by ``tests/`` (their error messages, by
  text). The report counts them, by reason.
- Score: killed / (killed + survived). Timeouts count as killed; survivors include the mutants that
  no theory check reaches ("no tests"); survivors listed in the equivalents file
  (``experiments/benchmarks/mutation_equivalents.toml``: stable key -> one-line reason) are left
  out as equivalent. A mutant's stable key ``module:function:hash`` hashes its changed lines only,
  so it stays valid while the rest of the function changes.
- ``--max-minutes`` stops mutmut at that time (the results so far are kept in ``mutants/``);
  ``--resume`` then carries on with the mutants not yet checked. The report counts the unchecked.
  ``--resume --retest-survivors`` tests the survivors again after the theory checks changed (a killed
  mutant stays killed: a test that was added cannot un-kill it).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

from experiments.benchmarks import mutation_plugin as plugin
from experiments.benchmarks.mutation_report import GOAL, NOT_RUN, build_report, tests_by_claim, write_markdown
from experiments.runs.provenance import provenance

REPO = Path(__file__).resolve().parents[2]
THEORY = Path("analysis/theory")
MODULES = ("nrl", "nd", "oai", "im", "activations", "rn")
DEFAULT_OUT = Path("reports/benchmarks/mutation")
EQUIVALENTS = Path("experiments/benchmarks/mutation_equivalents.toml")
PLUGIN = plugin.__name__
INSTALL = "pip install -e '.[mutation]'   (or: pip install 'mutmut>=3.8,<4')"
# mutmut's statuses (mutmut.stats.status_by_exit_code), grouped for the score


def _say(msg: str) -> None:
    print(msg, flush=True)


def _mutmut() -> SimpleNamespace:
    """mutmut's modules, or a clear error when the optional dependency is missing."""
    try:
        import libcst
        from mutmut.mutation import diff_apply
        from mutmut.mutation.data import SourceFileMutationData
        from mutmut.stats import status_by_exit_code
    except ImportError as exc:
        raise SystemExit(f"mutation benchmark: mutmut is not installed ({exc}). Install it with\n    {INSTALL}")
    version = md.version("mutmut")
    if not version.startswith("3."):
        raise SystemExit(f"mutation benchmark: needs mutmut 3.x, found {version}. {INSTALL}")
    exe = Path(sys.executable).with_name("mutmut")
    exe = str(exe) if exe.exists() else shutil.which("mutmut")
    if not exe:
        raise SystemExit(f"mutation benchmark: the `mutmut` command is not on PATH. {INSTALL}")
    return SimpleNamespace(version=version, exe=exe, diff_apply=diff_apply, Data=SourceFileMutationData,
                           status_by_exit_code=status_by_exit_code, cst=libcst)


# --------------------------------------------------------------------------------------------
# mutants: generation, names, diffs, scope
# --------------------------------------------------------------------------------------------
def generate_mutants(workers: int) -> None:
    """Copy analysis/ (and ``also_copy``) to mutants/ and write the mutants: mutmut's first step."""
    code = ("import mutmut.__main__ as m; m.copy_src_dir(); m.copy_also_copy_files(); "
            f"m.create_mutants({workers})")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"mutation benchmark: mutmut could not write the mutants:\n{res.stderr[-3000:]}")


def theory_files() -> list[Path]:
    return sorted(p.relative_to(REPO) for p in (REPO / THEORY).rglob("*.py"))


def function_of(mutant: str) -> str:
    """``analysis.theory.nrl.x_newton_block__mutmut_3`` -> ``newton_block``; a method: ``Class.method``."""
    mangled = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    if mangled.startswith("x_"):
        return mangled[2:]
    parts = mangled.split("ǁ")  # mutmut's class separator: xǁClassǁmethod
    return f"{parts[1]}.{parts[2]}" if len(parts) == 3 else mangled


def _callee(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def label_functions() -> set[str]:
    """Functions whose first parameter ``name`` only labels error messages.

    Those of ``analysis.validation`` whose first parameter is ``name``, and the theory modules'
    helpers whose first parameter is ``name`` and which use it only in f-strings and as the ``name``
    of such a function (``nrl._square``; not ``activations.activation``, whose ``name`` picks the
    activation).
    """
    def first_is_name(fn) -> bool:
        return isinstance(fn, ast.FunctionDef) and bool(fn.args.args) and fn.args.args[0].arg == "name"

    labels = {fn.name for fn in ast.walk(ast.parse((REPO / "analysis/validation.py").read_text())) if first_is_name(fn)}
    helpers = [fn for path in theory_files() for fn in ast.walk(ast.parse((REPO / path).read_text()))
               if first_is_name(fn)]

    def only_labels(fn) -> bool:
        ok = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.JoinedStr):
                ok |= {id(n) for n in ast.walk(node)}
            elif isinstance(node, ast.Call) and _callee(node) in labels and node.args:
                ok.add(id(node.args[0]))
        return all(id(n) in ok for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == "name")

    while True:
        new = {fn.name for fn in helpers if fn.name not in labels and only_labels(fn)}
        if not new:
            return labels
        labels |= new


def _first_difference(a, b, ancestors=()):
    """The first differing pair of nodes of two ASTs, with the ancestors of ``a``'s node, or None."""
    if type(a) is not type(b):
        return a, b, ancestors
    if not isinstance(a, ast.AST):
        return None if a == b else (a, b, ancestors)
    for field in a._fields:
        va, vb = getattr(a, field, None), getattr(b, field, None)
        if isinstance(va, list) and isinstance(vb, list):
            if len(va) != len(vb):
                return a, b, ancestors
            for x, y in zip(va, vb):
                found = _first_difference(x, y, (*ancestors, a))
                if found:
                    return found
        elif isinstance(va, ast.AST) or isinstance(vb, ast.AST):
            found = _first_difference(va, vb, (*ancestors, a))
            if found:
                return found
        elif va != vb and field not in ("ctx", "type_comment", "kind"):
            return a, b, ancestors
    return None


def out_of_scope(orig: str, mutated: str, labels: set[str]) -> str | None:
    """Why the mutant only changes an error message or input validation (out of the benchmark's scope), else None."""
    try:
        found = _first_difference(ast.parse(orig), ast.parse(mutated))
    except SyntaxError:
        return None
    if not found:
        return None
    node, new, ancestors = found
    chain = (*ancestors, node)
    if any(isinstance(n, ast.Raise) for n in chain):
        return "inside a raise statement (the error's message)"
    if any(isinstance(n, ast.Call) and _callee(n) == "warn" for n in chain):
        return "inside warnings.warn (the warning's message)"
    parent = ancestors[-1] if ancestors else None
    text = (ast.Constant, ast.JoinedStr)
    if (isinstance(parent, ast.keyword) and parent.arg in ("name", "assumption") and len(ancestors) >= 2
            and isinstance(ancestors[-2], ast.Call) and _callee(ancestors[-2]) in labels
            and isinstance(new, text)):
        return f"the {parent.arg}= label of {_callee(ancestors[-2])}() (an error message's text)"
    if (isinstance(parent, ast.Call) and parent.args and parent.args[0] is node and _callee(parent) in labels
            and isinstance(new, text)):  # a literal label, or the caller's own `name`, replaced by text or None
        return f"the name label of {_callee(parent)}() (an error message's text)"
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and isinstance(new, text):
        # ("W_1", W_1) in `for name, W in (...)`: the label a loop hands to the validation helpers
        for i, n in enumerate(chain[:-1]):
            loop = n if isinstance(n, (ast.For, ast.comprehension)) else None
            if (loop is not None and isinstance(loop.target, ast.Tuple) and loop.target.elts
                    and isinstance(loop.target.elts[0], ast.Name) and loop.target.elts[0].id == "name"
                    and chain[i + 1] is loop.iter):
                return "a name label a loop hands to the validation helpers (an error message's text)"
    return _input_validation(chain, new, labels)


def _input_validation(chain, new, labels: set[str]) -> str | None:
    """Why the mutant only changes which inputs are rejected (input validation), else None.

    Two forms: a bound, shape or choice list given to a validation helper (an argument after the value
    it checks, or an argument added or dropped, the helper and the checked value unchanged); and the
    condition of a guard whose body only raises. Valid inputs, which are all a theory check feeds,
    pass either way; the rejections are what tests/ checks (test_validation.py and each module's
    error tests).
    """
    node = chain[-1]
    for i, n in enumerate(chain):
        if isinstance(n, ast.If) and not n.orelse and all(isinstance(b, ast.Raise) for b in n.body) \
                and i + 1 < len(chain) and chain[i + 1] is n.test:
            return "the condition of a guard that only raises (input validation)"
        if not (isinstance(n, ast.Call) and _callee(n) in labels):
            continue
        if i + 1 < len(chain):
            inner = chain[i + 1]
            if isinstance(inner, ast.keyword) or any(inner is a for a in n.args[2:]):
                return f"a bound, shape or choice given to {_callee(n)}() (input validation)"
        elif n is node and isinstance(new, ast.Call) and ast.dump(new.func) == ast.dump(n.func) \
                and [ast.dump(a) for a in new.args[:2]] == [ast.dump(a) for a in n.args[:2]]:
            return f"an argument added to or dropped from {_callee(n)}() (input validation)"
    return None


def stable_key(mutant: str, changed: list[str]) -> str:
    """``module:function:hash`` of the changed lines (stripped): stable under edits elsewhere."""
    body = "\n".join(line[0] + line[1:].strip() for line in changed)
    return f"{mutant.rpartition('.')[0]}:{function_of(mutant)}:{hashlib.sha1(body.encode()).hexdigest()[:10]}"


def describe_mutants(names_by_path: dict[Path, list[str]], mm: SimpleNamespace) -> dict[str, dict]:
    """For each mutant: module, function, changed lines, stable key, why it is out of scope (or None)."""
    labels = label_functions()
    info = {}
    for path, names in names_by_path.items():
        for name in names:
            funcs = mm.diff_apply.read_functions_from_index(name, path)
            if funcs is None:  # no line index: parse the mutated file
                module = mm.diff_apply.read_mutants_module(path)
                funcs = (mm.diff_apply.read_original_function(module, name),
                         mm.diff_apply.read_mutant_function(module, name))
            orig, mutated = (mm.cst.Module([f]).code.strip() for f in funcs)
            changed = [line for line in difflib.unified_diff(orig.split("\n"), mutated.split("\n"), lineterm="", n=0)
                       if line[:1] in "+-" and not line.startswith(("+++", "---"))]
            info[name] = {"module": name.rpartition(".")[0], "function": function_of(name), "diff": changed,
                          "key": stable_key(name, changed), "out_of_scope": out_of_scope(orig, mutated, labels)}
    return info


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
def _env(kills: Path) -> dict:
    env = dict(os.environ)
    # one BLAS/OpenMP thread per mutant: the workers run mutants side by side
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    env["PYTEST_ADDOPTS"] = f"{env.get('PYTEST_ADDOPTS', '')} -p {PLUGIN}".strip()
    env[plugin.KILLS_ENV] = str(kills)
    env.pop("MUTANT_UNDER_TEST", None)
    env.pop(plugin.CLAIMS_ENV, None)
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    return env


def statuses_of(names_by_path: dict[Path, list[str]], mm: SimpleNamespace) -> dict[str, str]:
    """mutmut's status of each mutant (mutants/*.meta, read from the repo root)."""
    out = {}
    for path, names in names_by_path.items():
        data = mm.Data(path=path)
        data.load()
        for name in names:
            out[name] = mm.status_by_exit_code[data.exit_code_by_key.get(name)]
    return out


def _stop(proc: subprocess.Popen) -> None:
    """Stop mutmut's process group: SIGINT, SIGTERM, SIGKILL (each finished mutant is already saved;
    an interrupted one counts as unchecked)."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_mutmut(names: list[str], workers: int, max_minutes: float | None, kills: Path, mm, progress) -> bool:
    """``mutmut run`` on ``names``; True when it was stopped at ``max_minutes``."""
    log = REPO / "mutants" / "mutmut-run.log"
    _say(f"mutmut run: {len(names)} mutants, {workers} workers (its output: {log.relative_to(REPO)})")
    t0 = time.perf_counter()
    stopped, last = False, 0.0
    with open(log, "w") as out:
        # its own process group: stopping it stops its fork server and the mutants' test runs too
        proc = subprocess.Popen([mm.exe, "run", "--max-children", str(workers), *names], cwd=REPO,
                                env=_env(kills), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            time.sleep(2)
            elapsed = time.perf_counter() - t0
            if max_minutes is not None and elapsed > max_minutes * 60 and not stopped:
                _say(f"  --max-minutes {max_minutes:g} reached: stopping mutmut (results so far are kept; "
                     "--resume carries on)")
                _stop(proc)
                stopped = True
            if elapsed - last >= 60:
                last = elapsed
                progress(elapsed)
    if proc.returncode != 0 and not stopped:
        tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-30:]
        raise SystemExit(f"mutation benchmark: mutmut run failed (exit {proc.returncode}); the end of {log}:\n"
                         + "\n".join(tail))
    return stopped


def collect_claims(path: Path) -> dict[str, dict]:
    """``{test node id: {"claims": [...], "role": ...}}`` of theory_checks (``pytest --collect-only``)."""
    env = dict(os.environ, **{plugin.CLAIMS_ENV: str(path)})
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-p", PLUGIN, "theory_checks"], cwd=REPO, env=env, capture_output=True, text=True,
                         check=False)
    if res.returncode != 0 or not path.exists():
        raise SystemExit("mutation benchmark: collecting theory_checks failed:\n"
                         f"{res.stdout[-3000:]}{res.stderr[-3000:]}")
    return json.loads(path.read_text())


def read_kills(path: Path) -> dict[str, list[dict]]:
    kills = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                kills[rec["mutant"]].append(rec)
    return kills


def confirm_claims(claims_map, covering, statuses, kills, info, tries: int) -> dict[str, dict]:
    """For each claim that no first failure credits: its tests alone, on a few killed mutants they cover."""
    credited = {c for recs in kills.values() for r in recs for c in r["claims"]}
    tests_of = tests_by_claim(claims_map)
    plan = {}
    for claim in sorted(set(tests_of) - credited):
        paper = claim.split("-")[0].lower()  # "ND-P1" -> nd: that paper's module first
        cands = [m for m, s in statuses.items() if s == "killed" and covering.get(m, set()) & tests_of[claim]]
        cands.sort(key=lambda m: (f".{paper}." not in f"{info[m]['module']}.", len(covering[m]), m))
        if cands:  # a claim whose tests reach no killed mutant stays without one
            plan[claim] = [[m, sorted(covering[m] & tests_of[claim])] for m in cands[:tries]]
    if not plan:
        return {}
    _say(f"claim pass: {len(plan)} claims that no first failure credits but whose tests call killed mutants")
    work = REPO / "mutants"
    (work / "claim-tries.json").write_text(json.dumps(plan, indent=1))
    env = _env(work / "claim-kills.jsonl")
    res = subprocess.run([sys.executable, "-c", f"from {PLUGIN} import confirm_main; confirm_main()",
                          "claim-tries.json", "claim-answer.json"], cwd=work, env=env, check=False)
    if res.returncode != 0:
        _say(f"  the claim pass failed (exit {res.returncode}); its claims are reported unconfirmed")
        return {}
    return {c: a for c, a in json.loads((work / "claim-answer.json").read_text()).items() if a.get("mutant")}


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def load_equivalents(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"mutation benchmark: {path} is not valid TOML: {exc}")
    out = {}
    for i, entry in enumerate(data.get("equivalent", [])):
        if not isinstance(entry, dict) or not entry.get("key") or not entry.get("reason"):
            raise SystemExit(f"mutation benchmark: {path}: [[equivalent]] entry {i + 1} needs a key and a reason")
        out[entry["key"]] = str(entry["reason"])
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--modules", nargs="+", default=list(MODULES), metavar="MODULE",
                   help=f"theory modules to mutate (default: all of {', '.join(MODULES)}; a submodule such as "
                        "rn.risk works too)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder for mutation.json and mutation.md (default {DEFAULT_OUT})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mutants tested at once (default: cores)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop mutmut after this long (a partial report)")
    p.add_argument("--resume", action="store_true", help="keep mutants/ and its results; test only unchecked mutants")
    p.add_argument("--retest-survivors", action="store_true",
                   help="with --resume: test the survivors (and 'no tests') again against the current theory_checks "
                        "(the test-to-function map is collected anew); killed mutants keep their result")
    p.add_argument("--claim-tries", type=int, default=4,
                   help="killed mutants tried per claim that no first failure credits (default 4; 0: no claim pass)")
    p.add_argument("--all-mutants", action="store_true", help="also run the mutants that only change an error message or input validation")
    p.add_argument("--equivalents", type=Path, default=EQUIVALENTS,
                   help=f"equivalent mutants and their reasons (default {EQUIVALENTS})")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.max_minutes is not None and args.max_minutes <= 0:
        p.error("--max-minutes must be positive")
    if args.retest_survivors and not args.resume:
        p.error("--retest-survivors needs --resume (it re-tests the survivors of the kept mutants/)")
    for m in args.modules:
        rel = THEORY / m.replace(".", "/")
        if not ((REPO / rel).with_suffix(".py").is_file() or (REPO / rel).is_dir()):
            p.error(f"--modules: no theory module {m!r} ({rel}.py); choose from {', '.join(MODULES)} "
                    "or a submodule such as rn.risk")
    mm = _mutmut()
    if "mutmut" not in tomllib.loads((REPO / "pyproject.toml").read_text()).get("tool", {}):
        raise SystemExit("mutation benchmark: pyproject.toml has no [tool.mutmut] section")
    equivalents = load_equivalents(args.equivalents if args.equivalents.is_absolute() else REPO / args.equivalents)
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    os.chdir(REPO)  # mutmut works in the repo root and mutants/
    t0 = time.perf_counter()
    work = REPO / "mutants"
    if work.exists() and not args.resume:
        _say("removing the previous mutants/ (--resume keeps it)")
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)

    if args.retest_survivors:
        # the tests changed: mutmut must map tests to functions again before it picks a mutant's tests
        (work / "mutmut-stats.json").unlink(missing_ok=True)
    _say(f"mutmut {mm.version}: writing the mutants of {THEORY}/ to mutants/")
    generate_mutants(args.workers)
    if args.retest_survivors:
        reset = 0
        for path in theory_files():
            data = mm.Data(path=path)
            data.load()
            for name, code in data.exit_code_by_key.items():
                if mm.status_by_exit_code[code] in ("survived", "no tests"):
                    data.exit_code_by_key[name] = None
                    reset += 1
            data.save()
        _say(f"--retest-survivors: {reset} survivors to test again")
    prefixes = tuple(f"analysis.theory.{m}." for m in args.modules)
    names_by_path = {}
    for path in theory_files():
        data = mm.Data(path=path)
        data.load()
        names = [n for n in data.exit_code_by_key if n.startswith(prefixes)]
        if names:
            names_by_path[path] = names
    selected = [n for names in names_by_path.values() for n in names]
    if not selected:
        raise SystemExit(f"mutation benchmark: mutmut wrote no mutant for modules {args.modules}")
    info = describe_mutants(names_by_path, mm)
    in_scope = [n for n in selected if args.all_mutants or not info[n]["out_of_scope"]]
    _say(f"{len(selected)} mutants in {', '.join(args.modules)}: {len(in_scope)} in scope, "
         f"{len(selected) - len(in_scope)} only change an error message or input validation ({time.perf_counter() - t0:.0f} s)")

    kills = work / "kills.jsonl"
    if not args.resume:
        kills.unlink(missing_ok=True)
    todo = [n for n in in_scope if statuses_of(names_by_path, mm)[n] in NOT_RUN]
    t_run = time.perf_counter()

    def progress(elapsed):
        st = statuses_of(names_by_path, mm)
        c = Counter(st[n] for n in todo)
        done = len(todo) - c["not checked"]
        eta = f", about {(len(todo) - done) * elapsed / done / 60:.0f} min left" if done else ""
        _say(f"  {elapsed / 60:5.1f} min: {done}/{len(todo)} checked (killed {c['killed']}, survived "
             f"{c['survived']}, no tests {c['no tests']}, timeout {c['timeout']}){eta}")

    stopped = run_mutmut(todo, args.workers, args.max_minutes, kills, mm, progress) if todo else False
    if not todo:
        _say("every mutant in scope already has a result (--resume)")
    run_seconds = time.perf_counter() - t_run
    statuses = statuses_of(names_by_path, mm)
    tbf = json.loads((work / "mutmut-stats.json").read_text())["tests_by_mangled_function_name"]
    covering = {n: set(tbf.get(n.partition("__mutmut_")[0], ())) for n in selected}
    claims_map = collect_claims(work / "claims.json")
    kill_records = read_kills(kills)
    confirmed = {}
    if args.claim_tries > 0 and not stopped:
        confirmed = confirm_claims(claims_map, covering, {n: statuses[n] for n in in_scope}, kill_records, info,
                                   args.claim_tries)
    # a run in chunks (--max-minutes, then --resume) reports the time of all its chunks
    timing_file = work / "benchmark-time.json"
    timing = json.loads(timing_file.read_text()) if args.resume and timing_file.exists() else {}
    seconds = timing.get("seconds", 0.0) + time.perf_counter() - t0
    run_seconds += timing.get("mutmut_seconds", 0.0)
    run_count = timing.get("mutants_run", 0) + len(todo) - sum(statuses[n] in NOT_RUN for n in todo)
    timing_file.write_text(json.dumps({"seconds": seconds, "mutmut_seconds": run_seconds, "mutants_run": run_count}))
    report = {
        "benchmark": "mutation testing of analysis/theory against theory_checks",
        "tool": {"name": "mutmut", "version": mm.version},
        "modules": args.modules,
        **build_report(selected, info, statuses, kill_records, claims_map, covering, confirmed, equivalents,
                       args.all_mutants),
        "partial": bool(stopped or any(statuses[n] in NOT_RUN for n in in_scope)),
        "seconds": round(seconds, 1),
        "mutmut_seconds": round(run_seconds, 1),  # the `mutmut run` part of seconds
        "seconds_per_mutant": round(run_seconds * args.workers / run_count, 2) if run_count else None,
        "workers": args.workers,
        "provenance": provenance("cpu", mutmut=mm.version),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutation.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, out / "mutation.md")
    score = "-" if report["score"] is None else f"{100 * report['score']:.1f}%"
    _say(f"score {score} (goal {100 * GOAL:.0f}%): {report['killed']} killed, {report['survived']} survived, "
         f"{report['equivalent']} equivalent of {report['total']} in scope"
         + (f", {report['unchecked']} not checked" if report["unchecked"] else "")
         + f"; claims without a killed mutant: {', '.join(report['claims_without_killed_mutant']) or 'none'}; "
         f"{seconds / 60:.1f} min; wrote {out / 'mutation.json'} and mutation.md")
    if report["equivalents_stale"]:
        _say(f"note: {len(report['equivalents_stale'])} keys of the equivalents file match no mutant of this run "
             "(stale, or outside --modules)")


if __name__ == "__main__":
    main()
