"""
The jigsaw puzzle engine: cut an image into a rows x cols grid, shuffle the tiles, pose it as a prompt,
and build TRL-ready datasets.

A puzzle is made as in Jigsaw-R1 (arXiv 2505.23590), which arXiv 2506.23508 trains on:
1. Crop the image to a multiple of the grid (centred; Jigsaw-R1 crops from the top-left), so all tiles
   have the same size.
2. Draw a uniformly random permutation of the rows*cols tiles and paste them back into one image of
   the same size. The identity permutation is allowed (probability 1/(rows*cols)!: 1/2 for a 1x2 grid,
   1/362880 for 3x3): it keeps the distribution uniform, and "already solved" is an answer too.
3. The target answer follows answers.CONVENTION: positions are numbered 1..rows*cols row-major and
   "If the tile now at position X belongs at position Y, write Y at position X."

Image sources are plain iterables of PIL images: procedural_images (seeded synthetic scenes, no
download needed), folder_images (a folder such as COCO train2014, as in the paper) and
dataset_images (a Hugging Face dataset with an image column).

TRL format (checked against trl 1.16's GRPOTrainer and SFTTrainer): `prompt` is a conversational list
of messages whose user content is [{"type": "text", "text": ...}, {"type": "image"}]; the image
placeholder is filled by TRL from the `image` column (a single PIL image per row). `completion` is the
assistant message used as the SFT target; GRPO ignores it. All other columns reach reward functions
as keyword arguments.
"""

import io
import numbers
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

from jigsaw_lib.answers import CONVENTION, format_answer

ANSWER_FORMATS = ("think", "direct")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# -----------------------------------------------------------------------------
# Puzzles


@dataclass
class Puzzle:
    """One puzzle: the shuffled composite, the (cropped) original, the grid and the target answer."""

    image: Image.Image  # shuffled composite, same size as `original`
    original: Image.Image  # source image, RGB, centre-cropped to a multiple of the grid
    rows: int
    cols: int
    solution: list[int]  # rows*cols numbers in 1..rows*cols, see answers.CONVENTION
    seed: int


def _check_grid(rows, cols) -> tuple[int, int]:
    for name, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if rows * cols < 2:
        raise ValueError(f"a {rows}x{cols} grid has a single tile, nothing to shuffle; use at least 2 tiles (e.g. 1x2)")
    return int(rows), int(cols)


def _check_image(image, who: str) -> None:
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"{who}: image must be a PIL.Image.Image, got {type(image).__name__}; "
            "load files with PIL.Image.open(path)"
        )


