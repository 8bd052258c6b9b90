"""blockaudit's experiment side: data, training, sweeps, reproductions, the claims registry,
the audit, report writing and the ``blockaudit`` command line."""
