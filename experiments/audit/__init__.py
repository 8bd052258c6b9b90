"""The audit: run every claim's check and turn what the checks produced into verdicts.

``stats`` (paired seeds, t interval, the verdict rule, stability), ``theory`` (pytest-run theory
checks), ``empirical`` (training comparisons) with ``datasets`` and ``artefacts``, ``render``
(AUDIT.md / audit.json / audit.csv), and ``run`` (``run_audit``, what ``blockaudit audit`` calls).
"""
