import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.claims import (CLAIMS, CLAIMS_BY_ID, KINDS, PAPERS, EmpiricalCheck, Reproduction, TheoryCheck,
                                Verdict, get_claim)
from experiments.reproduce import list_reproductions

SHARED_CLAIMS = Path(__file__).resolve().parents[2] / "shared" / "CLAIMS.md"


def _catalogue_ids() -> list[str]:
    ids = []
    for line in SHARED_CLAIMS.read_text().splitlines():
        m = re.match(r"^\|\s*([A-Z]+-[A-Za-z0-9-]+)\s*\|", line)
        if m:
            ids.append(m.group(1))
    return ids


def test_registry_ids_are_unique_and_papers_known():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    assert {c.paper for c in CLAIMS} <= set(PAPERS)


@pytest.mark.skipif(not SHARED_CLAIMS.exists(), reason=f"catalogue not found at {SHARED_CLAIMS}")
def test_registry_covers_every_row_of_the_catalogue():
    catalogue = _catalogue_ids()
    assert len(catalogue) >= 40, "the CLAIMS.md parser found too few rows: has the table format changed?"
    missing = sorted(set(catalogue) - set(CLAIMS_BY_ID))
    assert not missing, f"claims in CLAIMS.md without a registry entry: {missing}"


def test_every_claim_names_a_known_kind_and_check():
    reps = set(list_reproductions())
    for c in CLAIMS:
        assert c.kind in KINDS, c.id
        assert isinstance(c.check, (TheoryCheck, Reproduction, EmpiricalCheck)), c.id
        if isinstance(c.check, Reproduction):
            assert c.check.name in reps, c.id
        if isinstance(c.check, TheoryCheck):
            assert c.kind.startswith(("theorem", "structural")), c.id


def test_every_theory_claim_has_a_marked_test():
    # Collected in a subprocess: a nested collection would re-import this session's test modules.
    code = ("import json; from experiments.audit.theory import collect_claim_tests; "
            "print(json.dumps(collect_claim_tests()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    found = json.loads(out.stdout.strip().splitlines()[-1])
    unknown = sorted(set(found) - set(CLAIMS_BY_ID))
    assert not unknown, f"tests marked with claim ids that are not in the registry: {unknown}"
    missing = sorted(c.id for c in CLAIMS if isinstance(c.check, TheoryCheck) and c.id not in found)
    assert not missing, f"theory claims with no marked test in theory_checks: {missing}"


def test_unknown_claim_id_lists_the_valid_ones():
    with pytest.raises(KeyError, match="unknown claim id 'ND-P9'; known ids: NRL-block"):
        get_claim("ND-P9")


def test_verdict_rejects_an_unknown_status():
    with pytest.raises(ValueError, match="verdict status must be one of"):
        Verdict("ND-P1", "probably", "", "")
