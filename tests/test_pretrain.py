"""Pretraining the pocket base: real TRL SFT on the skill mixture, cached, deterministic."""

import json
from pathlib import Path

import pytest
import torch

from jigsaw_lib import paths, pretrain
from jigsaw_lib.models import TINY, load

pytestmark = pytest.mark.slow


def _config(**kw):
    kw = {"steps": 3, "stages": None, "vision_steps": 0, "freeze_vision": False, **kw}
    return pretrain.PretrainConfig(spec=TINY, batch_size=4, warmup_steps=1, **kw)


def test_pretrain_trains_caches_and_is_deterministic(tmp_path):
    a = pretrain.pretrain(_config(), tmp_path / "a", progress=False)
    info = pretrain.info(a)
    assert info["config"]["steps"] == 3 and info["seconds"] > 0
    assert len([h for h in info["log"] if "loss" in h]) >= 1
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    assert pretrain.pretrain(_config(), tmp_path / "a", progress=False) == a  # cached: not retrained
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    b = pretrain.pretrain(_config(), tmp_path / "b", progress=False)
    ma, _ = load(a)
    mb, _ = load(b)
    init, _ = load(a / "init")
    sa, sb, si = ma.state_dict(), mb.state_dict(), init.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
    assert not all(torch.equal(sa[k], si[k]) for k in sa)  # and training moved them
    # a different setting is a different checkpoint: retrained, not taken from the cache
    c = pretrain.pretrain(_config(learning_rate=5e-4), tmp_path / "a", progress=False)
    assert json.loads((c / pretrain.INFO).read_text())["config"]["learning_rate"] == 5e-4


def test_a_base_continued_from_a_stage_is_the_base_trained_from_scratch(tmp_path):
    """E22 is E21 continued from stage 6: continuing a base trained by the first k stages gives, on one machine,
    the weights that training every stage from scratch gives."""
    stages = [{"steps": 2, "mix": {"counting": 1}}, {"steps": 2, "mix": {"counting": 1, "ordering": 1}}]
    full = _config(stages=stages, steps=None)
    whole = pretrain.pretrain(full, tmp_path / "whole", progress=False)
    first = pretrain.pretrain(_config(stages=stages[:1], steps=None), tmp_path / "first", progress=False)
    with pytest.raises(ValueError, match="not trained by this config's first 1 stages"):
        pretrain.pretrain(_config(stages=stages, steps=None, learning_rate=5e-4), tmp_path / "x", start_stage=1,
                          init=first, progress=False)
    with pytest.raises(FileNotFoundError, match="needs init="):
        pretrain.pretrain(full, tmp_path / "x", start_stage=1, progress=False)
    with pytest.raises(ValueError, match="must name a later stage"):
        pretrain.pretrain(full, tmp_path / "x", start_stage=2, init=first, progress=False)
    continued = pretrain.pretrain(full, tmp_path / "continued", start_stage=1, init=first, progress=False)
    sw, sc = load(whole)[0].state_dict(), load(continued)[0].state_dict()
    assert all(torch.equal(sw[k], sc[k]) for k in sw)
    record = pretrain.info(continued)
    assert pretrain._cached(continued, full) and record["continued"]["start_stage"] == 1
    assert [h["stage"] for h in record["log"]] == [h["stage"] for h in pretrain.info(whole)["log"]]


def test_the_shipped_base_is_what_the_default_config_trains():
    """The repository ships the pocket base: `make reproduce` loads it instead of training it for 30 minutes, and
    only while its recorded config is PretrainConfig()'s. Changing the defaults without shipping the base they
    train would retrain it in every fresh clone (and the results would come from another base)."""
    shipped = paths.ROOT / "checkpoints" / "pocket-base"
    assert pretrain._cached(shipped, pretrain.PretrainConfig()), "ship the base PretrainConfig() trains"
    assert pretrain.info(shipped)["seconds"] > 0
    from jigsaw_lib.evaluate import evaluate_skills

    model, processor = load(shipped)
    with pretrain.base_world(shipped):  # the trained weights, not an untrained build: it counts (0.925 on 200)
        table = evaluate_skills(model, processor, 40, skills=["counting"], progress=False)
    assert table.value.iloc[0] >= 0.8


