"""The study's three methods end to end on a tiny pocket model: tracked, checkpointed, resumable."""

import re
import shutil

import pandas as pd
import pytest
import torch
from transformers import TrainerCallback

from jigsaw_lib import config, dynamics, models, train, world
from jigsaw_lib.models import TINY

pytestmark = pytest.mark.slow


def tiny(method, base, **kw):
    settings = dict(base=str(base), image_size=TINY.image_size, n_train=32, max_steps=4, batch_size=4,
                    eval_every=2, eval_jigsaw=4, eval_prior=2, eval_kl=2, probe_jigsaw=5, probe_prior=3,
                    max_completion_length=8)
    if method == "rft":
        settings.update(num_generations=4, batch_size=2)
    return config.make(method, "pocket", **{**settings, **kw})


def _values(metrics):
    m = metrics[~metrics.metric.isin(["wall_seconds"]) & ~metrics.metric.str.startswith("train/")]
    return m.set_index(["step", "metric"])["value"].sort_index()


def test_sft_run_tracks_every_metric(tiny_pocket_dir, tmp_path):
    # a model is kept at each save step, an evaluation step (2) or not (3)
    result = train.run_sft(tiny("sft", tiny_pocket_dir, save_steps=[2, 3]), tmp_path / "sft", progress=False)
    m = result.metrics
    assert sorted(m.step.unique()) == [0, 1, 2, 3, 4]  # 0, 2, 4 measured; train/ logs every step
    measured = m[m.step.isin([0, 2, 4])]
    for metric in ["jigsaw_exact", "jigsaw_hit", "jigsaw_well_formed", "jigsaw_row_hit", "jigsaw_col_hit",
                   "prior_mean", "kl_to_base", "wall_seconds", "prior/ocr", "prior/ordering"]:
        assert (measured.metric == metric).sum() == 3, metric
    # the larger probe: the base and the last model only, the same measurement on more items
    probe = m[m.metric.str.startswith("probe/")]
    assert sorted(probe.step.unique()) == [0, 4]
    assert set(probe.metric) == {"probe/jigsaw_exact", "probe/jigsaw_hit", "probe/jigsaw_well_formed",
                                 "probe/prior_mean"} | {f"probe/prior/{s}" for s in world.SKILLS}
    assert probe["value"].between(0, 1).all()
    assert m[(m.step == 0) & (m.metric == "kl_to_base")]["value"].item() == pytest.approx(0, abs=1e-5)
    assert m[(m.step == 4) & (m.metric == "kl_to_base")]["value"].item() > 0
    assert set(m.method) == {"sft"} and set(m.seed) == {0}
    on_disk = pd.read_csv(result.output_dir / "metrics.csv")
    assert len(on_disk) == len(m)
    assert (result.output_dir / "model-step2" / "config.json").exists()
    assert (result.output_dir / "model-step3" / "config.json").exists()
    assert not (result.output_dir / "model-step4").exists()
    assert (result.final / "model.safetensors").exists()


def test_trl_settings_override_the_runner_defaults(tiny_pocket_dir, tmp_path):
    # e.g. no resumable checkpoints at paper scale, where fp32 weights and AdamW states of 3B take 45 GB each
    cfg = tiny("sft", tiny_pocket_dir, max_steps=2, trl={"save_strategy": "no", "lr_scheduler_type": "linear"})
    seen = {}

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["scheduler"] = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)

    result = train.run_sft(cfg, tmp_path / "sft", progress=False, prior=False, callbacks=[Spy()])
    assert not list((result.output_dir / "trainer").glob("checkpoint-*"))
    assert (result.final / "model.safetensors").exists()
    assert seen["scheduler"] == "linear"
    # but not what the config's own fields decide: the recorded config must be what ran
    with pytest.raises(ValueError, match="learning_rate"):
        train.run_sft(tiny("sft", tiny_pocket_dir, trl={"learning_rate": 1.0}), tmp_path / "bad", progress=False)


FROZEN = {  # what each freeze option keeps fixed: the parameter-name patterns of the grafts' parts
    "freeze_vision": dynamics.PARTS["tower"],
    "freeze_embeddings": dynamics.SUBPARTS["embeddings"],  # one tied matrix
}


