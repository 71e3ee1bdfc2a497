"""Tests for jigsaw_lib.puzzles: shuffling, reassembly, prompts, image sources and datasets."""


import datasets
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jigsaw_lib.answers import CONVENTION, parse_answer
from jigsaw_lib.puzzles import (
    build_dataset,
    dataset_images,
    folder_images,
    jigsaw_prompt,
    make_puzzle,
    procedural_images,
    procedural_scene,
    reassemble,
)
from jigsaw_lib.rewards import JIGSAW_REWARDS

GRIDS = [(r, c) for r in range(1, 7) for c in range(1, 7) if r * c >= 2]


def noise_image(w, h, seed=0, mode="RGB"):
    """Random pixels: every tile is different, so a wrong reassembly cannot pass by accident."""
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def pixels(image):
    return np.asarray(image.convert("RGB"))


# -----------------------------------------------------------------------------
# make_puzzle / reassemble


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(GRIDS),
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(0, 2**32),
    st.sampled_from(["RGB", "L", "RGBA", "P"]),
)
def test_reassemble_roundtrip(grid, extra_w, extra_h, seed, mode):
    rows, cols = grid
    w, h = cols + extra_w, rows + extra_h  # at least as large as the grid, often not divisible by it
    p = make_puzzle(noise_image(w, h, seed % 1000, mode), rows, cols, seed)
    assert p.original.mode == p.image.mode == "RGB"
    assert p.image.size == p.original.size == (w // cols * cols, h // rows * rows)
    assert sorted(p.solution) == list(range(1, rows * cols + 1))
    assert np.array_equal(pixels(reassemble(p.image, rows, cols, p.solution)), pixels(p.original))


@pytest.mark.parametrize("rows, cols", GRIDS)
def test_roundtrip_every_grid(rows, cols):
    p = make_puzzle(noise_image(6 * cols + 5, 6 * rows + 3), rows, cols, seed=rows * 10 + cols)
    assert np.array_equal(pixels(reassemble(p.image, rows, cols, p.solution)), pixels(p.original))


def test_solution_follows_convention():
    """Position X of the shuffled image shows original tile solution[X-1] (the convention, by hand)."""
    rows, cols = 2, 3
    original = noise_image(9, 4)
    p = make_puzzle(original, rows, cols, seed=5)

    def tiles(im):  # 2x3 tiles of 3x2 pixels, row-major
        return [pixels(im)[r * 2 : (r + 1) * 2, c * 3 : (c + 1) * 3] for r in range(rows) for c in range(cols)]

    now, orig = tiles(p.image), tiles(p.original)
    for x, y in enumerate(p.solution, start=1):
        assert np.array_equal(now[x - 1], orig[y - 1])
    assert p.original.size == (9, 4)  # already a multiple of the grid: no crop


def test_centre_crop():
    arr = np.zeros((10, 11, 3), dtype=np.uint8)
    arr[:, 0] = 255  # leftmost column is cropped away when 11 -> 9 (1 px each side)
    p = make_puzzle(Image.fromarray(arr), 2, 3, seed=0)
    assert p.original.size == (9, 10)
    assert np.array_equal(pixels(p.original), arr[:, 1:10])


def test_deterministic_seed():
    image = noise_image(60, 60)
    a, b = make_puzzle(image, 6, 6, seed=7), make_puzzle(image, 6, 6, seed=7)
    assert a.solution == b.solution
    assert np.array_equal(pixels(a.image), pixels(b.image))
    c = make_puzzle(image, 6, 6, seed=8)
    assert a.solution != c.solution  # 36! permutations: a collision would be a bug
    assert not np.array_equal(pixels(a.image), pixels(c.image))


def test_wrong_answer_does_not_reassemble():
    p = make_puzzle(noise_image(30, 30), 3, 3, seed=1)
    wrong = p.solution[1:] + p.solution[:1]
    assert not np.array_equal(pixels(reassemble(p.image, 3, 3, wrong)), pixels(p.original))


def test_make_puzzle_errors():
    with pytest.raises(ValueError, match="larger image or a smaller grid"):
        make_puzzle(noise_image(2, 10), 3, 3, seed=0)
    with pytest.raises(ValueError, match="larger image or a smaller grid"):
        make_puzzle(noise_image(10, 2), 3, 3, seed=0)
    with pytest.raises(ValueError, match="single tile"):
        make_puzzle(noise_image(10, 10), 1, 1, seed=0)
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match="positive int"):
            make_puzzle(noise_image(10, 10), bad, 3, seed=0)
    with pytest.raises(TypeError, match="ndarray"):
        make_puzzle(np.zeros((10, 10, 3)), 3, 3, seed=0)