def test_the_command_trains_candidates_at_other_seeds_beside_the_shipped_base(tmp_path, monkeypatch, capsys):
    """`python -m jigsaw_lib.pretrain --seed S` makes a candidate base in its own folder (the shipped files and
    their cache key stay), and prints what a base is chosen by: skills and the 2x2 reachability numbers."""
    tiny = pretrain.pretrain(_config(), tmp_path / "tiny", progress=False)
    calls = []
    monkeypatch.setattr(pretrain, "pretrain", lambda config, out_dir, retrain=False, **continued: calls.append(
        (config.seed, Path(out_dir), retrain, *continued.values())) or tiny)
    monkeypatch.setattr(pretrain.paths, "CHECKPOINTS", tmp_path)
    assert pretrain.main(["--seed", "5", "--n", "2"]) == 0
    assert calls == [(5, tmp_path / "pocket-base-seed5", False)]
    out = capsys.readouterr().out
    for word in ("counting", "jigsaw_2x2 ", "jigsaw_2x2_study", "well_formed", "pass_at_8", "col_hit",
                 "the ordering prompt", "example -> the ordering skill's"):
        assert word in out
    pretrain.main(["--retrain", "--n", "2"])  # the default seed: the shipped base's folder
    assert calls[-1] == (pretrain.PretrainConfig().seed, pretrain.DEFAULT_DIR, True)
    pretrain.main(["--retrain", "--n", "2", "--from-stage", "6", "--init", "e21"])  # how E22 was made from E21
    assert calls[-1] == (pretrain.PretrainConfig().seed, pretrain.DEFAULT_DIR, True, 6, "e21")


def test_pretrain_config_errors():
    with pytest.raises(ValueError, match="unknown skill"):
        pretrain.PretrainConfig(mix={"grounding": 1, "jugglng": 1})
    with pytest.raises(ValueError, match="steps"):
        pretrain.PretrainConfig(steps=0)
    with pytest.raises(FileNotFoundError, match="no pretrained base model"):
        pretrain.info("/nonexistent/base")


def test_curriculum_runs_its_stages_on_fresh_items(tmp_path, monkeypatch):
    from jigsaw_lib import world

    stages = [{"steps": 2, "mix": {"counting": 1, "ordering": 1}},
              {"steps": 3, "mix": {"counting": 1, "perception": 1}}]
    config = _config(stages=stages, steps=None)
    assert config.steps == 5 and [s for s, _ in config.plan()] == [2, 3]
    built = []
    original = world.build_dataset

    def spy(counts, *a, **kw):
        built.append((dict(counts), kw["start"]))
        return original(counts, *a, **kw)

    monkeypatch.setattr(world, "build_dataset", spy)
    out = pretrain.pretrain(config, tmp_path / "c", progress=False)
    # the second stage starts after the counting items of the first: no item is trained on twice
    assert built[0] == ({"counting": 4, "ordering": 4}, {"counting": 0, "ordering": 0})
    assert built[1] == ({"counting": 6, "perception": 6}, {"counting": 4, "perception": 0})
    log = pretrain.info(out)["log"]
    assert {h["stage"] for h in log} == {0, 1} and max(h["step"] for h in log) == 5  # steps count on across stages
    assert "stages" not in pretrain.PretrainConfig(stages=None).to_json()  # a plain mixture keeps its cache key


def test_the_default_is_the_shipped_curriculum_and_steps_scale_it():
    from jigsaw_lib import world

    default = pretrain.PretrainConfig()
    assert default.stages == pretrain.CURRICULUM and default.steps == 3200
    assert default.vision_steps == 1500 and default.freeze_vision and default.seed == 1
    assert default.to_json()["world"] == world.resolve({"hallucination_echo": True, "ordering_random_example": True,
                                                        "ordering_varied_wording": True})
    small = pretrain.PretrainConfig(steps=64)  # the same schedule in small: each stage keeps its share
    assert [s["steps"] for s in small.stages] == [8, 6, 10, 8, 8, 8, 16] and small.steps == 64
    assert [s["mix"] for s in small.stages] == [s["mix"] for s in pretrain.CURRICULUM]
    assert [s.get("world") for s in small.stages] == [s.get("world") for s in pretrain.CURRICULUM]
    assert [s["steps"] for s in pretrain.PretrainConfig(steps=3201).stages] == [400, 300, 500, 400, 400, 400, 801]
    assert [s["steps"] for s in pretrain.PretrainConfig(steps=8).stages] == [1, 1, 1, 1, 1, 1, 2]
    assert pretrain.smoke_config().steps == 7 and pretrain.smoke_config().vision_steps == 2
    assert [s["steps"] for s in pretrain.PretrainConfig(stages=pretrain.E4_CURRICULUM, steps=1601).stages] == [
        401, 400, 400, 400]  # the first shipped base's schedule scales the same way
    # E4's config writes no keys for the settings added after it (its cache key as then) and reads back as it was,
    # although today's defaults of those settings differ
    e4 = pretrain.PretrainConfig(stages=pretrain.E4_CURRICULUM, vision_steps=0, freeze_vision=False, world={}, seed=0)
    assert not {"vision_steps", "freeze_vision", "group_by_length"} & set(e4.to_json())
    with pytest.raises(ValueError, match="fewer than the curriculum's 7 stages"):
        pretrain.PretrainConfig(steps=6)
    assert pretrain.PretrainConfig(stages=None).steps == 2000
    # a record reads back to the config it came from: curricula, single mixtures, older records
    single = pretrain.PretrainConfig(stages=None, steps=700, world={"digit_pixel": 1 / 24})
    for config in (default, small, single, e4):
        assert pretrain.PretrainConfig.from_json(json.loads(json.dumps(config.to_json()))).to_json() == config.to_json()
    older = {k: v for k, v in single.to_json().items() if k != "world"}  # written before worlds were recorded
    assert pretrain.PretrainConfig.from_json(older).world == world.resolve({}, world.FIRST_WORLD)


