"""pytest plugin of the mutation benchmark (``python -m experiments.benchmarks.mutation``).

The benchmark loads it (``-p experiments.benchmarks.mutation_plugin``, through ``PYTEST_ADDOPTS``)
into every pytest run that mutmut makes in ``mutants/``. Outside a mutant's run (mutmut sets
``MUTANT_UNDER_TEST`` to the mutant's name) it does nothing, so the clean run and mutmut's coverage
("stats") run are plain theory-check runs. In a mutant's run it

- runs the mutant's tests in file and definition order (mutmut passes them in set order);
- records each failing test, with the claim ids of its ``@pytest.mark.claim`` marker and the
  exception's type, as one JSON line in the file named by ``BLOCKAUDIT_MUTATION_KILLS``: which
  claims' checks killed which mutant;
- turns off hypothesis' shrinking (and its example database): the first failing example kills the
  mutant, and shrinking it costs 10-20x the test's time (measured: 0.45 s instead of 8-13 s per
  killed mutant of ``analysis.theory.activations``). The examples drawn are still those of the
  ``ci`` profile (derandomised, 25 examples), so a mutant survives exactly when the ``ci`` run
  passes.

``BLOCKAUDIT_MUTATION_CLAIMS``, when set during collection, names a JSON file that receives
``{node id: {"claims": [...], "role": ...}}`` for the collected tests.

``confirm_main()`` runs the benchmark's claim pass (see ``experiments.benchmarks.mutation``): in
``mutants/``, it collects the theory checks once, then forks one pytest run per (claim, mutant) try.
"""
from __future__ import annotations

import json
import os
import sys

import pytest
from hypothesis import Phase, settings

KILLS_ENV = "BLOCKAUDIT_MUTATION_KILLS"
CLAIMS_ENV = "BLOCKAUDIT_MUTATION_CLAIMS"
# mutmut's own values of MUTANT_UNDER_TEST that are not a mutant
_NOT_A_MUTANT = {"", "fail", "stats", "list_all_tests", "mutant_generation"}
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def mutant_under_test() -> str:
    return os.environ.get("MUTANT_UNDER_TEST", "")


def claims_of(item: pytest.Item) -> tuple[list[str], str | None]:
    """The claim ids of ``item``'s ``claim`` markers and their role (``None``: the default)."""
    ids, role = [], None
    for mark in item.iter_markers("claim"):
        ids.extend(str(a) for a in mark.args)
        role = mark.kwargs.get("role", role)
    return ids, role


def pytest_collection_modifyitems(session, config, items):
    if mutant_under_test() not in _NOT_A_MUTANT:
        # mutmut passes a mutant's tests in set order (it varies from run to run): run them in file
        # and definition order, so that the first failing test (the one credited) is reproducible
        items.sort(key=lambda it: (it.location[0], it.location[1] or 0, it.nodeid))
    path = os.environ.get(CLAIMS_ENV)
    if not path:
        return
    out = {}
    for item in items:
        ids, role = claims_of(item)
        out[item.nodeid] = {"claims": ids, "role": role}
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    if mutant_under_test() in _NOT_A_MUTANT:
        return
    # After the conftest has loaded its profile: the same examples, no shrinking, no database.
    settings.register_profile("mutation", parent=settings.default, phases=NO_SHRINK, database=None)
    settings.load_profile("mutation")
    # @given keeps the default settings of the time the test module was imported (before this
    # hook): replace them on each collected test. Inner @given functions, built while the test runs,
    # see the profile loaded above.
    for item in session.items:
        fn = getattr(item, "obj", None)
        current = getattr(fn, "_hypothesis_internal_use_settings", None)
        if isinstance(current, settings):
            fn._hypothesis_internal_use_settings = settings(current, phases=NO_SHRINK, database=None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    path = os.environ.get(KILLS_ENV)
    mutant = mutant_under_test()
    if not path or not report.failed or mutant in _NOT_A_MUTANT:
        return
    ids, role = claims_of(item)
    line = {"mutant": mutant, "test": item.nodeid, "claims": ids, "role": role, "when": report.when,
            "error": call.excinfo.typename if call.excinfo is not None else None}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def confirm_main() -> None:
    """The claim pass, run in ``mutants/``: ``argv[1]`` a JSON file of tries, ``argv[2]`` the answer.

    Tries: ``{claim: [[mutant, [test ids]], ...]}``; for each claim the mutants are tried in turn
    (that claim's tests only, ``-x``) until one is killed. Answer: ``{claim: {"mutant", "tests"}}``
    for the claims confirmed, ``{claim: {"mutant": null, "tried": n}}`` for the others.
    """
    with open(sys.argv[1]) as f:
        tries = json.load(f)
    base = ["--rootdir=.", "-q", "-p", "no:cacheprovider", "-p", __name__]
    with open(os.devnull, "w") as null:  # import conftest, test modules, torch once, before forking
        saved, sys.stdout = sys.stdout, null
        try:
            pytest.main([*base, "--collect-only", "-qq", "theory_checks"])
        finally:
            sys.stdout = saved
    answer = {}
    for claim, candidates in tries.items():
        answer[claim] = {"mutant": None, "tried": len(candidates)}
        for mutant, tests in candidates:
            pid = os.fork()
            if pid == 0:
                sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the child exits below)
                os.environ["MUTANT_UNDER_TEST"] = mutant
                os._exit(int(pytest.main([*base, "-x", *tests])))
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) == 1:
                answer[claim] = {"mutant": mutant, "tests": tests}
                break
        print(f"  claim {claim}: " + (f"killed {answer[claim]['mutant']}" if answer[claim]["mutant"] else
                                      f"none of {len(candidates)} killed mutants tried"), flush=True)
    with open(sys.argv[2], "w") as f:
        json.dump(answer, f, indent=1)
