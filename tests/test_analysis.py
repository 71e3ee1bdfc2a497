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


def test_claims_per_seed_against_the_targets():
    m = synthetic()
    ro = m[m.method == "sft"].copy()  # rollout SFT: learns like sft (0.9 at step 10), forgets 0.4 there
    ro["method"] = "rollout_sft"
    t = analysis.claims(pd.concat([m, ro]), rollout_share=0.5)
    row = lambda claim, q, seed=0: t[(t.claim == claim) & t.quantity.str.startswith(q) & (t.seed == seed)].iloc[0]
    assert row("C1", "SFT best exact")["value"] == pytest.approx(1.0) and row("C1", "SFT best").met
    c2 = row("C2", "SFT prior lost at exact")
    assert c2["value"] == pytest.approx(0.4) and c2["step"] == 10 and c2.met  # where it first reached 0.9
    assert row("C3", "RFT final exact")["value"] == pytest.approx(0.7) and row("C3", "RFT final").met
    assert row("C3", "RFT prior lost")["value"] == pytest.approx(0.02) and row("C3", "RFT prior lost").met
    c5 = row("C5", "SFT on rollouts: steps")
    assert c5["value"] == 10 and c5.met  # reaches RFT's 0.7 at step 10 <= 0.5 x 20
    assert row("C5", "SFT on rollouts: prior lost")["value"] == pytest.approx(0.4)
    assert not row("C5", "SFT on rollouts: prior lost").met
    strict = analysis.claims(m, sft_exact=1.1)  # never reached: C2 undecided, the loss at the best step shown
    c2 = strict[(strict.claim == "C2") & (strict.seed == 1)].iloc[0]
    assert c2.met is None and c2["step"] == 20 and c2["value"] == pytest.approx(0.6)
    assert set(strict.claim) == {"C1", "C2", "C3"}  # no rollout runs, no C5 rows
    md = analysis.claims_markdown(t)
    assert md.splitlines()[0] == "| claim | quantity | target | seed 0 | seed 1 |"
    assert "| C1 | SFT best exact | >= 0.9 | 1.00 (step 20) yes | 1.01 (step 20) yes |" in md
    assert "| C3 | RFT prior lost at the end | <= 0.03 | 0.020 (step 20) yes |" in md  # losses to 3 places
    # one seed reaches SFT's target and one does not: two C2 quantities, both rows kept next to each other
    mixed = analysis.claims(pd.concat([m, ro]), sft_exact=1.005)
    assert mixed[mixed.claim == "C2"].quantity.nunique() == 2
    claims_in_order = [line.split("|")[1].strip() for line in analysis.claims_markdown(mixed).splitlines()[2:]]
    assert claims_in_order == sorted(claims_in_order)


def test_claims_judge_early_rollouts_against_the_same_rft_run():
    m = synthetic()
    early = m[m.method == "rft"].copy()  # learns like RFT: 0.3 at step 10, RFT's final 0.7 only at step 20
    early["method"] = "rollout_sft_early"
    # seed 0 reaches its own RFT's final 0.70 at step 10, short of seed 1's 0.71: judged per seed, not pooled
    early.loc[(early.seed == 0) & (early.step == 10) & (early.metric == "jigsaw_exact"), "value"] = 0.705
    t = analysis.claims(pd.concat([m, early]), rollout_share=0.5)
    steps = t[t.quantity == "SFT on early-RFT rollouts: steps to RFT's final exact"]
    lost = t[t.quantity == "SFT on early-RFT rollouts: prior lost there"]
    assert list(steps.value) == [10, 20] and list(steps.met) == [True, False]  # budget 0.5 x 20 steps
    assert list(lost.value) == pytest.approx([0.0, 0.02]) and lost.met.all()
    assert "SFT on rollouts: steps to RFT's final exact" not in set(t.quantity)  # no rollout_sft run, no rows
    md = analysis.claims_markdown(t)
    assert "| C5 | SFT on early-RFT rollouts: prior lost there | <= 0.05 | 0.000 (step 10) yes | 0.020 (step 20) yes |" in md