@pytest.mark.parametrize("option", sorted(FROZEN))
@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_options_keep_their_part_fixed_and_train_the_rest(tiny_pocket_dir, tmp_path, option, freeze):
    from jigsaw_lib.models import load

    cfg = tiny("sft", tiny_pocket_dir, max_steps=2, learning_rate=1e-2, **{option: freeze})
    result = train.run_sft(cfg, tmp_path / "sft", progress=False, prior=False)
    base = load(tiny_pocket_dir)[0].state_dict()
    after = load(result.final)[0].state_dict()
    moved = {k: not torch.equal(after[k], base[k]) for k in base}
    part = [k for k in base if re.search(FROZEN[option], k)]
    assert part and any(".visual.merger." in k for k in base)
    assert any(moved[k] for k in part) != freeze
    assert any(moved[k] for k in base if ".visual.merger." in k)
    assert any(moved[k] for k in base if ".language_model.layers." in k)


@pytest.mark.parametrize("method", ["sft", "rft"])
def test_vision_lr_scale_gives_the_tower_its_own_learning_rate(tiny_pocket_dir, tmp_path, method):
    lr, scale = 1e-2, 0.25
    seen = {}

    class Spy(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            groups = [(g["lr"], {id(p) for p in g["params"]}) for g in optimizer.param_groups]
            tower = {id(p) for k, p in model.named_parameters() if re.search(dynamics.PARTS["tower"], k)}
            trained = {id(p) for p in model.parameters() if p.requires_grad}
            seen["lrs"] = {rate for rate, ids in groups if ids & tower}, {rate for rate, ids in groups if ids - tower}
            seen["covered"] = set().union(*(ids for _, ids in groups)) == trained

        def on_log(self, args, state, control, logs=None, **kwargs):
            seen["logged"] = logs.get("learning_rate", seen.get("logged"))  # the run's rate, not the tower's

    cfg = tiny(method, tiny_pocket_dir, max_steps=1, learning_rate=lr, freeze_vision=False,
                vision_lr_scale=scale)
    run = train.run_sft if method == "sft" else train.run_rft
    run(cfg, tmp_path / method, progress=False, prior=False, callbacks=[Spy()])
    assert seen["lrs"] == ({lr * scale}, {lr}) and seen["covered"] and seen["logged"] == pytest.approx(lr)


def test_runs_use_the_world_their_base_was_pretrained_in(tiny_pocket_dir, tmp_path):
    import json
    import shutil

    from jigsaw_lib import pretrain, world

    base = tmp_path / "base"
    shutil.copytree(tiny_pocket_dir, base)
    # a record of an older base: its changes to the first world (small digits), plus one of its own
    (base / pretrain.INFO).write_text(json.dumps({"config": {"world": {"jigsaw_wording": True}}}))
    seen = []

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            settings = world.SETTINGS
            seen.append((settings.jigsaw_wording, settings.digit_pixel, settings.ordering_paraphrases))

    train.run_sft(tiny("sft", base, max_steps=1), tmp_path / "sft", progress=False, prior=False, callbacks=[Spy()])
    assert seen == [(True, 1 / 24, False)] and world.SETTINGS == world.WorldSettings()


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_interrupted_run_resumes_to_the_same_metrics(tiny_pocket_dir, tmp_path):
    full = train.run_sft(tiny("sft", tiny_pocket_dir), tmp_path / "full", progress=False).metrics
    train.run_sft(tiny("sft", tiny_pocket_dir), tmp_path / "cut", progress=False, callbacks=[StopAt(2)])
    resumed = train.run_sft(tiny("sft", tiny_pocket_dir), tmp_path / "cut", progress=False, resume=True).metrics
    pd.testing.assert_series_equal(_values(full), _values(resumed), check_exact=False, rtol=1e-4, atol=1e-5)


def test_resuming_a_finished_run_changes_nothing(tiny_pocket_dir, tmp_path, monkeypatch):
    # 32 puzzles, 4 a step: 4 steps end inside the first epoch, where transformers 5.24 would resume the
    # finished run and take a fifth, unmeasured step. Its final model is removed first, as if the run stopped
    # before writing it: it is written again from the last checkpoint.
    cfg = tiny("sft", tiny_pocket_dir)
    done = train.run_sft(cfg, tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in models.load(done.final)[0].state_dict().items()}
    shutil.rmtree(done.final)
    again = train.run_sft(cfg, tmp_path / "run", progress=False, resume=True)
    after = models.load(again.final)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    pd.testing.assert_frame_equal(done.metrics, again.metrics, check_dtype=False)
    assert again.metrics.step.max() == cfg.max_steps
    with pytest.raises(ValueError, match="past max_steps=3"):  # a finished run resumed with fewer steps
        train.run_sft(tiny("sft", tiny_pocket_dir, max_steps=3), tmp_path / "run", progress=False, resume=True)
    # SFT on rollouts, finished, does not sample its rollouts again
    monkeypatch.setattr(train, "collect_rollouts", lambda *a, **k: pytest.fail("sampled the rollouts again"))
    ro = train.run_rollout_sft(tiny("rollout_sft", tiny_pocket_dir, rollouts_from=str(tiny_pocket_dir)),
                               tmp_path / "run", progress=False, resume=True)
    pd.testing.assert_frame_equal(done.metrics, ro.metrics, check_dtype=False)


def test_rft_run_logs_rewards_and_collapse_signals(tiny_pocket_dir, tmp_path):
    result = train.run_rft(tiny("rft", tiny_pocket_dir, max_steps=2), tmp_path / "rft", progress=False)
    metrics = set(result.metrics.metric)
    assert {"train/frac_reward_zero_std", "train/entropy", "train/reward", "jigsaw_exact", "kl_to_base"} <= metrics


def test_rollout_sft_needs_correct_rollouts(tiny_pocket_dir, tmp_path):
    # a random model never answers a puzzle correctly: the run says so instead of training on nothing
    cfg = tiny("rollout_sft", tiny_pocket_dir, rollouts_from=str(tiny_pocket_dir), n_train=4, rollouts_per_prompt=2)
    with pytest.raises(ValueError, match="no correct rollout"):
        train.run_rollout_sft(cfg, tmp_path / "ro", progress=False)
    with pytest.raises(ValueError, match="rollouts_from"):
        train.run_rollout_sft(tiny("rollout_sft", tiny_pocket_dir), tmp_path / "ro2", progress=False)


def test_collect_rollouts_keeps_distinct_correct_ones(tiny_pocket_dir, monkeypatch):
    data = train.train_dataset(tiny("sft", tiny_pocket_dir, n_train=3))
    sol = [" ".join(map(str, s)) for s in data["solution"]]
    fake = [[f"<answer>{sol[0]}</answer>", f"<answer>{sol[0]}</answer>", "<answer>1</answer>"],
            ["nope", "nope", "nope"],
            [f"<answer>{sol[2]}</answer>", "junk", f" <answer>{sol[2]}</answer>"]]
    monkeypatch.setattr("jigsaw_lib.evaluate.generate", lambda *a, **k: fake)
    kept, stats = train.collect_rollouts(tiny_pocket_dir, data, per_prompt=3, progress=False)
    texts = [row[0]["content"][0]["text"] for row in kept["completion"]]
    assert texts == [f"<answer>{sol[0]}</answer>", f"<answer>{sol[2]}</answer>", f" <answer>{sol[2]}</answer>"]
    assert kept["solution"] == [data["solution"][0], data["solution"][2], data["solution"][2]]
    assert stats == {"prompts": 3, "rollouts": 9, "correct_distinct": 3, "prompts_with_correct": 2}


def test_collect_rollouts_is_seeded(tiny_pocket_dir, monkeypatch):
    # the same rollouts whatever the process drew before, and the process's random state left as it was
    data = train.train_dataset(tiny("sft", tiny_pocket_dir, n_train=16))
    sol = [" ".join(map(str, s)) for s in data["solution"]]

    def fake(model, processor, prompts, images, num_samples=1, **kw):
        return [[f"<answer>{sol[i]}</answer>" if torch.rand(1).item() < 0.5 else "<answer>1</answer>"
                 for _ in range(num_samples)] for i in range(len(prompts))]

    monkeypatch.setattr("jigsaw_lib.evaluate.generate", fake)
    first = train.collect_rollouts(tiny_pocket_dir, data, per_prompt=2, progress=False, seed=3)[0]
    torch.rand(100)
    state = torch.get_rng_state()
    second = train.collect_rollouts(tiny_pocket_dir, data, per_prompt=2, progress=False, seed=3)[0]
    assert first["solution"] == second["solution"] and first["completion"] == second["completion"]
    assert torch.equal(state, torch.get_rng_state())
    other = train.collect_rollouts(tiny_pocket_dir, data, per_prompt=2, progress=False, seed=4)[0]
    assert other["solution"] != first["solution"]  # the seed is used (a match by chance: about 5e-4)


def test_cli_under_accelerate_launch_with_two_cpu_processes(tiny_pocket_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    accelerate = Path(sys.executable).with_name("accelerate")
    out = tmp_path / "ddp"
    cmd = [str(accelerate), "launch", "--config_file", str(root / "configs/accelerate/cpu_2proc.yaml"),
           "-m", "jigsaw_lib.train", "sft", "--preset", "pocket", "--no-prior", "--output-dir", str(out),
           "--set", f"base={tiny_pocket_dir}", "--set", f"image_size={TINY.image_size}", "--set", "max_steps=2",
           "--set", "batch_size=4", "--set", "n_train=16", "--set", "eval_every=2", "--set", "eval_jigsaw=4",
           "--set", "eval_kl=2", "--set", "max_completion_length=8", "--set", "probe_jigsaw=0", "--set", "probe_prior=0"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "process 0 of 2 finished sft" in run.stdout and "process 1 of 2 finished sft" in run.stdout
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics[metrics.metric == "jigsaw_exact"].step) == [0, 2]
    assert (out / "final" / "model.safetensors").exists()


def test_puzzle_world_draws_the_puzzles_only(tiny_pocket_dir, tmp_path, monkeypatch):
    from jigsaw_lib import evaluate, world

    cfg = tiny("sft", tiny_pocket_dir, n_train=3, puzzle_world={"light_left_rate": 1.0})
    data = train.train_dataset(cfg)
    with world.configure(light_left_rate=1.0):
        expected = train.train_dataset(tiny("sft", tiny_pocket_dir, n_train=3, puzzle_world={}))
    plain = train.train_dataset(tiny("sft", tiny_pocket_dir, n_train=3, puzzle_world={}))
    assert [im.tobytes() for im in data["image"]] == [im.tobytes() for im in expected["image"]]
    assert [im.tobytes() for im in data["image"]] != [im.tobytes() for im in plain["image"]]
    assert world.SETTINGS.light_left_rate == 0.5  # the change holds inside the block only
    # in a run, held-out puzzles and the KL probe are drawn in the puzzle world, prior skills in the base's
    seen = []
    eval_set, skills = evaluate.jigsaw_eval_set, evaluate.evaluate_skills
    monkeypatch.setattr(evaluate, "jigsaw_eval_set",
                        lambda *a, **k: seen.append(("puzzles", world.SETTINGS.light_left_rate)) or eval_set(*a, **k))
    monkeypatch.setattr(evaluate, "evaluate_skills",
                        lambda *a, **k: seen.append(("prior", world.SETTINGS.light_left_rate)) or skills(*a, **k))
    train.run_sft(tiny("sft", tiny_pocket_dir, max_steps=1, puzzle_world={"light_left_rate": 1.0}), tmp_path / "run",
                  progress=False)
    assert {kind for kind, _ in seen} == {"puzzles", "prior"}
    assert all(rate == (1.0 if kind == "puzzles" else 0.5) for kind, rate in seen)


def test_the_base_is_probed_once_per_process(tiny_pocket_dir, tmp_path, monkeypatch):
    from jigsaw_lib import evaluate, tracking

    monkeypatch.setattr(tracking, "_BASE_MEASURES", {})
    sizes = []
    measure = evaluate.measure
    monkeypatch.setattr(evaluate, "measure", lambda m, p, cfg, nj, np_, **k: sizes.append((nj, np_)) or
                        measure(m, p, cfg, nj, np_, **k))
    cfg = tiny("sft", tiny_pocket_dir, max_steps=2)
    first = train.run_sft(cfg, tmp_path / "a", progress=False).metrics
    second = train.run_sft(cfg, tmp_path / "b", progress=False).metrics
    assert sizes.count((5, 3)) == 3  # the base once, each final model once
    assert sizes.count((4, 2)) == 3  # the runs' own evaluations too: the base once, each run's step 2
    base_rows = lambda m: m[(m.step == 0) & ~m.metric.isin(["wall_seconds"])].set_index("metric")["value"]
    pd.testing.assert_series_equal(base_rows(first), base_rows(second))
    probe = lambda m, step: m[(m.step == step) & m.metric.str.startswith("probe/")].set_index("metric")["value"]
    pd.testing.assert_series_equal(probe(first, 2), probe(second, 2))  # a seeded run: the same final model
    # what the cache gave is the base measured afresh
    from jigsaw_lib.models import load
    from jigsaw_lib.pretrain import base_world

    model, processor = load(tiny_pocket_dir)
    with base_world(tiny_pocket_dir):
        fresh = dict(measure(model, processor, cfg, 5, 3, axes=False))
    assert probe(second, 0).rename(lambda k: k.removeprefix("probe/")).to_dict() == pytest.approx(fresh)
    # other probe sizes are another measurement
    train.run_sft(tiny("sft", tiny_pocket_dir, max_steps=2, probe_jigsaw=4), tmp_path / "c", progress=False)
    assert sizes.count((4, 3)) == 2
