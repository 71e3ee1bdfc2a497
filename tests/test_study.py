"""Notebook 02's plan of runs, and running it in turn or side by side in worker processes."""

import pandas as pd
import pytest

from jigsaw_lib import config, study
from jigsaw_lib.models import TINY


def test_plan_lists_the_study_with_what_each_run_needs(tmp_path):
    jobs = study.plan("pocket", seeds=[0, 1], sft_lr_sweep=[1e-4, 3e-4], early_step=25, runs_dir=tmp_path)
    assert [j.name for j in jobs] == [
        "rft-seed0", "rollout_sft-seed0", "rollout_sft_early-seed0", "sft-seed0", "sft_matched-seed0",
        "rft-seed1", "rollout_sft-seed1", "rollout_sft_early-seed1", "sft-seed1", "sft_matched-seed1",
        "sft_lr0.0001-seed0", "sft_lr0.0003-seed0"]
    by = {j.name: j for j in jobs}
    assert by["rft-seed1"].cfg.save_steps == [25] and by["rft-seed1"].cfg.seed == 1
    assert by["rollout_sft-seed1"].needs == "rft-seed1"
    assert by["rollout_sft-seed1"].cfg.rollouts_from == str(tmp_path / "rft-seed1" / "final")
    assert by["rollout_sft_early-seed0"].cfg.rollouts_from == str(tmp_path / "rft-seed0" / "model-step25")
    assert by["sft_lr0.0001-seed0"].same_as is None and by["sft_lr0.0001-seed0"].cfg.learning_rate == 1e-4
    assert by["sft_lr0.0003-seed0"].same_as == "sft-seed0"  # the preset's lr: seed 0's sft run
    assert all(j.output_dir == tmp_path / j.name for j in jobs)
    # the control: SFT on answers with SFT on rollouts' settings, needing no RFT run
    control, rollouts = by["sft_matched-seed1"].cfg, by["rollout_sft-seed1"].cfg
    assert control.method == "sft" and by["sft_matched-seed1"].needs is None
    assert (control.learning_rate, control.max_steps, control.batch_size, control.n_train, control.seed) == (
        rollouts.learning_rate, rollouts.max_steps, rollouts.batch_size, rollouts.n_train, 1)


def test_the_control_follows_the_rollout_runs_overrides(tmp_path):
    jobs = study.plan("pocket", seeds=[0], methods=["sft", "sft_matched"], runs_dir=tmp_path,
                      overrides={"rollout_sft": {"learning_rate": 7e-5}, "sft": {"learning_rate": 1e-3}})
    by = {j.name: j.cfg for j in jobs}
    assert by["sft_matched-seed0"].learning_rate == 7e-5 and by["sft-seed0"].learning_rate == 1e-3


