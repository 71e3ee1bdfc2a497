"""Analysis of training runs: curves over seeds, the forgetting table, forgetting at matched accuracy.

Everything reads the tidy ``metrics`` table (``method, seed, step, metric, value``; step 0 is the base
model) and returns tidy frames, which the notebooks plot and write.

Forgetting is compared two ways, as the study needs both:

- **at the end of each run** (the paper's table): the change of every prior skill from step 0;
- **at matched new-task accuracy**: for each run, the first evaluated step at which ``jigsaw_exact``
  reaches a threshold, and the prior-skill change there. A method that learns faster is not charged
  for steps it trained past that point, and one that never reaches it is reported as such (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRIOR = "prior/"


def curves(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and count over seeds of one metric, per method and step."""
    m = metrics[metrics.metric == metric]
    if m.empty:
        raise ValueError(f"no rows for metric {metric!r}; metrics present: {sorted(metrics.metric.unique())[:20]}")
    out = m.groupby(["method", "step"])["value"].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _per_run(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed, step) with one column per metric."""
    return metrics.pivot_table(index=["method", "seed", "step"], columns="metric", values="value").reset_index()


def prior_columns(metrics: pd.DataFrame) -> list[str]:
    return sorted(m for m in metrics.metric.unique() if m.startswith(PRIOR)) + ["prior_mean"]


def forgetting_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Change vs the base (step 0) at each run's last step, per method and prior skill: mean and std over seeds.

    Also carries the new-task accuracy reached (``jigsaw_exact``) and the run's length in steps.
    """
    wide = _per_run(metrics)
    cols = prior_columns(metrics)
    rows = []
    for (method, seed), run in wide.groupby(["method", "seed"]):
        run = run.sort_values("step")
        first, last = run.iloc[0], run.iloc[-1]
        if first["step"] != 0:
            raise ValueError(f"run {method} seed {seed} has no step-0 (base) evaluation")
        for c in cols:
            rows.append({"method": method, "seed": seed, "skill": c.removeprefix(PRIOR), "base": first[c],
                         "final": last[c], "change": last[c] - first[c], "jigsaw_exact": last["jigsaw_exact"],
                         "steps": last["step"]})
    per_seed = pd.DataFrame(rows)
    return (per_seed.groupby(["method", "skill"])
            .agg(change=("change", "mean"), change_std=("change", "std"), base=("base", "mean"),
                 final=("final", "mean"), jigsaw_exact=("jigsaw_exact", "mean"), steps=("steps", "mean"),
                 seeds=("seed", "nunique"))
            .reset_index().fillna({"change_std": 0.0}))


def at_matched_accuracy(metrics: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per run: the first step with ``jigsaw_exact >= threshold`` and the prior change there (NaN if never)."""
    wide = _per_run(metrics)
    rows = []
    for (method, seed), run in wide.groupby(["method", "seed"]):
        run = run.dropna(subset=["jigsaw_exact"]).sort_values("step")
        base = run[run.step == 0]["prior_mean"]
        hit = run[run.jigsaw_exact >= threshold]
        if len(hit) and len(base):
            first = hit.iloc[0]
            rows.append({"method": method, "seed": seed, "threshold": threshold, "step": first["step"],
                         "jigsaw_exact": first["jigsaw_exact"], "prior_mean": first["prior_mean"],
                         "prior_change": first["prior_mean"] - base.item()})
        else:
            rows.append({"method": method, "seed": seed, "threshold": threshold, "step": np.nan,
                         "jigsaw_exact": run["jigsaw_exact"].max() if len(run) else np.nan,
                         "prior_mean": np.nan, "prior_change": np.nan})
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame, index: str, columns: str, values: str, fmt: str = "{:+.3f}") -> str:
    """A pivot of ``table`` as a Markdown table (for the README and results/)."""
    pivot = table.pivot(index=index, columns=columns, values=values)
    head = "| " + " | ".join([index] + [str(c) for c in pivot.columns]) + " |"
    rule = "|" + "---|" * (len(pivot.columns) + 1)
    body = ["| " + " | ".join([str(i)] + ["" if pd.isna(v) else fmt.format(v) for v in row]) + " |"
            for i, row in zip(pivot.index, pivot.values)]
    return "\n".join([head, rule, *body])
