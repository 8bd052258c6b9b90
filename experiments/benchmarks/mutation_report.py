"""The mutation benchmark's report: the score, per module and claim, survivors (``mutation.json`` / ``.md``).

Built from what ``experiments.benchmarks.mutation`` collected; see its docstring for the terms.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

GOAL = 0.90
KILLED = {"killed", "timeout", "segfault"}
NOT_RUN = {"not checked", "check was interrupted by user"}


def tests_by_claim(claims_map: dict[str, dict]) -> dict[str, set[str]]:
    out = defaultdict(set)
    for test, meta in claims_map.items():
        for c in meta["claims"]:
            out[c].add(test)
    return out


def _score(c) -> float | None:
    judged = c.get("killed", 0) + c.get("survived", 0)
    return round(c.get("killed", 0) / judged, 4) if judged else None


def build_report(selected, info, statuses, kills, claims_map, covering, confirmed, equivalents,
                 all_mutants: bool) -> dict:
    per_module, counts = defaultdict(Counter), Counter()
    by_reason, validation_run = Counter(), defaultdict(Counter)
    survivors, killed_as_equivalent = [], []
    for name in selected:
        mod, status = info[name]["module"], statuses.get(name, "not checked")
        if info[name]["out_of_scope"] and not all_mutants:
            per_module[mod]["out_of_scope"] += 1
            counts["out_of_scope"] += 1
            kind = "input validation" if "input validation" in info[name]["out_of_scope"] else "error message"
            by_reason[kind] += 1
            if status not in NOT_RUN:  # run anyway (an earlier scope, or --all-mutants): shown, not scored
                validation_run[kind]["killed" if status in KILLED else "survived"] += 1
            continue
        reason = equivalents.get(info[name]["key"])
        if status in NOT_RUN:
            group = "unchecked"
        elif status in KILLED:
            group = "killed"
            if reason:
                killed_as_equivalent.append(name)
        else:
            group = "equivalent" if reason else "survived"
        for c in (per_module[mod], counts):
            c["total"] += 1
            c[group] += 1
            c["timeout"] += status == "timeout"
        if group in ("survived", "equivalent"):
            tests = sorted(covering.get(name, ()))
            survivors.append({
                "id": name, "key": info[name]["key"], "module": mod, "function": info[name]["function"],
                "status": status, "diff": info[name]["diff"], "equivalent": group == "equivalent",
                "explanation": reason, "tests": len(tests),
                "claims": sorted({c for t in tests for c in claims_map.get(t, {}).get("claims", [])}),
            })
    tests_of = tests_by_claim(claims_map)
    per_claim = {}
    for claim in sorted(tests_of):
        recs = [r for rs in kills.values() for r in rs if claim in r["claims"] and statuses.get(r["mutant"]) in KILLED]
        entry = {
            "tests": len(tests_of[claim]),
            "killed": len({r["mutant"] for r in recs}),  # mutants whose first failing test checks this claim
            "killed_by_assertion": len({r["mutant"] for r in recs if r["error"] == "AssertionError"}),
            "covering": sum(1 for m in selected if not info[m]["out_of_scope"] or all_mutants
                            if covering.get(m, set()) & tests_of[claim]),
            "confirmed_by": confirmed.get(claim, {}).get("mutant"),
        }
        entry["has_killed_mutant"] = bool(entry["killed"] or entry["confirmed_by"])
        per_claim[claim] = entry
    return {
        "score": _score(counts), "goal": GOAL,
        "meets_goal": (_score(counts) or 0) >= GOAL and not counts["unchecked"]
                      and all(v["has_killed_mutant"] for v in per_claim.values()),
        **{k: counts[k] for k in ("killed", "survived", "equivalent", "total", "timeout", "unchecked", "out_of_scope")},
        "scope": "all mutants" if all_mutants else (
            "mutants that change only an error message (inside raise / warnings.warn, or the name/assumption "
            "label given to a validation helper) or only which inputs are rejected (a bound, shape or choice "
            "given to a validation helper, or the condition of a guard that only raises) are out of scope and "
            "not run: theory checks feed valid inputs, tests/ checks the rejections"),
        "out_of_scope_by_reason": dict(by_reason),
        # out-of-scope mutants that have a result all the same (run before the scope rule covered them)
        "out_of_scope_run": {k: dict(v) for k, v in validation_run.items()},
        "per_module": {m: {**{k: c[k] for k in ("total", "killed", "survived", "equivalent", "timeout",
                                                "unchecked", "out_of_scope")}, "score": _score(c)}
                       for m, c in sorted(per_module.items())},
        "per_claim": per_claim,
        "claims_without_killed_mutant": sorted(c for c, v in per_claim.items() if not v["has_killed_mutant"]),
        "survivors": sorted(survivors, key=lambda s: (s["equivalent"], s["module"], s["function"], s["id"])),
        "equivalents_killed": sorted(killed_as_equivalent),
        "equivalents_stale": sorted(set(equivalents) - {info[n]["key"] for n in selected}),
    }


def write_markdown(report: dict, path: Path) -> None:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    prov = report["provenance"]
    lines = [
        "# Mutation testing: analysis/theory against theory_checks",
        "",
        (f"mutmut {report['tool']['version']}; modules {', '.join(report['modules'])}; {report['workers']} workers; "
         f"{report['seconds'] / 60:.1f} min ({report['seconds_per_mutant']} s per mutant and worker); "
         f"commit {prov['commit'][:12]}{' (dirty tree)' if prov.get('dirty') else ''}, {prov['machine']['cpu']}."),
        "",
        f"**Score {pct(report['score'])}** (goal {pct(report['goal'])}): {report['killed']} killed "
        f"({report['timeout']} by timeout), {report['survived']} survived, {report['equivalent']} equivalent, of "
        f"{report['total']} mutants in scope. {report['out_of_scope']} more are out of scope "
        f"({', '.join(f'{n} {k}' for k, n in report.get('out_of_scope_by_reason', {}).items())}): {report['scope']}."
        + "".join(f" Of the {k} mutants, {v.get('killed', 0)} killed and {v.get('survived', 0)} survived when run."
                  for k, v in report.get("out_of_scope_run", {}).items())
        + (f" **{report['unchecked']} not checked (partial run).**" if report["unchecked"] else ""),
        "",
        "| module | mutants | killed | survived | equivalent | score | out of scope |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m, c in report["per_module"].items():
        lines.append(f"| {m} | {c['total']} | {c['killed']} | {c['survived']} | {c['equivalent']} | "
                     f"{pct(c['score'])} | {c['out_of_scope']} |")
    lines += ["", "## Claims", "",
              ("killed: mutants whose first failing test checks the claim (by assertion: an AssertionError, not a "
               "crash); covering: mutants of functions the claim's tests call; confirmed by: a killed mutant that "
               "the claim's tests alone kill, tried when no first failure credits the claim."), "",
              "| claim | tests | killed | by assertion | covering | confirmed by |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for c, v in report["per_claim"].items():
        flag = "" if v["has_killed_mutant"] else " **(no killed mutant)**"
        lines.append(f"| {c}{flag} | {v['tests']} | {v['killed']} | {v['killed_by_assertion']} | {v['covering']} | "
                     f"{('`' + v['confirmed_by'] + '`') if v['confirmed_by'] else ''} |")
    lines += ["", "## Surviving mutants", ""]
    module = None
    for s in report["survivors"]:
        if s["module"] != module:
            module = s["module"]
            lines += ["", f"### {module}", ""]
        if s["equivalent"]:
            tag = f"equivalent: {s['explanation']}"
        elif s["status"] == "no tests":
            tag = "no theory check calls it"
        else:
            tag = f"{s['status']}; {s['tests']} tests call it ({', '.join(s['claims']) or 'no claim'})"
        diff = " / ".join(d[0] + " " + d[1:].strip() for d in s["diff"])
        lines.append(f"- `{s['id'].rpartition('.')[2]}` `{s['key'].rpartition(':')[2]}` {tag}: `{diff}`")
    if report["equivalents_killed"]:
        lines += ["", "Listed as equivalent but killed (take them out of the equivalents file): "
                  + ", ".join(f"`{k}`" for k in report["equivalents_killed"])]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
