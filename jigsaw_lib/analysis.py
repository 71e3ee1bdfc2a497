"""Analysis of training runs: curves over seeds, the forgetting table, forgetting at matched accuracy.

Everything reads the tidy ``metrics`` table (``method, seed, step, metric, value``; step 0 is the base
model) and returns tidy frames, which the notebooks plot and write.

Forgetting is compared two ways, as the study needs both:

- **at the end of each run** (the paper's table): the change of every prior skill from step 0;
- **at matched new-task accuracy**: for each run, the first evaluated step at which ``jigsaw_exact``
  reaches a threshold, and the prior-skill change there. A method that learns faster is not charged
  for steps it trained past that point, and one that never reaches it is reported as such (NaN);
- **at equal settings** (:func:`data_vs_settings`): SFT on rollouts against SFT on answers with the same learning
  rate, batch, puzzles and steps, so that only the data differs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

PRIOR = "prior/"
PROBE = "probe/"  # prefix of the larger probe's rows, written by tracking.Tracker at step 0 and the last step


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


def data_vs_settings(metrics: pd.DataFrame, *, control: str = "sft_matched",
                     data: tuple = ("rollout_sft", "rollout_sft_early")) -> pd.DataFrame:
    """What the data does at equal settings (C5): each run of ``data`` against its seed's ``control`` run.

    ``control`` is SFT on ground-truth answers with the settings of SFT on rollouts (``config.answers_control``),
    so the two differ in their data only. Per seed and data method, at each run's last evaluation: exact accuracy
    and mean prior accuracy lost (base minus end, fractions), the control's, and ``lost_saved``, the control's loss
    minus the data's: the forgetting the rollouts save over answers at the same settings (positive: they forget
    less). Seeds without a control run get no rows.
    """
    wide = _per_run(metrics)
    rows = []

    def end(method, seed):
        run = _run_if_any(wide, method, seed)
        if run is None:
            return None
        first, last = run.iloc[0], run.iloc[-1]
        return last["step"], last["jigsaw_exact"], first["prior_mean"] - last["prior_mean"]

    for seed in sorted(wide.seed.unique()):
        ctl = end(control, seed)
        if ctl is None:
            continue
        for method in data:
            got = end(method, seed)
            if got is None:
                continue
            rows.append({"method": method, "seed": seed, "step": got[0], "jigsaw_exact": got[1], "prior_lost": got[2],
                         "control_step": ctl[0], "control_exact": ctl[1], "control_prior_lost": ctl[2],
                         "lost_saved": ctl[2] - got[2]})
    return pd.DataFrame(rows, columns=["method", "seed", "step", "jigsaw_exact", "prior_lost", "control_step",
                                       "control_exact", "control_prior_lost", "lost_saved"])


def data_vs_settings_markdown(table: pd.DataFrame) -> str:
    """:func:`data_vs_settings` as Markdown: one table per quantity, a row per data method, a column per seed;
    losses in points of mean prior accuracy."""
    points = table.assign(**{c: 100 * table[c] for c in ["prior_lost", "control_prior_lost", "lost_saved"]})
    parts = [("exact", "jigsaw_exact", "{:.4f}"),
             ("the control (SFT on answers at the same settings): exact", "control_exact", "{:.4f}"),
             ("prior lost, points", "prior_lost", "{:.2f}"),
             ("the control: prior lost, points", "control_prior_lost", "{:.2f}"),
             ("points the data saves over the control (the control's loss minus its own)", "lost_saved", "{:+.2f}")]
    return "\n\n".join(f"{title}:\n\n" + markdown_table(points, "method", "seed", column, fmt)
                       for title, column, fmt in parts)


def final_probe(metrics: pd.DataFrame, prefix: str = PROBE) -> pd.DataFrame:
    """The larger probe's rows (the base at step 0 and each run's last model; ``RunConfig.probe_jigsaw``,
    ``probe_prior``) under the names of the runs' own rows, so every function here reads them as a run of two
    evaluations: ``claims(final_probe(metrics), final=True)`` judges the targets on them, ``forgetting_table`` gives
    the change at the end.

    Only runs probed at both ends are kept: at step 0 and at their last evaluated step (a run resumed from an older
    table may lack the first, one stopped early the last); the others are left out with a warning."""
    m = metrics[metrics.metric.str.startswith(prefix)]
    if m.empty:
        raise ValueError(f"no {prefix}* rows: the runs were made without a larger probe (probe_jigsaw, probe_prior)")
    last = metrics[metrics.metric == "jigsaw_exact"].groupby(["method", "seed"])["step"].max()
    probed = m.groupby(["method", "seed"])["step"].agg(set)
    ends = pd.Series({run: {0, last.get(run)} <= steps for run, steps in probed.items()}, dtype=bool)
    if not ends.all():
        warnings.warn(f"final_probe: left out runs not probed at step 0 and at their last step: "
                      f"{list(ends[~ends].index)}")
    m = m[pd.MultiIndex.from_frame(m[["method", "seed"]]).isin(ends[ends].index)]
    return m.assign(metric=m.metric.str.removeprefix(prefix))


def markdown_table(table: pd.DataFrame, index: str, columns: str, values: str, fmt: str = "{:+.3f}") -> str:
    """A pivot of ``table`` as a Markdown table (for the README and results/)."""
    pivot = table.pivot(index=index, columns=columns, values=values)
    head = "| " + " | ".join([index] + [str(c) for c in pivot.columns]) + " |"
    rule = "|" + "---|" * (len(pivot.columns) + 1)
    body = ["| " + " | ".join([str(i)] + ["" if pd.isna(v) else fmt.format(v) for v in row]) + " |"
            for i, row in zip(pivot.index, pivot.values)]
    return "\n".join([head, rule, *body])


def _run(wide: pd.DataFrame, method: str, seed) -> pd.DataFrame:
    run = wide[(wide.method == method) & (wide.seed == seed)].dropna(subset=["jigsaw_exact"]).sort_values("step")
    if run.empty or run.iloc[0]["step"] != 0:
        raise ValueError(f"run {method} seed {seed} has no step-0 (base) evaluation")
    return run


def _run_if_any(wide: pd.DataFrame, method: str, seed) -> pd.DataFrame | None:
    """The run of ``method`` and ``seed`` (:func:`_run`), or None where the table has no such run."""
    return _run(wide, method, seed) if ((wide.method == method) & (wide.seed == seed)).any() else None


_EPS = 1e-9  # accuracies are means of fractions: 0.8999999999999999 has reached 0.9


def _at_least(value, target) -> bool | None:
    return None if pd.isna(value) else bool(value >= target - _EPS)


def _at_most(value, target) -> bool | None:
    return None if pd.isna(value) else bool(value <= target + _EPS)


def claims(metrics: pd.DataFrame, *, sft: str = "sft", rft: str = "rft", rollout: str = "rollout_sft",
           rollout_early: str = "rollout_sft_early", control: str = "sft_matched", sft_exact: float = 0.9,
           sft_lost: float = 0.20, rft_exact: float = 0.6, rft_lost: float = 0.03, rollout_share: float = 0.2,
           rollout_lost: float = 0.05, final: bool = False) -> pd.DataFrame:
    """The study's pocket targets, per seed: what each run reached, the target, and whether it is met.

    - C1: SFT's best exact accuracy >= ``sft_exact``;
    - C2: SFT's prior loss (mean prior accuracy, base minus then) where it first reaches ``sft_exact``
      >= ``sft_lost`` (undecided, ``met`` None, if it never does; the loss at its best step is shown);
    - C3: RFT's final exact >= ``rft_exact`` and its final prior loss <= ``rft_lost``;
    - C5: SFT on RFT's rollouts reaches RFT's final exact within ``rollout_share`` of RFT's steps, having
      lost <= ``rollout_lost`` there (undecided if RFT ended no better than its base, or has no run); the
      same for SFT on an early RFT checkpoint's rollouts (``rollout_early``), against the same RFT run's
      final accuracy (the paper: rollouts of a short RFT run suffice);
    - C5 control: the same for SFT on answers with the settings of SFT on rollouts (``control``,
      ``config.answers_control``): where it too meets C5's targets, the settings, not the data, meet them.

    With ``final`` the table is a run of two evaluations, the base and the last model (:func:`final_probe`), and the
    quantities say so: C1 is SFT's final exact, C2 its loss at the end, C5 the step by which SFT on rollouts has
    reached RFT's final exact (its last step, or not by then).

    Methods absent from ``metrics`` get no rows; a missing prior evaluation leaves a verdict undecided.
    """
    wide = _per_run(metrics)
    for column in ("jigsaw_exact", "prior_mean"):  # e.g. a probe without prior items: verdicts undecided
        if column not in wide:
            wide[column] = np.nan
    rows = []

    def add(claim, seed, quantity, value, target, met, step):
        rows.append({"claim": claim, "seed": seed, "quantity": quantity, "value": value, "target": target,
                     "met": met, "step": step})

    for seed in sorted(wide.seed.unique()):
        run = _run_if_any(wide, sft, seed)
        if run is not None:
            base, best = run.iloc[0]["prior_mean"], run.loc[run.jigsaw_exact.idxmax()]
            add("C1", seed, "SFT final exact" if final else "SFT best exact", best["jigsaw_exact"], f">= {sft_exact:g}",
                _at_least(best["jigsaw_exact"], sft_exact), best["step"])
            reached = run[run.jigsaw_exact >= sft_exact - _EPS]
            if len(reached):
                at = reached.iloc[0]
                lost = round(base - at["prior_mean"], 9)
                add("C2", seed, f"SFT prior lost at the end (exact >= {sft_exact:g} there)" if final else
                    f"SFT prior lost at exact >= {sft_exact:g}", lost, f">= {sft_lost:g}",
                    _at_least(lost, sft_lost), at["step"])
            else:
                add("C2", seed, f"SFT prior lost at {'the end' if final else 'its best exact'} (target accuracy not "
                    "reached)",
                    round(base - best["prior_mean"], 9), f">= {sft_lost:g}", None, best["step"])
        rft_run = _run_if_any(wide, rft, seed)
        if rft_run is not None:
            base, last = rft_run.iloc[0], rft_run.iloc[-1]
            lost = round(base["prior_mean"] - last["prior_mean"], 9)
            add("C3", seed, "RFT final exact", last["jigsaw_exact"], f">= {rft_exact:g}",
                _at_least(last["jigsaw_exact"], rft_exact), last["step"])
            add("C3", seed, "RFT prior lost at the end", lost, f"<= {rft_lost:g}", _at_most(lost, rft_lost),
                last["step"])
        for method, source, claim in ((rollout, "rollouts", "C5"), (rollout_early, "early-RFT rollouts", "C5"),
                                      (control, "answers at the rollouts' settings", "C5 control")):
            ro = _run_if_any(wide, method, seed)
            if ro is None:
                continue
            quantity = (f"SFT on {source}: step by which it has RFT's final exact" if final
                        else f"SFT on {source}: steps to RFT's final exact")
            if rft_run is None:
                add(claim, seed, quantity + " (no RFT run)", np.nan, "", None, np.nan)
                continue
            goal, budget = rft_run.iloc[-1]["jigsaw_exact"], rollout_share * rft_run.iloc[-1]["step"]
            if goal <= rft_run.iloc[0]["jigsaw_exact"] + _EPS:
                add(claim, seed, quantity + " (RFT ended no better than its base)", np.nan, f"<= {budget:g}", None,
                    np.nan)
                continue
            reached = ro[(ro.jigsaw_exact >= goal - _EPS) & (ro.step > 0)]
            if len(reached):
                at = reached.iloc[0]
                lost = round(ro.iloc[0]["prior_mean"] - at["prior_mean"], 9)
                add(claim, seed, quantity, at["step"], f"<= {budget:g}", bool(at["step"] <= budget), at["step"])
                add(claim, seed, f"SFT on {source}: prior lost there", lost, f"<= {rollout_lost:g}",
                    _at_most(lost, rollout_lost), at["step"])
            else:  # the step shown is the run's last: not reached by then
                add(claim, seed, quantity, np.nan, f"<= {budget:g}", False, ro.iloc[-1]["step"])
    return pd.DataFrame(rows, columns=["claim", "seed", "quantity", "value", "target", "met", "step"])


def claims_markdown(table: pd.DataFrame) -> str:
    """The claims table with one column per seed: ``value (step) yes/no``."""
    seeds = sorted(table.seed.unique())
    head = "| claim | quantity | target | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    rule = "|" + "---|" * (3 + len(seeds))
    body = []
    # rows by claim (a claim's quantity can differ between seeds, e.g. C2 where a seed never reaches SFT's target)
    ordered = table.sort_values("claim", kind="stable")
    for (claim, quantity, target), g in ordered.groupby(["claim", "quantity", "target"], sort=False):
        cells = []
        for s in seeds:
            r = g[g.seed == s]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            # losses to 3 places: a 50-item probe moves the mean by a third of a point, and a loss of 0.033
            # against a target of 0.03 must not print as 0.03
            digits = 3 if "lost" in quantity else 2
            steps = "steps to" in quantity or "step by which" in quantity  # a count of steps, not an accuracy
            if pd.isna(r["value"]):
                value = f"not by step {r['step']:.0f}" if steps and not pd.isna(r["step"]) else "-"
            else:
                value = f"{r['value']:.0f}" if steps else f"{r['value']:.{digits}f}"
            step = "" if pd.isna(r["step"]) or steps else f" (step {r['step']:.0f})"
            met = {True: " yes", False: " no"}.get(r["met"], " n/a")
            cells.append(value + step + met)
        body.append(f"| {claim} | {quantity} | {target} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])


def answer_shift(base: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """Which answers a fine-tuned model gives instead of the base's, item by item: where forgetting lands.

    ``base`` and ``tuned`` are the records of ``evaluate.evaluate_skills(..., return_completions=True)`` on the same
    items (same skills, n, split and seed). Returns one row per (skill, answer, base_given, tuned_given): the right
    answer, what each model answered (the body of a well-tagged answer, normalised as the scorer compares it;
    ``malformed`` otherwise), and how many items; ``lost`` / ``gained`` mark the items the base got right and the
    tuned model wrong, and the reverse. E.g. E21's RFT model answers an object in the bottom-right cell "3", the
    bottom-left (README, "Where the forgetting lands").
    """
    from .answers import normalise_body, split_answer

    keys = ["skill", "question", "answer"]
    if len(base) != len(tuned) or not (base[keys].reset_index(drop=True) == tuned[keys].reset_index(drop=True)).all(
            axis=None):
        raise ValueError("answer_shift: base and tuned must be records of the same items in the same order "
                         "(evaluate_skills with the same skills, n_per_skill, split and seed)")

    def given(completion):
        blocks = split_answer(completion)
        return "malformed" if blocks is None else normalise_body(blocks[1])

    items = pd.DataFrame({"skill": base.skill.to_numpy(), "answer": base.answer.map(normalise_body).to_numpy(),
                          "base_given": base.completion.map(given).to_numpy(),
                          "tuned_given": tuned.completion.map(given).to_numpy(),
                          "lost": (base.right.to_numpy() & ~tuned.right.to_numpy().astype(bool)),
                          "gained": (~base.right.to_numpy().astype(bool) & tuned.right.to_numpy())})
    return (items.groupby(["skill", "answer", "base_given", "tuned_given"])
            .agg(items=("lost", "size"), lost=("lost", "sum"), gained=("gained", "sum"))
            .reset_index().sort_values(["skill", "lost", "items"], ascending=[True, False, False], ignore_index=True))