def _to_tiles(arr: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(H, W, C) -> (rows*cols, H/rows, W/cols, C), tiles in row-major order."""
    h, w, c = arr.shape
    return arr.reshape(rows, h // rows, cols, w // cols, c).swapaxes(1, 2).reshape(rows * cols, h // rows, w // cols, c)


def _from_tiles(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Inverse of _to_tiles."""
    _, th, tw, c = tiles.shape
    return tiles.reshape(rows, cols, th, tw, c).swapaxes(1, 2).reshape(rows * th, cols * tw, c)


def make_puzzle(image: Image.Image, rows: int, cols: int, seed: int) -> Puzzle:
    """Crop `image` (centred) to a multiple of the grid and shuffle its tiles; deterministic for a seed."""
    _check_image(image, "make_puzzle")
    rows, cols = _check_grid(rows, cols)
    w, h = image.size
    if w < cols or h < rows:
        raise ValueError(
            f"make_puzzle: image is {w}x{h} pixels but the grid needs at least {cols}x{rows} "
            f"({cols} cols x {rows} rows, one pixel per tile); use a larger image or a smaller grid"
        )
    cw, ch = w // cols * cols, h // rows * rows
    left, top = (w - cw) // 2, (h - ch) // 2
    original = image.convert("RGB").crop((left, top, left + cw, top + ch))
    perm = list(range(rows * cols))  # perm[X] = original position (0-based) of the tile now at X
    random.Random(seed).shuffle(perm)
    tiles = _to_tiles(np.asarray(original), rows, cols)
    shuffled = Image.fromarray(_from_tiles(tiles[perm], rows, cols))
    return Puzzle(shuffled, original, rows, cols, [p + 1 for p in perm], seed)


def reassemble(image: Image.Image, rows: int, cols: int, answer) -> Image.Image:
    """Move the tile now at position X to position answer[X-1]; returns an RGB image.

    reassemble(p.image, p.rows, p.cols, p.solution) reproduces p.original exactly.
    """
    _check_image(image, "reassemble")
    rows, cols = _check_grid(rows, cols)
    n = rows * cols
    try:
        answer = [int(a) for a in answer]
    except (TypeError, ValueError):
        raise ValueError(f"reassemble: answer must be a sequence of ints, got {answer!r}") from None
    if sorted(answer) != list(range(1, n + 1)):
        raise ValueError(f"reassemble: answer must be a permutation of 1..{n} for a {rows}x{cols} grid, got {answer}")
    w, h = image.size
    if w < cols or h < rows or w % cols or h % rows:
        raise ValueError(
            f"reassemble: a {w}x{h} image does not split into a {rows}x{cols} grid of equal tiles; "
            "pass the puzzle image from make_puzzle (already cropped to the grid)"
        )
    tiles = _to_tiles(np.asarray(image.convert("RGB")), rows, cols)
    out = np.empty_like(tiles)
    out[np.asarray(answer) - 1] = tiles
    return Image.fromarray(_from_tiles(out, rows, cols))


# -----------------------------------------------------------------------------
# Prompts


def _example_answer(n: int) -> str:
    """A fixed, non-identity permutation of 1..n, shown in the prompt as a format example only."""
    perm = list(range(1, n + 1))
    random.Random(n).shuffle(perm)
    if perm == sorted(perm):
        perm.reverse()
    return " ".join(map(str, perm))


def jigsaw_prompt(rows: int, cols: int, answer_format: str = "think") -> str:
    """
    The user prompt for a rows x cols puzzle. Modelled on Jigsaw-R1's grid prompt and instructions
    (zifuwanggg/Jigsaw-R1, utils/prompt.py), reworded; the answer is asked for as one line of
    numbers (Jigsaw-R1 asks for the numbers laid out as a grid; our parser accepts both).
    """
    rows, cols = _check_grid(rows, cols)
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    n = rows * cols
    first, last = ("left", "right") if rows == 1 else ("top", "bottom") if cols == 1 else ("top-left", "bottom-right")
    grid = "\n".join(" ".join(str(r * cols + c + 1) for c in range(cols)) for r in range(rows))
    example = _example_answer(n)
    if answer_format == "think":
        instruction = (
            f"First think inside <think> </think>, then give the final answer inside <answer> </answer> "
            f"as {n} numbers separated by spaces, for example: <think> ... </think><answer>{example}</answer> "
            "(this example only shows the format; it is not the answer)."
        )
    else:
        instruction = (
            f"Output only the final answer inside <answer> </answer> as {n} numbers separated by spaces, "
            f"for example: <answer>{example}</answer> (this example only shows the format; it is not the answer)."
        )
    return (
        f"The image is a {rows}x{cols} jigsaw puzzle: it was cut into {rows} row{'s' * (rows > 1)} and "
        f"{cols} column{'s' * (cols > 1)} of equal tiles, and the tiles were shuffled. "
        "Your task is to solve the puzzle and reconstruct the original image.\n\n"
        f"The positions in the {rows}x{cols} grid are numbered row by row, from 1 ({first}) to {n} ({last}):\n\n"
        f"{grid}\n\n"
        f"For each position, determine where its tile belongs in the original image. {CONVENTION}\n\n"
        f"{instruction}"
    )


# -----------------------------------------------------------------------------
# Image sources


def _derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from a tuple of non-negative ints (e.g. (seed, i))."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


def procedural_scene(size: int | tuple[int, int] = 224, seed: int = 0) -> Image.Image:
    """
    A seeded landscape of the pocket world (jigsaw_lib.world) whose tiles can be placed by content
    alone: a sky that is bluer at the top and paler at the horizon, a horizon near the middle, ground
    that goes from green to brown downwards, a sun in the sky on the lit side, 1-4 coloured objects on
    the ground (larger lower down) and sometimes a sign, and light falling from one side (a horizontal
    brightness ramp). The same world the pocket model's prior skills are taught in.
    """
    from jigsaw_lib import world

    return world.render(world.sample_scene(np.random.default_rng(seed)), size)


def procedural_images(n: int | None, size: int | tuple[int, int] = 224, seed: int = 0) -> Iterator[Image.Image]:
    """Yield n procedural scenes (forever if n is None); scene i is seeded from (seed, i)."""
    i = 0
    while n is None or i < n:
        yield procedural_scene(size, _derive_seed(seed, i, 1))
        i += 1


def folder_images(
    path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS, recursive: bool = False
) -> Iterator[Image.Image]:
    """
    Yield the images in a folder (e.g. COCO train2014), in sorted file-name order. Files that PIL
    cannot read are skipped and counted, with one warning when iteration ends. Raises
    FileNotFoundError for a missing folder (at call time) and ValueError if it holds no readable image.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"folder_images: {root} is not an existing folder; check the path (e.g. to COCO train2014)"
        )
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in candidates if p.suffix.lower() in extensions and p.is_file())
    if not files:
        raise ValueError(f"folder_images: no files with extensions {extensions} in {root}")
    return _read_images(root, files)


def _read_images(root: Path, files: list[Path]) -> Iterator[Image.Image]:
    n_ok, skipped, first_error = 0, 0, None
    try:
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                skipped += 1
                first_error = first_error or f"{p.name}: {e}"
                continue
            n_ok += 1
            yield im
        if n_ok == 0:
            raise ValueError(f"folder_images: none of the {len(files)} image files in {root} could be read")
    finally:
        if skipped:
            warnings.warn(
                f"folder_images: skipped {skipped} unreadable file(s) in {root} (first: {first_error})", stacklevel=2
            )


def dataset_images(dataset, column: str = "image") -> Iterator[Image.Image]:
    """Yield the images of a datasets.Dataset (or IterableDataset) column."""
    names = dataset.column_names
    if names is not None and column not in names:
        raise ValueError(f"dataset_images: no column {column!r}; available columns: {names}")
    return _column_images(dataset.select_columns([column]), column)


def _column_images(dataset, column: str) -> Iterator[Image.Image]:
    for row in dataset:
        image = row[column]
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"dataset_images: column {column!r} holds {type(image).__name__}, not PIL images; "
                f"cast it with dataset.cast_column({column!r}, datasets.Image())"
            )
        yield image


# -----------------------------------------------------------------------------
# Datasets


_MESSAGES = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
FEATURES = Features(
    {
        "prompt": _MESSAGES,
        "image": ImageFeature(),
        "solution": List(Value("int32")),
        "rows": Value("int32"),
        "cols": Value("int32"),
        "answer_format": Value("string"),
        "completion": _MESSAGES,
        "seed": Value("int64"),
    }
)


def user_turn(text: str, image_first: bool = False) -> list[dict]:
    """
    A conversational user turn with one image and the text, in TRL's VLM format. The text comes
    first by default: with a causal model the image tokens can then attend to the question, which a
    small model needs (measured at pocket scale); Qwen2.5-VL reads either order.
    """
    parts = [{"type": "text", "text": text}, {"type": "image"}]
    return [{"role": "user", "content": parts[::-1] if image_first else parts}]


def assistant_turn(text: str) -> list[dict]:
    """A conversational assistant turn holding ``text``: the ``completion`` column TRL's SFTTrainer learns."""
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def build_dataset(
    images: Iterable[Image.Image],
    rows: int = 3,
    cols: int = 3,
    n: int = 1000,
    *,
    seed: int = 0,
    answer_format: str = "think",
    think_text: str | Callable[[Puzzle], str] | None = None,
    grids: list[tuple[int, int]] | None = None,
    image_first: bool = False,
):
    """
    Build n puzzles from the first n images as a datasets.Dataset with columns
    prompt, image, solution, rows, cols, answer_format, completion and seed (the puzzle's seed).

    Puzzle i is shuffled with a seed derived from (seed, i), so the dataset is deterministic given the
    images. `grids`, if given, replaces rows/cols: puzzle i uses grids[i % len(grids)].
    `completion` is the SFT target format_answer(solution, think): with answer_format="think" the think
    text is `think_text` (a string or a function of the Puzzle), empty if None (answers-only SFT);
    with "direct" there is no think block. Rows are held in memory as PNG bytes, so build very large
    sets in shards.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"build_dataset: answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if answer_format == "direct" and think_text is not None:
        raise ValueError("build_dataset: think_text needs answer_format='think'; the direct format has no think block")
    if grids is None:
        grids = [(rows, cols)]
    elif (rows, cols) != (3, 3):
        raise ValueError("build_dataset: pass either rows/cols or grids, not both")
    if not grids:
        raise ValueError("build_dataset: grids is empty; pass e.g. grids=[(2, 2), (3, 3)]")
    grids = [_check_grid(r, c) for r, c in grids]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"build_dataset: n must be a positive int, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"build_dataset: seed must be a non-negative int, got {seed!r}")

    columns = {k: [] for k in ("prompt", "image", "solution", "rows", "cols", "answer_format", "completion", "seed")}
    it = iter(images)
    for i in tqdm(range(n), desc="puzzles", disable=n < 1000):
        try:
            image = next(it)
        except StopIteration:
            raise ValueError(
                f"build_dataset: the images ran out after {i} of n={n}; pass more images or a smaller n"
            ) from None
        r, c = grids[i % len(grids)]
        p = make_puzzle(image, r, c, _derive_seed(seed, i))
        think = None
        if answer_format == "think":
            think = think_text(p) if callable(think_text) else (think_text or "")
        buf = io.BytesIO()
        p.image.save(buf, format="PNG", compress_level=1)
        columns["prompt"].append(user_turn(jigsaw_prompt(r, c, answer_format), image_first))
        columns["image"].append({"bytes": buf.getvalue(), "path": None})
        columns["solution"].append(p.solution)
        columns["rows"].append(r)
        columns["cols"].append(c)
        columns["answer_format"].append(answer_format)
        columns["completion"].append(
            assistant_turn(format_answer(p.solution, think))
        )
        columns["seed"].append(p.seed)
    return Dataset.from_dict(columns, features=FEATURES)
