"""Property-based checks of the papers' theorems, one module per paper, one test per claim id.

Each test carries ``@pytest.mark.claim("ID")`` with the claim id of ../shared/CLAIMS.md; the
audit (``blockaudit audit``) runs this suite and turns the outcomes into verdicts.
"""
