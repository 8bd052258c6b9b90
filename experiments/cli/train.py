"""``blockaudit train``: argparse front of experiments.runs.train (moved here in full by the layout work)."""
from experiments.runs.train import add_subcommand  # noqa: F401
