"""``blockaudit sweep``: argparse front of experiments.runs.sweep."""
from experiments.runs.sweep import add_subcommand  # noqa: F401