def test_plan_applies_overrides_and_rejects_bad_input(tmp_path):
    jobs = study.plan("pocket", seeds=[2], methods=["rft"], runs_dir=tmp_path, overrides={"rft": {"beta": 0.1}},
                      common={"eval_every": 5})
    assert [(j.name, j.cfg.beta, j.cfg.eval_every) for j in jobs] == [("rft-seed2", 0.1, 5)]
    with pytest.raises(ValueError, match="unknown method"):
        study.plan(methods=["rtf"], runs_dir=tmp_path)
    with pytest.raises(ValueError, match="add 'rft'"):
        study.plan(methods=["sft", "rollout_sft"], runs_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        study.plan(methods=["sft"], runs_dir=tmp_path, overrides={"stf": {}})
    with pytest.raises(ValueError, match="unknown config key"):
        study.plan(methods=["sft"], runs_dir=tmp_path, common={"lr": 1e-3})
    # the sweep's point at the preset's lr has no sft run of seed 0 to reuse here: it is a run of its own
    assert study.plan(methods=["rft"], sft_lr_sweep=[3e-4], runs_dir=tmp_path)[-1].same_as is None


def test_run_rejects_a_plan_it_cannot_run(tmp_path):
    jobs = study.plan(seeds=[0], sft_lr_sweep=[3e-4], runs_dir=tmp_path)
    with pytest.raises(ValueError, match="not in the plan"):
        study.run([j for j in jobs if j.name != "rft-seed0"])
    with pytest.raises(ValueError, match="lists after it"):
        study.run(jobs[1:] + jobs[:1])
    with pytest.raises(ValueError, match="one run folder"):
        study.run([jobs[0], jobs[0]])
    with pytest.raises(ValueError, match="workers"):
        study.run(jobs, workers=0)
    chained = study.Job(jobs[0].cfg, tmp_path / "x", same_as=jobs[-1].name)
    chained.cfg = config.make("sft", seed=0, name="sft_again")
    with pytest.raises(ValueError, match="reuses another run"):
        study.run(jobs + [chained])
    assert study.run([]).empty


def test_next_jobs_start_what_others_wait_for_first(tmp_path):
    jobs = study.plan(seeds=[0, 1, 2], sft_lr_sweep=[1e-4], runs_dir=tmp_path)
    names = lambda js: [j.name for j in js]  # noqa: E731
    pending = list(jobs)
    assert names(study.next_jobs(pending, 0, {}, 2)) == ["rft-seed0", "rft-seed1"]
    assert names(study.next_jobs(pending, 1, {}, 2)) == ["rft-seed0"]
    assert study.next_jobs(pending, 2, {}, 2) == []
    pending = [j for j in jobs if j.name not in ("rft-seed0", "rft-seed1")]
    # rft-seed0 done: the last RFT run first, then the rollout runs it freed, before the plain SFT runs
    assert names(study.next_jobs(pending, 0, {"rft-seed0"}, 3)) == [
        "rft-seed2", "rollout_sft-seed0", "rollout_sft_early-seed0"]
    # rollout runs never start before their RFT run is done
    started = names(study.next_jobs(pending, 0, {"rft-seed0"}, 99))
    assert not {"rollout_sft-seed1", "rollout_sft_early-seed1", "rollout_sft-seed2"} & set(started)
    assert started[-1] == "sft_lr0.0001-seed0"


class Live:
    """What study.run hands a LiveCurves: the finished runs and the running ones."""

    def __init__(self):
        self.seen, self.finished = [], None

    def update(self, run):
        if run is not None:
            self.seen.append(set(run.method))

    def draw(self, run):  # at the end: every run, finished
        self.last = run

    def on_step_end(self, *args, **kwargs):  # in turn, it is a trainer callback
        pass


def _values(metrics):
    m = metrics[metrics.metric != "wall_seconds"]  # a timing; the trainer's logs (train/...) included
    return m.set_index(["method", "seed", "step", "metric"])["value"].sort_index()


@pytest.mark.slow
def test_runs_side_by_side_equal_runs_in_turn(tiny_pocket_dir, tmp_path):
    tiny = dict(base=str(tiny_pocket_dir), image_size=TINY.image_size, n_train=16, max_steps=3, batch_size=2,
                eval_every=1, eval_jigsaw=4, eval_prior=2, eval_kl=2, probe_jigsaw=5, probe_prior=3,
                max_completion_length=8)

    def jobs(folder):
        return study.plan("pocket", seeds=[0, 1], methods=["rft", "sft"], sft_lr_sweep=[3e-4, 3e-3],
                          early_step=1, runs_dir=tmp_path / folder, common=tiny,
                          overrides={"rft": {"num_generations": 2}})

    in_turn = study.run(jobs("in_turn"), workers=1)
    live = Live()
    side = study.run(jobs("side"), workers=2, live=live, poll_seconds=0.5)
    assert list(side.drop_duplicates(["method", "seed"])[["method", "seed"]].itertuples(index=False)) == [
        ("rft", 0), ("sft", 0), ("rft", 1), ("sft", 1), ("sft_lr0.0003", 0), ("sft_lr0.003", 0)]
    pd.testing.assert_series_equal(_values(side), _values(in_turn))
    # the sweep's preset point is seed 0's sft run, relabelled
    seed0 = side[side.seed == 0]
    sft0 = _values(seed0[seed0.method == "sft"]).droplevel("method")
    assert len(sft0) and sft0.equals(_values(seed0[seed0.method == "sft_lr0.0003"]).droplevel("method"))
    assert "'loss'" in (tmp_path / "side" / "sft-seed1" / "run.log").read_text()  # the trainer's logs
    assert (tmp_path / "side" / "rft-seed1" / "model-step1" / "config.json").exists()
    assert live.seen and all(s <= {"rft", "sft", "sft_lr0.003"} for s in live.seen)  # redrawn from running runs
    assert live.finished is None and set(live.last.method) == {"rft", "sft", "sft_lr0.003"}
    assert len(live.last) == len(side[side.method != "sft_lr0.0003"])


@pytest.mark.slow
def test_a_failing_run_names_itself(tiny_pocket_dir, tmp_path):
    jobs = study.plan("pocket", seeds=[0], methods=["sft"], sft_lr_sweep=[1e-3], runs_dir=tmp_path,
                      common=dict(base=str(tiny_pocket_dir), image_size=TINY.image_size, n_train=8, max_steps=1,
                                  batch_size=2, eval_jigsaw=2, eval_prior=1, eval_kl=1, probe_jigsaw=0,
                                  probe_prior=0, max_completion_length=4))
    jobs[1].cfg.base = str(tmp_path / "no-such-base")
    with pytest.raises(RuntimeError, match=r"run sft_lr0.001-seed0 failed .*run.log"):
        study.run(jobs, workers=2, poll_seconds=0.5)
    assert "no-such-base" in (tmp_path / "sft_lr0.001-seed0" / "run.log").read_text()
