"""Runs: data, training, the results store (run directories), sweeps, data parallelism."""