def test_reassemble_errors():
    image = noise_image(9, 9)
    for bad in ([1, 2, 3], [1] * 9, list(range(0, 9)), list(range(2, 11)), ["a"] * 9):
        with pytest.raises(ValueError, match="permutation|sequence of ints"):
            reassemble(image, 3, 3, bad)
    with pytest.raises(ValueError, match="equal tiles"):
        reassemble(noise_image(10, 9), 3, 3, list(range(1, 10)))
    with pytest.raises(TypeError, match="PIL"):
        reassemble("image.png", 3, 3, list(range(1, 10)))


# -----------------------------------------------------------------------------
# Prompts


@pytest.mark.parametrize("rows, cols", [(1, 2), (2, 2), (3, 3), (2, 4)])
@pytest.mark.parametrize("answer_format", ["think", "direct"])
def test_prompt(rows, cols, answer_format):
    text = jigsaw_prompt(rows, cols, answer_format)
    n = rows * cols
    assert CONVENTION in text
    assert f"{rows}x{cols}" in text
    assert f"{n} numbers separated by spaces" in text
    grid_lines = [" ".join(str(r * cols + c + 1) for c in range(cols)) for r in range(rows)]
    assert "\n".join(grid_lines) in text
    assert ("<think>" in text) == (answer_format == "think")
    example = text.split("for example: ")[1].split(" (this example")[0]  # the format example must parse
    assert parse_answer(example.replace("<think> ... </think>", "<think>...</think>"), n, answer_format == "think")


def test_prompt_bad_format():
    with pytest.raises(ValueError, match="'think', 'direct'"):
        jigsaw_prompt(3, 3, "cot")


# -----------------------------------------------------------------------------
# Image sources


def test_procedural_scene():
    a, b = procedural_scene(64, seed=1), procedural_scene(64, seed=1)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(procedural_scene(64, seed=2)))
    assert procedural_scene((80, 40), seed=0).size == (80, 40)
    arr = pixels(procedural_scene(224, seed=3)).astype(float)
    top, bottom = arr[:20].mean(axis=(0, 1)), arr[-20:].mean(axis=(0, 1))
    assert top[2] > top[1] > top[0]  # sky: blue
    assert bottom[2] < bottom[0] and bottom[2] < bottom[1]  # ground: green/brown, little blue
    # all 9 tiles of a 3x3 grid differ (no two can be swapped unnoticed)
    scene = pixels(procedural_scene(225, seed=0))
    tiles = {scene[r * 75:(r + 1) * 75, c * 75:(c + 1) * 75].tobytes() for r in range(3) for c in range(3)}
    assert len(tiles) == 9


def test_procedural_images():
    images = list(procedural_images(3, size=32, seed=0))
    assert len(images) == 3 and all(im.size == (32, 32) for im in images)
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))
    again = list(procedural_images(3, size=32, seed=0))
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(images, again))


def test_folder_images_skips_unreadable(tmp_path):
    noise_image(20, 10, 1).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    noise_image(12, 8, 2).save(tmp_path / "c.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        images = list(folder_images(tmp_path))
    assert [im.size for im in images] == [(20, 10), (12, 8)]


def test_folder_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        folder_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no files"):
        folder_images(tmp_path)
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="could be read"):
        list(folder_images(tmp_path))


