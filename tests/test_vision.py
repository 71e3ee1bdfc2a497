"""Vision pretraining: dense labels from scene descriptions; the tower trained in place by transformers' Trainer."""

import numpy as np
import pytest
import torch
from PIL import Image

from jigsaw_lib import models, vision, world


def _scene(**kw):
    return world.Scene(horizon=0.5, lit_from_left=True, sun=(0.2, 0.2), **kw)


def test_token_labels_mark_each_object_and_the_sign_in_the_cell_of_its_centre():
    things = [world.Thing("triangle", "red", 0.1, 0.9, 0.1), world.Thing("circle", "purple", 0.6, 0.55, 0.1)]
    sc = _scene(things=things, sign=(0.7, 0.1), digit="7")
    labels = vision.token_labels(sc, 4)
    assert labels.shape == (16, 3)
    # cells are row-major: (row 3, col 0) = 12 holds the triangle, (row 2, col 2) = 10 the circle
    assert labels[12].tolist() == [world.SHAPES.index("triangle") + 1, list(world.COLORS).index("red") + 1, 0]
    assert labels[10, :2].tolist() == [world.SHAPES.index("circle") + 1, list(world.COLORS).index("purple") + 1]
    dp = world.SETTINGS.digit_pixel  # the sign's centre, not its corner, names its cell
    cx, cy = 0.7 + 2.5 * dp, 0.1 + 3.5 * dp
    assert labels[int(cy * 4) * 4 + int(cx * 4), 2] == 8
    assert (labels[:, 0] > 0).sum() == 2 and (labels[:, 2] > 0).sum() == 1  # nothing else is labelled
    assert vision.token_labels(_scene(), 2).sum() == 0  # an empty landscape: all "nothing"


def test_cell_means_are_the_mean_colour_of_each_cell():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    a[:4, 4:] = 255  # the top-right cell white
    a[4:, :4, 0] = 51  # the bottom-left cell a dark red
    means = vision.cell_means(Image.fromarray(a), 2)
    assert means.shape == (4, 3)
    np.testing.assert_allclose(means, [[0, 0, 0], [1, 1, 1], [0.2, 0, 0], [0, 0, 0]], atol=1e-6)


def test_scenes_are_seeded_and_splits_disjoint():
    a, b = vision.scene("train", 3), vision.scene("train", 3)
    assert a == b and vision.scene("test", 3) != a and vision.scene("train", 3, seed=1) != a
    with pytest.raises(ValueError, match="split must be one of"):
        vision.scene("val", 0)


@pytest.mark.slow
def test_pretrain_vision_trains_the_tower_in_place(tmp_path):
    models.build_pocket(models.TINY, save_dir=tmp_path / "init")
    model, processor = models.load(tmp_path / "init")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = vision.pretrain_vision(model, processor, 3, tmp_path / "v", batch_size=4, n_eval=8, progress=False)
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("model.visual.") for k in moved)  # the tower, and only the tower
    assert set(after) == set(before)  # the heads stay out of the model
    assert any("loss" in e for e in record["log"]) and set(record["accuracy"]) == {*vision.HEADS, "mean_colour_mae"}
    assert all(np.isnan(v) or 0 <= v <= 1 for v in record["accuracy"].values())  # MAE of 0..1 colours too
    with pytest.raises(ValueError, match="steps >= 1"):
        vision.pretrain_vision(model, processor, 0, tmp_path / "v")
