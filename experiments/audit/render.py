"""Writing the audit: AUDIT.md (verdicts by paper, the empirical comparisons' table), audit.json, audit.csv."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from experiments.audit.theory import TheoryRun, shorten
from experiments.claims import ClaimRegistry, default_registry
from experiments.claims.types import VERDICTS, Verdict
from experiments.report.tables import markdown_table


@dataclass
class AuditResult:
    verdicts: list[Verdict]
    meta: dict
    theory: TheoryRun | None
    # The claims the verdicts are about (the five papers, or more when a paper module was added).
    registry: ClaimRegistry = field(default_factory=default_registry)

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for v in self.verdicts:
            c = self.registry.get(v.claim_id)
            d = v.details or {}
            ci = d.get("ci") or [None, None]
            rows.append({"claim": v.claim_id, "paper": c.paper, "kind": c.kind, "verdict": v.status,
                         "evidence": v.evidence, "check": v.check, "runs": ";".join(v.runs),
                         "profile": d.get("profile", self.meta.get("profile", "")),
                         "effect": d.get("effect"), "ci_low": ci[0], "ci_high": ci[1],
                         "n_seeds": d.get("n_seeds"), "tolerance": d.get("tolerance", ""),
                         "schedule": d.get("schedule", ""),
                         "made_on": "; ".join(d.get("made_on") or [self.meta.get("machine", "")]),
                         "commit": self.meta.get("commit", "")})
        return pd.DataFrame(rows)

    def counts(self) -> dict[str, int]:
        return {s: sum(v.status == s for v in self.verdicts) for s in VERDICTS}


def write_audit(result: AuditResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = result.to_frame()
    frame.to_csv(out_dir / "audit.csv", index=False)
    payload = {"meta": result.meta, "counts": result.counts(),
               "verdicts": [v.to_dict() | {"statement": result.registry.get(v.claim_id).statement, "paper": result.registry.get(v.claim_id).paper}
                            for v in result.verdicts]}
    (out_dir / "audit.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / "AUDIT.md").write_text(render_markdown(result))
    return [out_dir / "AUDIT.md", out_dir / "audit.json", out_dir / "audit.csv"]


_BADGE = {"holds": "holds", "fails": "**fails**", "inconclusive": "*inconclusive*", "not run": "not run"}


def _empirical_table(result: AuditResult) -> pd.DataFrame:
    rows = []
    for v in result.verdicts:
        d = v.details or {}
        for c in d.get("comparisons", []):
            def fmt(x):
                return "-" if x is None or (isinstance(x, float) and x != x) else f"{x:+.2f}"
            lo, hi = c["region"]
            rows.append({"claim": v.claim_id, "profile": d.get("profile", ""),
                         "comparison": c["block"] + (f" - {c['baseline']}" if c["baseline"] else ""),
                         "effect": fmt(c["mean"]), "95% CI": f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]",
                         "n": c["n"], "region": f"({lo:+g}, {hi:+g})", "result": c["status"], "paper": c["paper"],
                         "stability": _stability_cell(c.get("stability")),
                         "made on": "; ".join(d.get("made_on") or []), "schedule": d.get("schedule", "")})
    return pd.DataFrame(rows)


def _stability_cell(stab: dict | None) -> str:
    if not stab:
        return "not probed"
    word = "stable" if stab["stable"] else "**unstable**"
    return f"{word} (+-{stab['shift']:.2f})"


def render_markdown(result: AuditResult) -> str:
    m = result.meta
    counts = result.counts()
    lines = [
        "# blockaudit: audit of the papers' claims",
        "",
        f"Profile `{m['profile']}` (hypothesis profile `{m['hypothesis_profile']}`), run {m['date']} on "
        f"{m['machine']}; took {m['seconds']} s.",
        "",
        f"Made by `{m.get('provenance', {}).get('command', 'blockaudit audit')}` at "
        + (f"{m['provenance_line']}." if m.get("provenance_line") else "an unrecorded commit."),
        "The theory checks and the reproductions ran on that machine during this audit; each empirical "
        "verdict names the machines that trained its runs (column `made on`; a store's runs keep the "
        "machine and commit that made them).",
        "",
        "Verdicts: " + ", ".join(f"{counts[s]} {s}" for s in VERDICTS) + ".",
        "",
        "Every verdict below was computed by the check named in its row during this run: a theory check "
        "(pytest + hypothesis, `theory_checks/`), a numeric reproduction (`blockaudit reproduce NAME`), or "
        "a training comparison. `holds` means every check of the claim passed; `fails` gives the "
        "counterexample or the measured gap; `inconclusive` means the check could not decide; `not run` "
        "says why nothing ran.",
        "",
    ]
    if m.get("theory_collection_errors"):
        lines += ["**theory_checks had collection errors:**", ""]
        lines += [f"- {e}" for e in m["theory_collection_errors"]] + [""]
    frame = result.to_frame()
    emp = _empirical_table(result)
    if not emp.empty:
        lines += ["## Empirical comparisons (paired seeds)", "",
                  "Effect = mean over seeds of block - baseline final test accuracy (percentage points; for a "
                  "claim without a baseline, the accuracy itself), with the two-sided 95% t interval. A comparison "
                  "holds when the whole CI lies inside its region, fails when it lies wholly outside, and is "
                  "inconclusive otherwise (`experiments/audit/stats.py`). Stability: the CI shifted by twice the "
                  "float-noise standard error measured by each check's twin runs (initial weights moved by one "
                  "float32 ulp); a status that the shift changes is reported as inconclusive (unstable). Quick-profile rows are CPU analogues on "
                  "digits, not the papers' CIFAR setting.", "", markdown_table(emp), ""]
    for paper, title in result.registry.paper_titles.items():
        part = frame[frame.paper == paper]
        if part.empty:
            continue
        lines += [f"## {paper}: {title}", ""]
        table = pd.DataFrame({
            "claim": part.claim,
            "kind": part.kind,
            "verdict": [_BADGE[v] for v in part.verdict],
            "evidence": [shorten(e, 600) for e in part.evidence],
            "check": [shorten(c, 200) for c in part.check],
        })
        lines += [markdown_table(table), ""]
    return "\n".join(lines)