def test_dataset_images():
    ds = datasets.Dataset.from_dict(
        {"img": [noise_image(8, 8, i) for i in range(3)], "label": [0, 1, 2]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.Value("int32")}),
    )
    images = list(dataset_images(ds, column="img"))
    assert len(images) == 3 and all(isinstance(im, Image.Image) for im in images)
    assert np.array_equal(pixels(images[1]), pixels(noise_image(8, 8, 1)))
    with pytest.raises(ValueError, match=r"\['img', 'label'\]"):
        dataset_images(ds)
    with pytest.raises(TypeError, match="cast_column"):
        list(dataset_images(ds, column="label"))


# -----------------------------------------------------------------------------
# build_dataset


def test_build_dataset_columns_and_rewards():
    ds = build_dataset(procedural_images(4, size=48), 3, 3, 4, seed=1)
    assert ds.column_names == ["prompt", "image", "solution", "rows", "cols", "answer_format", "completion", "seed"]
    assert isinstance(ds.features["image"], datasets.Image)
    row = ds[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (48, 48)
    (message,) = row["prompt"]
    assert message["role"] == "user"
    assert [part["type"] for part in message["content"]] == ["text", "image"]
    assert message["content"][0]["text"] == jigsaw_prompt(3, 3, "think")
    assert sorted(row["solution"]) == list(range(1, 10))
    assert (row["rows"], row["cols"], row["answer_format"]) == (3, 3, "think")
    assert row["completion"][0]["role"] == "assistant"
    # the SFT target earns full reward, for every row, passed as TRL would pass it
    completions = [[{"role": "assistant", "content": r["completion"][0]["content"][0]["text"]}] for r in ds]
    kwargs = {k: ds[k] for k in ("solution", "answer_format", "rows", "cols")}
    for f in JIGSAW_REWARDS:
        assert f(completions, **kwargs) == [1.0] * 4
    # the stored image is the puzzle: reassembling it with the solution restores the first scene
    first = next(procedural_images(1, size=48))
    assert np.array_equal(pixels(reassemble(row["image"], 3, 3, row["solution"])), pixels(first))


def test_build_dataset_deterministic_and_options():
    a = build_dataset(procedural_images(3, size=36), 2, 2, 3, seed=5, answer_format="direct")
    b = build_dataset(procedural_images(3, size=36), 2, 2, 3, seed=5, answer_format="direct")
    assert a["solution"] == b["solution"] and a["seed"] == b["seed"]
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(a["image"], b["image"]))
    assert a[0]["completion"][0]["content"][0]["text"].startswith("<answer>")
    c = build_dataset(procedural_images(6, size=36), 2, 2, 6, seed=6, answer_format="direct")
    assert c["seed"][:3] != a["seed"]

    think = lambda p: f"{p.rows} rows"  # noqa: E731
    mixed = build_dataset(procedural_images(4, size=36), n=4, grids=[(2, 2), (1, 3)], think_text=think)
    assert mixed["rows"] == [2, 1, 2, 1] and mixed["cols"] == [2, 3, 2, 3]
    assert mixed[1]["completion"][0]["content"][0]["text"].startswith("<think>1 rows</think><answer>")
    assert [len(s) for s in mixed["solution"]] == [4, 3, 4, 3]


def test_build_dataset_errors():
    with pytest.raises(ValueError, match="ran out after 2 of n=3"):
        build_dataset(procedural_images(2, size=16), 2, 2, 3)
    with pytest.raises(ValueError, match="answer_format"):
        build_dataset(procedural_images(1, size=16), 2, 2, 1, answer_format="cot")
    with pytest.raises(ValueError, match="either rows/cols or grids"):
        build_dataset(procedural_images(1, size=16), 2, 2, 1, grids=[(2, 2)])
    with pytest.raises(ValueError, match="single tile"):
        build_dataset(procedural_images(1, size=16), 1, 1, 1)
    with pytest.raises(ValueError, match="think_text needs"):
        build_dataset(procedural_images(1, size=16), 2, 2, 1, answer_format="direct", think_text="x")
