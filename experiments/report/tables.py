"""Small helpers to write tables as CSV + markdown (the raw data beside every rendered table)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def _cell(value, floatfmt: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return format(value, floatfmt)
    text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g", index: bool = False) -> str:
    """Render ``df`` as a GitHub markdown table (pipes escaped, NaN shown empty)."""
    if index:
        df = df.reset_index()
    header = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines)


def write_table(df: pd.DataFrame, out_dir: Path | str, stem: str, title: str | None = None,
                notes: list[str] | None = None, floatfmt: str = ".4g") -> list[Path]:
    """Write ``stem.csv`` (full precision) and ``stem.md`` (title, table, notes); return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{stem}.csv"
    md_path = out_dir / f"{stem}.md"
    df.to_csv(csv_path, index=False)
    parts = [f"# {title}\n" if title else "", markdown_table(df, floatfmt), ""]
    if notes:
        parts += ["", *[f"- {n}" for n in notes], ""]
    md_path.write_text("\n".join(p for p in parts if p is not None).lstrip("\n"))
    return [csv_path, md_path]