def test_data_vs_settings_compares_rollouts_with_answers_at_the_same_settings():
    m = synthetic()
    ro = m[m.method == "rft"].assign(method="rollout_sft")  # ends at 0.7 (+0.01 seed 1), 0.02 lost
    control = m[m.method == "sft"].assign(method="sft_matched")  # ends at 1.0, 0.6 lost
    t = analysis.data_vs_settings(pd.concat([m, ro, control[control.seed == 0]]))
    assert list(zip(t.method, t.seed)) == [("rollout_sft", 0)]  # seed 1 has no control run: no row
    row = t.iloc[0]
    assert row["step"] == 20 and row["jigsaw_exact"] == pytest.approx(0.7) and row["prior_lost"] == pytest.approx(0.02)
    assert row["control_exact"] == pytest.approx(1.0) and row["control_prior_lost"] == pytest.approx(0.6)
    assert row["lost_saved"] == pytest.approx(0.58)  # the control's loss minus the rollouts'
    assert analysis.data_vs_settings(m).empty  # no control: nothing to compare
    md = analysis.data_vs_settings_markdown(t)
    assert "| rollout_sft | 58.00 |" not in md and "| rollout_sft | +58.00 |" in md  # saved, in points
    assert "| rollout_sft | 2.00 |" in md and "| rollout_sft | 60.00 |" in md and "| rollout_sft | 0.7000 |" in md


def test_claims_judge_the_control_like_sft_on_rollouts():
    m = synthetic()
    control = m[m.method == "sft"].assign(method="sft_matched")  # reaches RFT's final 0.7 at step 10
    t = analysis.claims(pd.concat([m, control]), rollout_share=0.5)
    rows = t[t.claim == "C5 control"]
    steps = rows[rows.quantity == "SFT on answers at the rollouts' settings: steps to RFT's final exact"]
    assert list(steps.value) == [10, 10] and steps.met.all()
    lost = rows[rows.quantity == "SFT on answers at the rollouts' settings: prior lost there"]
    assert list(lost.value) == pytest.approx([0.4, 0.4]) and not lost.met.any()
    assert "C5" not in set(t.claim)  # no rollout runs
    md = analysis.claims_markdown(t).splitlines()
    assert md[-1].startswith("| C5 control | SFT on answers at the rollouts' settings: prior lost there |")


def test_claims_edge_cases():
    m = synthetic()
    # a mean of fractions just under the target has reached it
    fuzzy = m.copy()
    at = (fuzzy.method == "sft") & (fuzzy.metric == "jigsaw_exact") & (fuzzy.step == 10)
    fuzzy.loc[at, "value"] = (0.85 + 0.95) / 2  # 0.8999999999999999
    t = analysis.claims(fuzzy)
    c2 = t[(t.claim == "C2") & (t.seed == 0)].iloc[0]
    assert c2.met and c2["step"] == 10
    # RFT no better than its base: reaching its final accuracy proves nothing, C5 undecided
    flat = m[m.method == "rft"].copy()
    flat.loc[flat.metric == "jigsaw_exact", "value"] = 0.0
    ro = m[m.method == "sft"].copy()
    ro["method"] = "rollout_sft"
    t = analysis.claims(pd.concat([flat, ro]))
    c5 = t[t.claim == "C5"]
    assert len(c5) == 2 and c5.met.isna().all() and c5.quantity.str.contains("no better than its base").all()
    # a rollout run without an RFT run of its seed is reported, undecided
    t = analysis.claims(ro)
    assert t[t.claim == "C5"].quantity.str.contains("no RFT run").all() and t[t.claim == "C5"].met.isna().all()


def test_distinct_runs_drops_a_run_recorded_twice_under_another_name():
    from jigsaw_lib import results

    m = synthetic()
    copy = m[(m.method == "sft") & (m.seed == 0)].assign(method="sft_lr3e-4")
    other_seed = m[(m.method == "sft") & (m.seed == 0)].assign(method="sft_lr1e-4", seed=5)  # same values, other seed
    changed = copy.assign(method="sft_lr1e-3", value=copy.value + 0.01)  # another run
    d = results.distinct_runs(pd.concat([m, copy, other_seed, changed], ignore_index=True))
    runs = set(zip(d.method, d.seed))
    assert ("sft_lr3e-4", 0) not in runs and ("sft", 0) in runs
    assert {("sft_lr1e-4", 5), ("sft_lr1e-3", 0)} <= runs
    assert len(d) == len(m) + len(other_seed) + len(changed)


def test_final_probe_is_read_as_a_run_of_two_evaluations():
    m = synthetic()
    last = m.step == m.groupby(["method", "seed"]).step.transform("max")
    ends = m[(m.step == 0) | last]
    # the larger probe sees RFT at 0.55, not 0.7, and a loss of 4 points, not 2
    probe = ends.assign(metric="probe/" + ends.metric, value=ends.value.where(
        ~((ends.method == "rft") & (ends.step == 20) & (ends.metric == "jigsaw_exact")), 0.55))
    probe.loc[(probe.method == "rft") & (probe.step == 20) & (probe.metric == "probe/prior_mean"), "value"] = 0.76
    view = analysis.final_probe(pd.concat([m, probe]))
    assert set(view.metric) == set(m.metric) and sorted(view.step.unique()) == [0, 20]
    t = analysis.claims(view, final=True)
    assert {"SFT final exact", "SFT prior lost at the end (exact >= 0.9 there)"} <= set(t.quantity)
    rft = t[t.claim == "C3"].set_index(["seed", "quantity"])
    assert rft.loc[(0, "RFT final exact"), "value"] == pytest.approx(0.55) and not rft.loc[(0, "RFT final exact"), "met"]
    assert rft.loc[(0, "RFT prior lost at the end"), "value"] == pytest.approx(0.04)
    assert analysis.forgetting_table(view).set_index(["method", "skill"]).loc[("rft", "prior_mean"), "change"] == \
        pytest.approx(-0.04)
    with pytest.raises(ValueError, match="without a larger probe"):
        analysis.final_probe(m)


