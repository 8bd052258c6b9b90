"""``blockaudit models``: the model registry as a table (name, parameters, source, paper)."""
from __future__ import annotations

import pandas as pd
import torch

from analysis.models import build_model, count_parameters, list_models, model_info
from experiments.report.tables import markdown_table


def add_subcommand(sub) -> None:
    p = sub.add_parser("models", help="list the registered models with their parameter counts and sources")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. '*resnest*'")
    p.add_argument("--num-classes", type=int, default=10, help="class count the counts are for (default: 10)")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r}; registered models: {', '.join(list_models())}")
    rows = []
    for name in names:
        info = model_info(name)
        # The meta device allocates nothing, so counting the largest models takes milliseconds;
        # a builder that computes with tensors at construction cannot run there and is built on the CPU.
        try:
            with torch.device("meta"):
                model = build_model(name, num_classes=args.num_classes)
        except (RuntimeError, NotImplementedError):
            model = build_model(name, num_classes=args.num_classes)
        rows.append({"model": name, "params": f"{count_parameters(model) / 1e6:.3f}M", "source": info.source,
                     "paper": info.paper, "description": info.description})
    print(markdown_table(pd.DataFrame(rows)))
    return 0