def test_curriculum_errors():
    with pytest.raises(ValueError, match="stage 1"):
        pretrain.PretrainConfig(stages=[{"steps": 2, "mix": {"ordering": 1}}, {"steps": 0, "mix": {"ordering": 1}}])
    with pytest.raises(ValueError, match="unknown skill"):
        pretrain.PretrainConfig(stages=[{"steps": 2, "mix": {"jugglng": 1}}])


def test_a_base_records_and_is_trained_in_its_world(tmp_path, monkeypatch):
    from jigsaw_lib import world

    changes = {"digit_pixel": 1 / 16, "sign_inside": True, "ordering_grids": [[[3, 3], 1.0]]}
    config = _config(world=changes)
    assert config.to_json()["world"] == world.resolve(changes)  # recorded in full
    assert _config(world={}).to_json()["world"] == world.resolve({})
    # tuples, ints and lists name the same world: one cache key, also after a JSON round trip
    same = _config(world={"digit_pixel": 0.0625, "sign_inside": 1, "ordering_grids": (((3, 3), 1),)})
    assert same.to_json() == config.to_json() == json.loads(json.dumps(config.to_json()))
    seen = []
    original = world.build_dataset

    def spy(*a, **kw):
        seen.append(world.SETTINGS)
        return original(*a, **kw)

    monkeypatch.setattr(world, "build_dataset", spy)
    out = pretrain.pretrain(config, tmp_path / "w", progress=False)
    assert seen and all(s.digit_pixel == 1 / 16 and s.ordering_grids == (((3, 3), 1.0),) for s in seen)
    assert world.SETTINGS == world.WorldSettings()  # the default world again afterwards
    assert pretrain._cached(out, config) and not pretrain._cached(out, _config())
    assert pretrain.world_of(out) == world.resolve(changes) and pretrain.world_of(tmp_path) == {}
    with pretrain.base_world(out):  # evaluating a base asks its items as it learned them
        assert world.SETTINGS.digit_pixel == 1 / 16 and world.SETTINGS.ordering_grids == (((3, 3), 1.0),)
    assert world.SETTINGS == world.WorldSettings()
    # a record written before the defaults changed holds only its changes to the first world, and reads so
    info = json.loads((out / pretrain.INFO).read_text())
    info["config"]["world"] = {}
    (out / pretrain.INFO).write_text(json.dumps(info))
    assert pretrain.world_of(out) == world.resolve({}, world.FIRST_WORLD)
    assert pretrain._cached(out, _config(world=world.FIRST_WORLD)) and not pretrain._cached(out, _config())
    with pytest.raises(ValueError, match="unknown world setting.*digit_pixels"):
        pretrain.PretrainConfig(world={"digit_pixels": 0.1})
    with pytest.raises(ValueError, match="sign_inside"):  # a larger sign must be kept inside the image
        pretrain.PretrainConfig(world={"digit_pixel": 0.1, "sign_inside": False})


def test_grouping_by_length_is_its_own_checkpoint(tmp_path, monkeypatch):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from jigsaw_lib import train

    # a base trained in mixed batches keeps its cache key; a grouped one is recorded as such
    assert "group_by_length" not in pretrain.PretrainConfig().to_json()
    grouped = _config(group_by_length=True)
    assert grouped.to_json()["group_by_length"] is True
    assert pretrain.PretrainConfig.from_json(grouped.to_json()).to_json() == grouped.to_json()
    assert pretrain.prompt_length([{"role": "user", "content": [{"type": "text", "text": "abc"},
                                                                {"type": "image", "text": None}]}]) == 3
    seen = []
    original = train.sft_trainer

    def spy(model, processor, data, out, **kw):
        trainer = original(model, processor, data, out, **kw)
        seen.append((kw, data, trainer._get_train_sampler(trainer.train_dataset)))
        return trainer

    monkeypatch.setattr(train, "sft_trainer", spy)
    out = pretrain.pretrain(grouped, tmp_path / "g", progress=False)
    kw, data, sampler = seen[0]
    assert kw["train_sampling_strategy"] == "group_by_length" and kw["remove_unused_columns"] is False
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == data["length"]
    assert data["length"] == [pretrain.prompt_length(p) for p in data["prompt"]]
    assert len(set(data["length"])) > 1  # the mixture's prompts do differ in length
    assert pretrain._cached(out, grouped) and not pretrain._cached(out, _config())
    # a record written before a setting existed reads as that setting's default: still the same checkpoint
    info = json.loads((out / pretrain.INFO).read_text())
    del info["config"]["weight_decay"]
    (out / pretrain.INFO).write_text(json.dumps(info))
    assert pretrain._cached(out, grouped) and not pretrain._cached(out, _config(group_by_length=True, weight_decay=0.1))


