"""``blockaudit report``: argparse front of experiments.report."""
from experiments.report import add_subcommand  # noqa: F401
