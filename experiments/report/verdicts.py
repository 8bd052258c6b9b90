"""The audit's verdicts as tables: a paper's claims with their verdicts, and the paired comparisons
behind its empirical ones, read from the ``audit.json`` that ``blockaudit audit`` writes.

Fields of a verdict other than the basic ones are read defensively and shown as columns.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from experiments.claims import CLAIMS
from experiments.report.store_index import paper_id

__all__ = ["load_audit", "claims_table", "comparisons_table"]

_BASIC_VERDICT_KEYS = {"claim_id", "status", "evidence", "check", "runs", "statement"}


def load_audit(path: Path | str) -> dict:
    """The payload of ``audit.json`` written by ``blockaudit audit``; a missing or malformed file is named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audit results not found at {path}; make them with `blockaudit audit` (writes "
                                "reports/audit.json) or pass --audit PATH")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); regenerate it with `blockaudit audit`") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("verdicts"), list):
        raise ValueError(f"{path} has no 'verdicts' list; expected the audit.json written by `blockaudit audit` "
                         "({'meta': ..., 'counts': ..., 'verdicts': [{'claim_id', 'status', 'evidence', ...}]})")
    for i, v in enumerate(payload["verdicts"]):
        if not isinstance(v, dict) or "claim_id" not in v or "status" not in v:
            raise ValueError(f"{path}: verdicts[{i}] lacks 'claim_id' or 'status'; regenerate it with "
                             "`blockaudit audit`")
    return payload


def _cell_value(value):
    """A JSON value as one table cell: scalars as they are, short lists joined, long lists counted."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        if all(isinstance(x, (str, int, float, bool)) for x in value) and len(value) <= 4:
            return "; ".join(map(str, value))
        return f"{len(value)} items"
    return json.dumps(value, sort_keys=True)


def _format_ci(ci) -> str | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:+.3g}, {ci[1]:+.3g}]"
    return None if ci is None else str(ci)


def _format_region(region) -> str | None:
    if isinstance(region, (list, tuple)) and len(region) == 2 and all(isinstance(x, (int, float)) for x in region):
        return f"({region[0]:+g}, {region[1]:+g})"  # open: the claim needs the whole CI strictly inside
    return None if region is None else str(region)


def _extra_columns(verdict: dict) -> dict:
    """Columns from the fields a verdict may carry beyond the basic ones (read defensively).

    ``details`` (training comparisons, experiments.audit.run) gives the headline effect, its CI and the
    seed count; its per-comparison statistics go to ``comparisons_table`` and the rest of it is
    already in the evidence text. Any other extra field is shown as it is, one nesting level flattened.
    """
    extra = {}
    details = verdict.get("details")
    if isinstance(details, dict):
        if isinstance(details.get("effect"), (int, float)):
            extra["effect"] = details["effect"]
        if details.get("ci") is not None:
            extra["CI"] = _format_ci(details["ci"])
        if isinstance(details.get("n_seeds"), int):
            extra["seeds"] = details["n_seeds"]
    for key, value in verdict.items():
        if key in _BASIC_VERDICT_KEYS or key == "details":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                extra[f"{key}.{sub}"] = _cell_value(v)
        else:
            extra[key] = _cell_value(value)
    return extra


def comparisons_table(paper: str, audit: dict | Path | str) -> pd.DataFrame:
    """The paired block-vs-baseline comparisons behind ``paper``'s empirical verdicts, one row each.

    Read from ``details.comparisons`` of the audit's verdicts (effect = mean paired difference over
    seeds with its confidence interval, the region the claim needs, the result); empty if none.
    """
    paper = paper_id(paper)
    payload = audit if isinstance(audit, dict) else load_audit(audit)
    rows = []
    for v in payload.get("verdicts", []):
        details = v.get("details")
        if not str(v.get("claim_id", "")).startswith(paper + "-") or not isinstance(details, dict):
            continue
        for c in details.get("comparisons") or []:
            if not isinstance(c, dict):
                continue
            name = str(c.get("block", "?")) + (f" - {c['baseline']}" if c.get("baseline") else "")
            conf = c.get("confidence")
            rows.append({"claim": v["claim_id"], "comparison": name, "effect": c.get("mean"),
                         (f"{100 * conf:g}% CI" if isinstance(conf, (int, float)) else "CI"):
                             _format_ci([c.get("ci_low"), c.get("ci_high")]),
                         "n": c.get("n"), "region": _format_region(c.get("region")), "result": c.get("status"),
                         "paper": c.get("paper")})
    return pd.DataFrame(rows)


def claims_table(paper: str, audit: dict | Path | str) -> pd.DataFrame:
    """One row per registered claim of ``paper``: claim, kind, verdict, statement, evidence, extras, check.

    ``audit`` is the payload of ``load_audit`` or the path of ``audit.json``. A registered claim
    missing from the audit gets the verdict ``not run`` and says so; extra fields of a verdict
    (e.g. run ids, effects, CIs) become columns, ``runs`` becomes a count.
    """
    paper = paper_id(paper)
    payload = audit if isinstance(audit, dict) else load_audit(audit)
    by_id = {v["claim_id"]: v for v in payload.get("verdicts", [])}
    rows = []
    for claim in CLAIMS:
        if claim.paper != paper:
            continue
        v = by_id.get(claim.id)
        if v is None:
            row = {"claim": claim.id, "kind": claim.kind, "verdict": "not run", "statement": claim.statement,
                   "evidence": "not in this audit.json (it was run for other claims); run `blockaudit audit`",
                   "check": claim.check_label}
        else:
            row = {"claim": claim.id, "kind": claim.kind, "verdict": str(v["status"]),
                   "statement": str(v.get("statement") or claim.statement), "evidence": str(v.get("evidence", "")),
                   "check": str(v.get("check", claim.check_label))}
            runs = v.get("runs")
            if isinstance(runs, (list, tuple)) and runs:
                row["runs"] = len(runs)
            row.update(_extra_columns(v))
        rows.append(row)
    frame = pd.DataFrame(rows)
    front = ["claim", "kind", "verdict", "statement", "evidence"]
    extras = [c for c in frame.columns if c not in front + ["check"]]
    frame = frame[front + extras + ["check"]]
    for col in ("runs", "seeds"):
        if col in frame.columns:
            frame[col] = frame[col].astype("Int64")  # counts, not 6.0 because other rows are empty
    # Columns only the other papers' verdicts fill are noise here.
    return frame.dropna(axis=1, how="all")
