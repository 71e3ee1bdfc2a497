"""Results tables: tidy long CSVs under ``results/``, one schema per table, checked on write.

Every number the kit reports is a row of a tidy table (one observation per row), so notebooks,
figures and the README all read the same files:

- ``base_model.csv``: ``model, skill, metric, value`` (the pocket base model's prior skills and jigsaw
  behaviour, and its pretraining cost);
- ``base_model_by_kind.csv``: ``model, skill, kind, metric, value`` (its prior skills' accuracy per kind of question,
  ``evaluate.accuracy_by_kind``: where each skill loses its points);
- ``metrics.csv``: ``method, seed, step, metric, value`` (training runs, written by the study);
- ``dynamics.csv``: ``source, step, metric, value`` (learning dynamics: perplexity and influence per data
  source; ``step`` is the SFT step on that source, 0 for the base model, -1 for a fit over all steps);
- ``grafts.csv``: ``method, seed, model, skill, metric, value`` (a run's final model as it is, with one part put
  back to the base's weights, and the base: ``dynamics.where_forgetting_sits``);
- ``answer_shift.csv``: ``method, seed, skill, answer, base_given, tuned_given, metric, value`` (each pair of the base's
  and a run's final model's answers to the same prior items, ``analysis.answer_shift``: metric ``items``, and
  ``lost`` / ``gained``, those the base got right and the final model wrong, and the reverse).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import paths

SCHEMAS = {
    "base_model": ("model", "skill", "metric", "value"),
    "base_model_by_kind": ("model", "skill", "kind", "metric", "value"),
    "metrics": ("method", "seed", "step", "metric", "value"),
    "dynamics": ("source", "step", "metric", "value"),
    "grafts": ("method", "seed", "model", "skill", "metric", "value"),
    "answer_shift": ("method", "seed", "skill", "answer", "base_given", "tuned_given", "metric", "value"),
}


def check(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Raise if ``table`` lacks a column of its schema or holds a missing or non-finite value."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown results table {name!r}; the tables are: {', '.join(SCHEMAS)}")
    missing = [c for c in SCHEMAS[name] if c not in table.columns]
    if missing:
        raise ValueError(f"results table {name!r} lacks column(s) {missing}; it needs {list(SCHEMAS[name])}")
    bad = table[[not (isinstance(v, (int, float)) and math.isfinite(v)) for v in table["value"]]]
    if len(bad):
        raise ValueError(f"results table {name!r} has {len(bad)} missing or non-finite value(s), e.g.\n{bad.head()}")
    return table


def write(table: pd.DataFrame, name: str, directory: str | Path | None = None) -> Path:
    """Check ``table`` against its schema and write ``results/<name>.csv`` (schema columns first)."""
    check(table, name)
    columns = list(SCHEMAS[name]) + [c for c in table.columns if c not in SCHEMAS[name]]
    out = Path(directory) if directory is not None else paths.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    table[columns].to_csv(path, index=False)
    return path


def read(name: str, directory: str | Path | None = None) -> pd.DataFrame:
    path = (Path(directory) if directory is not None else paths.RESULTS) / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"no results table at {path}; run `make reproduce` (or the notebook that writes it)")
    return check(pd.read_csv(path), name)


def distinct_runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` without the runs that repeat an earlier run row for row (same seed, steps, metrics, values).

    A run can appear under two names: ``02_training`` counts the ``sft`` run of seed 0 as the sweep's point at
    the preset's learning rate (``sft_lr3e-4``). Fits over all runs (KL against forgetting) count it once.
    """
    keep, seen = [], set()
    for (method, seed), run in metrics.groupby(["method", "seed"], sort=False):
        key = (seed, tuple(map(tuple, run.sort_values(["step", "metric"])[["step", "metric", "value"]].to_numpy())))
        if key not in seen:
            seen.add(key)
            keep.append((method, seed))
    mask = pd.Series(list(zip(metrics.method, metrics.seed)), index=metrics.index).isin(keep)
    return metrics[mask]