def test_a_stage_may_draw_its_items_in_a_changed_world(tmp_path, monkeypatch):
    from jigsaw_lib import world

    drill = {"max_objects": 1, "object_radius": (0.1, 0.05)}
    stages = [{"steps": 2, "mix": {"perception": 1}, "world": drill},
              {"steps": 2, "mix": {"perception": 1}, "world": {}}]
    config = _config(stages=stages, steps=None)
    normal = {"max_objects": 1, "object_radius": [0.1, 0.05]}  # one JSON-ready form: one cache key
    assert config.stage_world(0) == normal and config.stage_world(1) == {}
    assert "world" not in config.stages[1] and config.to_json() == _config(stages=[
        stages[0], {"steps": 2, "mix": {"perception": 1}}], steps=None).to_json()  # an empty change is none
    assert stages[0]["world"] is drill and drill["object_radius"] == (0.1, 0.05)  # the caller's stages untouched
    assert _config(stages=stages, steps=6).stages[0]["world"] == normal  # scaling keeps it
    seen = []
    original = world.build_dataset

    def spy(*a, **kw):
        seen.append(world.SETTINGS.max_objects)
        return original(*a, **kw)

    monkeypatch.setattr(world, "build_dataset", spy)
    pretrain.pretrain(config, tmp_path / "s", progress=False)
    assert seen == [1, 4] and world.SETTINGS.max_objects == 4
    with pytest.raises(ValueError, match="stage 0 of the curriculum: unknown world setting"):
        _config(stages=[{"steps": 2, "mix": {"perception": 1}, "world": {"max_object": 1}}], steps=None)
    with world.configure(digit_pixel=1 / 24, sign_inside=False):  # checked on the run's world, not the caller's
        _config(stages=[{"steps": 2, "mix": {"ocr": 1}, "world": {"digit_pixel": 1 / 16}}], steps=None)
    with pytest.raises(ValueError, match="optionally 'world'"):
        _config(stages=[{"steps": 2, "mix": {"perception": 1}, "worlds": {}}], steps=None)


def test_vision_pretraining_runs_first_and_is_its_own_checkpoint(tmp_path, monkeypatch):
    from jigsaw_lib import train, vision

    assert "vision_steps" not in _config().to_json()  # a base without it (E4) keeps its cache key
    config = _config(vision_steps=2)
    assert pretrain.PretrainConfig.from_json(config.to_json()).to_json() == config.to_json()
    order = []
    original = vision.pretrain_vision

    def spy(model, processor, steps, out, **kw):
        order.append(("vision", steps, kw["batch_size"]))
        return original(model, processor, steps, out, **kw)

    sft = train.sft_trainer
    monkeypatch.setattr(vision, "pretrain_vision", spy)
    monkeypatch.setattr(train, "sft_trainer", lambda *a, **kw: order.append("sft") or sft(*a, **kw))
    out = pretrain.pretrain(config, tmp_path / "v", progress=False)
    assert order == [("vision", 2, 4), "sft"]  # the tower first, then the skills
    record = pretrain.info(out)["vision"]
    assert set(record["accuracy"]) == {*vision.HEADS, "mean_colour_mae"} and record["seconds"] > 0
    assert pretrain._cached(out, config) and not pretrain._cached(out, _config())
    with pytest.raises(ValueError, match="vision_steps must be >= 0"):
        _config(vision_steps=-1)


def test_a_frozen_vision_tower_keeps_its_weights_while_the_rest_learns(tmp_path):
    config = _config(freeze_vision=True)
    assert config.to_json()["freeze_vision"] is True and "freeze_vision" not in _config().to_json()
    out = pretrain.pretrain(config, tmp_path / "f", progress=False)
    trained, _ = load(out)
    init, _ = load(out / "init")
    after, before = trained.state_dict(), init.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    tower = {k for k in after if k.startswith(("model.visual.patch_embed.", "model.visual.blocks."))}
    assert tower and not moved & tower  # patch embedding and blocks as they were
    assert any(k.startswith("model.visual.merger.") for k in moved)  # the projection learns
    assert any(k.startswith("model.language_model.") for k in moved)
