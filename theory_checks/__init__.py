"""Property-based checks of the papers' theorems, one module per paper, one test per claim id.

Each test carries ``@pytest.mark.claim("ID")`` with the claim id of ../shared/CLAIMS.md and records
what it measured through the ``evidence`` fixture (``theory_checks.evidence``); the audit
(``blockaudit audit``) runs this suite and turns the outcomes and their evidence into verdicts.
Shared hypothesis strategies live in ``theory_checks.strategies``, settings profiles in
``theory_checks.profiles``.
"""
