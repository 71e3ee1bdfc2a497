"""Run configs: presets per scale, overrides, and errors for unknown keys."""

import dataclasses

import pytest

from jigsaw_lib import config
from jigsaw_lib.models import PAPER_MODEL


def test_paper_presets_follow_the_paper():
    sft, rft = config.make("sft", "paper"), config.make("rft", "paper")
    assert sft.base == rft.base == PAPER_MODEL
    assert sft.grids == rft.grids == [[3, 3]]
    assert sft.learning_rate == 2e-5 and rft.learning_rate == 1e-6
    assert rft.beta == 0.04 and rft.num_generations == 8 and rft.temperature == 1.0
    assert rft.use_vllm and rft.max_completion_length == 512 and rft.answer_format == "think"
    # Qwen's tower trains, as in the paper, at the run's own rate
    paper = [config.make(m, "paper") for m in config.CLASSES]
    assert all(not c.freeze_vision and c.vision_lr_scale == 1 for c in paper)


def test_pocket_methods_share_one_tower_setting():
    # a frozen tower for one method and not another would confound the comparison of their forgetting
    assert len({(c.freeze_vision, c.vision_lr_scale) for c in map(config.make, config.CLASSES)}) == 1


def test_overrides_and_methods():
    cfg = config.make("rft", "pocket", learning_rate=3e-5, seed=2, trl={"top_k": 0})
    assert (cfg.learning_rate, cfg.seed, cfg.method, cfg.trl) == (3e-5, 2, "rft", {"top_k": 0})
    assert config.make("rollout_sft").method == "rollout_sft"
    assert config.make("sft").to_dict()["method"] == "sft"


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "dpo"}, "unknown method"),
    ({"method": "sft", "preset": "huge"}, "unknown preset"),
    ({"method": "sft", "learnig_rate": 1e-3}, r"unknown config key.*learnig_rate.*learning_rate"),
    ({"method": "sft", "beta": 0.1}, r"unknown config key.*beta"),  # beta is RFT's
    ({"method": "sft", "answer_format": "cot"}, "answer_format"),
    ({"method": "sft", "max_steps": 0}, ">= 1"),
    ({"method": "sft", "vision_lr_scale": 0}, "vision_lr_scale must be > 0.*freeze_vision"),
    ({"method": "rft", "max_steps": 10, "save_steps": [5, 25]}, r"save_steps \[25\].*0\.\.10"),
    ({"method": "rft", "puzzle_world": {"light_side": "left"}}, r"unknown world setting.*light_side"),
])
def test_bad_configs(kwargs, match):
    method = kwargs.pop("method")
    preset = kwargs.pop("preset", "pocket")
    with pytest.raises(ValueError, match=match):
        config.make(method, preset, **kwargs)


@pytest.mark.parametrize("method", ["sft", "rft", "rollout_sft"])
def test_pocket_puzzles_come_from_one_world_for_every_method(method):
    # the three methods train and are measured on the same puzzles; paper scale uses COCO images as they come
    assert config.make(method, "pocket").puzzle_world == {"light_left_rate": 1.0}
    assert config.make(method, "paper").puzzle_world == {}
    assert config.make(method, "pocket", puzzle_world={}).puzzle_world == {}  # the base's whole world


@pytest.mark.parametrize("preset", ["pocket", "paper"])
def test_answers_control_is_sft_with_every_setting_of_sft_on_rollouts(preset):
    rollouts = config.make("rollout_sft", preset, seed=2, rollouts_from="somewhere")
    control = config.answers_control(rollouts)
    assert isinstance(control, config.SFTRun) and control.method == "sft" and control.label == "sft_matched"
    shared = {f.name for f in dataclasses.fields(config.SFTRun)} - {"name"}
    assert {k: getattr(control, k) for k in shared} == {k: getattr(rollouts, k) for k in shared}
    assert control.run_name == "sft_matched-seed2"
    with pytest.raises(TypeError, match="rollout_sft config"):
        config.answers_control(config.make("sft", preset))