def test_claims_say_when_rollouts_fall_short_by_their_last_step():
    m = synthetic()
    ro = m[m.method == "rft"].copy()
    ro["method"] = "rollout_sft"
    ro.loc[ro.metric == "jigsaw_exact", "value"] *= 0.5  # never reaches RFT's final accuracy
    t = analysis.claims(pd.concat([m, ro]))
    c5 = t[(t.claim == "C5") & (t.seed == 0)].iloc[0]
    assert np.isnan(c5["value"]) and c5["step"] == 20 and c5.met == False  # noqa: E712 (numpy bool)
    assert "not by step 20 no" in analysis.claims_markdown(t)


def test_final_probe_leaves_out_runs_not_probed_at_both_ends():
    m = synthetic()
    ends = m[m.step.isin([0, 20])]
    probe = ends.assign(metric="probe/" + ends.metric)
    resumed = (probe.method == "rft") & (probe.seed == 1) & (probe.step == 0)  # resumed from an older table
    stopped = (probe.method == "sft") & (probe.seed == 0) & (probe.step == 20)  # stopped before its last step
    with pytest.warns(UserWarning, match=r"\('rft', 1\).*\('sft', 0\)"):
        view = analysis.final_probe(pd.concat([m, probe[~resumed & ~stopped]]))
    assert set(zip(view.method, view.seed)) == {("sft", 1), ("rft", 0)}


def test_claims_without_prior_rows_are_undecided_and_printed_as_such():
    m = synthetic()
    t = analysis.claims(m[~m.metric.str.startswith("prior")])
    c3 = t[(t.claim == "C3") & (t.quantity == "RFT prior lost at the end")]
    assert c3.met.isna().all() and c3.value.isna().all()
    line = [x for x in analysis.claims_markdown(t).splitlines() if "RFT prior lost" in x][0]
    assert "not by step" not in line and "| - (step 20) n/a |" in line


def test_answer_shift_counts_what_the_tuned_model_answers_instead():
    def records(completions, right):
        return pd.DataFrame({"skill": ["grounding"] * 3 + ["ocr"], "question": ["q1", "q2", "q3", "q4"],
                             "answer": ["4", "4", "1", "9"], "completion": completions, "right": right})

    base = records(["<answer>4</answer>", "<answer>4</answer>", "<answer>2</answer>", "<answer> 9 </answer>"],
                   [True, True, False, True])
    tuned = records(["<answer>3</answer>", "<answer>3</answer>", "<answer>1</answer>", "9"],
                    [False, False, True, False])
    shift = analysis.answer_shift(base, tuned)
    first = shift.iloc[0]
    assert (first.skill, first.answer, first.base_given, first.tuned_given) == ("grounding", "4", "4", "3")
    assert (first["items"], first.lost, first.gained) == (2, 2, 0)
    ocr = shift[shift.skill == "ocr"].iloc[0]
    assert (ocr.base_given, ocr.tuned_given, ocr.lost) == ("9", "malformed", 1)
    assert shift.gained.sum() == 1 and shift["items"].sum() == 4
    with pytest.raises(ValueError, match="same items"):
        analysis.answer_shift(base, tuned.iloc[:3])


def test_answer_shift_writes_as_its_results_table(tmp_path):
    from jigsaw_lib import results

    records = pd.DataFrame({"skill": ["ocr"], "question": ["q"], "answer": ["9"], "completion": ["<answer>3</answer>"],
                            "right": [False]})
    shift = analysis.answer_shift(records, records).assign(method="rft", seed=0)
    long = shift.melt(id_vars=["method", "seed", "skill", "answer", "base_given", "tuned_given"],
                      value_vars=["items", "lost", "gained"], var_name="metric")
    written = results.read("answer_shift", results.write(long, "answer_shift", tmp_path).parent)
    assert dict(zip(written.metric, written.value)) == {"items": 1, "lost": 0, "gained": 0}
