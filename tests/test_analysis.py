"""Analysis of runs on a synthetic metrics table whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from jigsaw_lib import analysis


def synthetic():
    rows = []
    # sft learns fast and forgets; rft learns slowly and keeps; two seeds each
    plan = {"sft": ([0.0, 0.9, 1.0], [0.8, 0.4, 0.2]), "rft": ([0.0, 0.3, 0.7], [0.8, 0.8, 0.78])}
    for method, (exact, prior) in plan.items():
        for seed in (0, 1):
            for step, e, p in zip((0, 10, 20), exact, prior):
                rows += [(method, seed, step, "jigsaw_exact", e + 0.01 * seed), (method, seed, step, "prior_mean", p),
                         (method, seed, step, "prior/ocr", p), (method, seed, step, "prior/counting", 0.9)]
    return pd.DataFrame(rows, columns=["method", "seed", "step", "metric", "value"])


def test_curves_mean_and_spread():
    c = analysis.curves(synthetic(), "jigsaw_exact")
    row = c[(c.method == "sft") & (c.step == 10)].iloc[0]
    assert row["mean"] == pytest.approx(0.905) and row["count"] == 2 and row["std"] > 0
    with pytest.raises(ValueError, match="no rows for metric"):
        analysis.curves(synthetic(), "nope")


def test_forgetting_table_is_change_from_step_zero():
    t = analysis.forgetting_table(synthetic()).set_index(["method", "skill"])
    assert t.loc[("sft", "prior_mean"), "change"] == pytest.approx(-0.6)
    assert t.loc[("rft", "ocr"), "change"] == pytest.approx(-0.02)
    assert t.loc[("rft", "counting"), "change"] == pytest.approx(0.0)
    assert t.loc[("sft", "prior_mean"), "jigsaw_exact"] == pytest.approx(1.005)
    assert t.loc[("sft", "prior_mean"), "seeds"] == 2


def test_matched_accuracy_takes_the_first_step_reaching_it():
    m = analysis.at_matched_accuracy(synthetic(), 0.6)
    sft = m[m.method == "sft"].iloc[0]
    rft = m[m.method == "rft"].iloc[0]
    assert sft["step"] == 10 and sft["prior_change"] == pytest.approx(-0.4)
    assert rft["step"] == 20 and rft["prior_change"] == pytest.approx(-0.02)
    never = analysis.at_matched_accuracy(synthetic(), 0.99)
    assert np.isnan(never[never.method == "rft"]["step"]).all()


def test_markdown_table():
    t = analysis.forgetting_table(synthetic())
    md = analysis.markdown_table(t, "skill", "method", "change")
    assert md.splitlines()[0] == "| skill | rft | sft |"
    assert "| prior_mean | -0.020 | -0.600 |" in md
