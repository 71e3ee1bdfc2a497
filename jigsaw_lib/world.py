"""The pocket world: landscapes with regularities, and prior skills that mirror the paper's benchmarks.

Forgetting can only be shown on a model that knows something. At paper scale Qwen2.5-VL's prior
knowledge is measured by RefCOCO, DocVQA, MME, POPE, MMStar and MMMU; at pocket scale we make a small
world and teach the pocket model a set of skills in it, each a stand-in for one benchmark family:

| skill         | stands for          | question                                   | answer format      |
|---------------|---------------------|--------------------------------------------|--------------------|
| grounding     | RefCOCO             | which cell of a 2x2 grid holds an object    | one number (1-4)   |
| ocr           | DocVQA              | the digit written on a sign                 | one number (0-9)   |
| perception    | MME                 | colour / shape of an object, side of light  | one word           |
| hallucination | POPE                | is there a <colour> <shape>? (balanced)      | yes or no          |
| counting      | MMStar              | how many objects stand on the ground        | one number (1-4)   |
| ordering      | MMMU (reasoning)    | brightness rank of every cell of a grid      | n numbers, 1..n    |

**The world has regularities**, as photographs do: the sky is at the top, bluer overhead and paler at the
horizon; the ground is below, green turning brown towards the viewer; light falls from one side (a
horizontal brightness ramp) and the sun stands in the sky on that side; objects stand on the ground
and look larger lower down. Skills teach them (where the sun is, which side is lit, how regions
compare in brightness), so a jigsaw tile can be placed from what the model already knows although
it never saw a puzzle: the novel task is *reachable* from prior knowledge, as it is for Qwen, whose
samples earn image-dependent partial credit although none is exactly right.

**Following a stated answer format is itself prior knowledge.** Every prompt states its format in the
words the jigsaw prompt uses ("Output only the final answer inside <answer> </answer> as ..."), and the
ordering skill answers in exactly the jigsaw's format (n distinct numbers in 1..n on the same
numbered grid), so a model that never saw a puzzle still answers one in the right form.

Items are generated from seeds: the train and held-out splits draw from disjoint seed streams, so
they never share a scene (tested).

**Settings.** :class:`WorldSettings` holds what experiments vary (object and digit sizes, objects per scene,
the ordering skill's grids and format examples, the wording of prompts, context sentences before questions,
the side the light comes from); its defaults are the world of E4, the base shipped until session 15
(docs/experiment_log.md); the shipped base, E22 (E21, E20's recipe at seed 1, trained on), changes three
(``hallucination_echo``: restated yes/no answers; ``ordering_random_example`` and ``ordering_varied_wording``:
ordering prompts with a random format example, in varied wordings).
:data:`FIRST_WORLD` is the world of the first base, in which the experiments E1-E4 are changes.
``with world.configure(digit_pixel=1 / 24): ...`` changes the settings inside a block, and
``PretrainConfig(world={...})`` trains (and caches) a base in a changed world.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace

import numpy as np
from PIL import Image, ImageDraw

from .puzzles import assistant_turn, user_turn

COLORS = {  # name -> RGB; chosen to stay distinct from sky and ground
    "red": (220, 30, 30),
    "yellow": (240, 220, 40),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
    "purple": (140, 50, 190),
    "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
SKILLS = {  # skill -> the benchmark family it stands for
    "grounding": "RefCOCO",
    "ocr": "DocVQA",
    "perception": "MME",
    "hallucination": "POPE",
    "counting": "MMStar",
    "ordering": "MMMU",
}
SPLITS = ("train", "test")
ORDERING_MIN_GAP = 8.0  # an ordering item's closest two cells lie at least this far apart in mean luminance (0..255)
PERCEPTION_QUESTIONS = ("light", "colour", "shape", "colours", "objects")  # the kinds of question perception can ask
# (default: the first three; "colours", every colour present listed in palette order, and "objects", every
# object's colour and shape in that order, are drills: docs/experiment_log.md, "Why no base answers a question that
# names something to look for" and "The drill on the vision-pretrained tower")
HALLUCINATION_QUESTIONS = ("colour_shape", "colour")  # "is there a red circle?" (default) or "a red object?"
ORDERING_TASKS = (  # wordings of the ordering task that do not state the count of numbers
    "For each position, write the brightness rank of its region: 1 for the brightest, then 2, and so on to the darkest.",
    "Rank the regions by brightness: at each position write the rank of its region, 1 for the brightest.",
    "Which regions are brighter? For every position give the brightness rank of its region (1 = brightest).",
    "Order the regions from the brightest to the darkest, and write at each position the rank of its region.",
)
# With WorldSettings.ordering_varied_wording, the ordering prompt's opening sentence and task line are drawn from
# these too, and a rule sentence may follow the task: a jigsaw prompt differs from an ordering prompt in exactly
# those places (its opening about tiles cut into rows and columns, its task line, its rule "If the tile now at
# position X belongs at position Y, ..."), and a base that met one fixed opening lost the count of numbers there
# (README, "Why the count of numbers did not carry over"). Separate tuples: the draws of older worlds stay as they were.
ORDERING_OPENINGS = (
    "The image is divided into a {rows}x{cols} grid of regions.",
    "The image is a {rows}x{cols} grid of tiles: it was cut into {rows} {row_word} and {cols} {col_word} of equal tiles.",
    "The image was cut into {rows} {row_word} and {cols} {col_word} of equal regions, numbered by position.",
)
ORDERING_VARIED_TASKS = (
    "For each position, determine the brightness rank of its region.",
    "For each position, determine how bright its tile is compared with the other tiles.",
    "Your task is to rank the tiles by brightness, from the brightest to the darkest.",
)
ORDERING_RULES = (
    "If the region at position X is the Y-th brightest, write Y at position X.",
    "Write the ranks in the order of the positions, one number per position.",
    "Each position gets one number, and no number is used twice.",
)
# Context sentences that may precede a question (WorldSettings.preamble_rate): a model that meets, in
# training, paragraphs it cannot use may learn to look past them to the question and its stated format,
# as it must in a jigsaw prompt, whose task paragraph it has never seen.
PREAMBLES = (
    "Look at the image carefully before you answer.",
    "The image shows a small scene or a pattern of coloured regions.",
    "Your task is to answer one question about the image.",
    "Answer in exactly the format that the question asks for.",
    "Some images are made of regions of equal size.",
    "Each question has exactly one right answer.",
    "Think about where things are in the image.",
    "The answer depends on what the image shows.",
    "Read the whole question first.",
    "Positions, colours and shapes may all matter.",
    "Images may be cut into parts, and the parts may be moved.",
    "Count carefully when the question asks for numbers.",
)


@dataclass(frozen=True)
class WorldSettings:
    """How the world is drawn and its questions worded. The defaults are E4's world; the shipped base (E22)
    restates its hallucination answers and varies its ordering prompts (``pretrain.PretrainConfig().world``).

    A pretraining run records its world (``PretrainConfig.world``), so a base from another world is a
    checkpoint of its own; evaluate it in its world: ``with world.configure(**changes): ...`` (the
    training runners do this themselves, from ``pretrain.world_of(base)``).
    """

    object_radius: tuple = (0.09, 0.05)  # radius = a + b * depth below the horizon (fractions of the image side)
    digit_pixel: float = 1 / 16  # one pixel of a sign's 3x5 digit bitmap (fraction of the image side)
    sign_inside: bool = True  # size the sign from digit_pixel and keep it inside the image
    placement_retries: int = 20  # place a scene's objects again from scratch, up to this often, until all fit
    ordering_grids: tuple = (((2, 2), 0.3), ((1, 2), 0.1), ((2, 1), 0.1), ((3, 3), 0.2), ((1, 3), 0.1),
                             ((3, 1), 0.1), ((2, 3), 0.05), ((3, 2), 0.05))  # (grid, weight) of the ordering skill
    jigsaw_wording: bool = True  # every example in an ordering prompt "only shows the format", as in the jigsaw's
    preamble_rate: float = 0.0  # share of questions that 1-3 PREAMBLES sentences precede
    ordering_paraphrases: bool = True  # the ordering task in several wordings, none stating the count: only
    # the grid and the format sentence ("as N numbers"), which the jigsaw prompt shares, tell the answer's length
    max_objects: int = 4  # a scene has 1..max_objects objects; 1 makes every object question a naming drill
    perception_questions: tuple = PERCEPTION_QUESTIONS[:3]  # what the perception skill asks; ("shape",) is a drill
    ordering_random_example: bool = False  # the ordering prompt's format example a random permutation (drawn
    # last: image and answer unchanged) instead of always "n 1 2 ... n-1": the count must be read from "as N
    # numbers", not recognised from one familiar example string (the jigsaw prompt's example is another)
    light_left_rate: float = 0.5  # share of scenes lit from the left (the sun on that side); 1.0: a world whose
    # light always comes from the left, so that a tile's brightness against its row's tells its column (the
    # light question then has one answer: ask perception_questions=("colour", "shape") there)
    ordering_varied_wording: bool = False  # the ordering prompt's opening, task line and an optional rule
    # sentence drawn from ORDERING_OPENINGS, ORDERING_TASKS + ORDERING_VARIED_TASKS and ORDERING_RULES (drawn
    # last: image, answer and example unchanged), so the count is read past wording the model has not met
    hallucination_questions: tuple = HALLUCINATION_QUESTIONS[:1]  # what the hallucination skill asks about
    hallucination_echo: bool = False  # the answer restates what was asked, then yes or no ("red circle yes"):
    # the asked thing is then the token just before the yes/no (docs/experiment_log.md, "Why no base answers a
    # question that names something to look for")
    ordering_well_posed: bool = False  # an ordering image whose closest two cells are less than ORDERING_MIN_GAP
    # apart in brightness after every try (most 3x3 ones: a landscape's sky cells are alike, and 9 random mosaic blocks
    # rarely lie 8 levels apart) is replaced by separated_mosaic. Off, as every base so far was trained: it keeps the
    # last try, whose cells look alike (two thirds of the 3x3 items, median gap 2.3 levels; README, "A bug in the
    # ordering skill")


# The world of the first shipped base (sessions 1-4), as changes to today's defaults: small objects and
# digits, ordering on 2x2 / 1x2 / 2x1 grids worded "N for the darkest" (the model learned the answer's
# length from that wording, so it answered 3x3 jigsaw prompts with 4 numbers; docs/experiment_log.md, "Pocket world").
FIRST_WORLD = {"object_radius": [0.07, 0.05], "digit_pixel": 1 / 24, "sign_inside": False, "placement_retries": 1,
               "ordering_grids": [[[2, 2], 0.5], [[1, 2], 0.25], [[2, 1], 0.25]], "jigsaw_wording": False,
               "ordering_paraphrases": False}
_LARGE_DIGIT = 1 / 24  # a digit pixel above this may run off the image unless the sign is kept inside


SETTINGS = WorldSettings()


def _setting(name: str, value):
    if name == "object_radius":
        return tuple(float(v) for v in value)
    if name == "ordering_grids":
        return tuple(((int(g[0]), int(g[1])), float(w)) for g, w in value)
    if name in ("perception_questions", "hallucination_questions"):
        return tuple(str(v) for v in value)
    if name in ("sign_inside", "jigsaw_wording", "ordering_paraphrases", "ordering_random_example",
                "hallucination_echo", "ordering_varied_wording", "ordering_well_posed"):
        return bool(value)
    if name in ("placement_retries", "max_objects"):
        return int(value)
    return float(value)


def _typed(changes: dict) -> dict:
    return {k: _setting(k, v) for k, v in changes.items()}


def normalise(changes: dict, on: WorldSettings | None = None) -> dict:
    """World changes in one canonical, JSON-ready form (lists, floats): the same world gives the same cache key.

    Unknown settings are errors, and so is a world they would make inconsistent, checked on the world
    they change (``on``; the defaults if not given).
    """
    valid = [f.name for f in fields(WorldSettings)]
    unknown = sorted(set(changes) - set(valid))
    if unknown:
        raise ValueError(f"unknown world setting(s) {unknown}; the settings are: {', '.join(valid)}")
    typed = _typed(changes)
    settings = replace(on or WorldSettings(), **typed)
    for name, kinds in (("perception_questions", PERCEPTION_QUESTIONS),
                        ("hallucination_questions", HALLUCINATION_QUESTIONS)):
        asked = getattr(settings, name)
        if not asked or set(asked) - set(kinds) or len(set(asked)) != len(asked):
            raise ValueError(f"{name} must be distinct kinds among {kinds}, got {asked!r}")
    if settings.max_objects < 1:
        raise ValueError(f"max_objects must be >= 1 (a scene holds 1..max_objects objects), got {settings.max_objects}")
    if not 0.0 <= settings.light_left_rate <= 1.0:
        raise ValueError(f"light_left_rate is the share of scenes lit from the left, in 0..1; "
                         f"got {settings.light_left_rate}")
    if settings.ordering_varied_wording and not settings.ordering_paraphrases:
        raise ValueError("ordering_varied_wording varies the paraphrased ordering prompt: it needs "
                         "ordering_paraphrases=True")
    if settings.digit_pixel > _LARGE_DIGIT + 1e-12 and not settings.sign_inside:
        raise ValueError("a digit_pixel above 1/24 needs sign_inside=True: otherwise the larger sign "
                         "may run off the image and objects may cover it")
    return json.loads(json.dumps(typed))


def resolve(changes: dict, base: dict | None = None) -> dict:
    """Every setting of the world that ``changes`` make from ``base`` (a dict of changes to the defaults).

    A checkpoint records its world in this full form; checkpoints written before today's defaults
    recorded only their changes to :data:`FIRST_WORLD`, so ``resolve(saved, FIRST_WORLD)`` reads both.
    So a setting added later must default to the old behaviour, or older full records would be misread.
    """
    start = replace(WorldSettings(), **_typed(normalise(base or {})))
    settings = replace(start, **_typed(normalise(changes, on=start)))
    return normalise({f.name: getattr(settings, f.name) for f in fields(WorldSettings)})


@contextmanager
def configure(**changes):
    """Change the world's settings inside a ``with`` block; a name WorldSettings lacks is an error."""
    global SETTINGS
    old = SETTINGS
    SETTINGS = replace(old, **_typed(normalise(changes, on=old)))  # unknown or inconsistent settings are errors
    try:
        yield SETTINGS
    finally:
        SETTINGS = old


_DIGITS = {  # 3x5 bitmaps, drawn scaled: crisp at 64 px
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111",
}


# -----------------------------------------------------------------------------
# Scenes


@dataclass
class Thing:
    """An object on the ground: shape, colour name, centre (fractions of width/height), radius."""

    shape: str
    color: str
    x: float
    y: float
    r: float


@dataclass
class Scene:
    """A landscape, described before it is drawn (positions are fractions of the image size)."""

    horizon: float
    lit_from_left: bool
    sun: tuple[float, float]
    things: list[Thing] = field(default_factory=list)
    sign: tuple[float, float] | None = None  # top-left corner of a white sign
    digit: str | None = None  # written on the sign
    sky_top: tuple = (60, 120, 220)
    sky_low: tuple = (215, 220, 230)
    green: tuple = (75, 140, 55)
    brown: tuple = (125, 88, 48)


def cell_of(x: float, y: float, rows: int = 2, cols: int = 2) -> int:
    """Position number (1..rows*cols, row-major) of the point (x, y) given as fractions."""
    return min(int(y * rows), rows - 1) * cols + min(int(x * cols), cols - 1) + 1


def sample_scene(rng: np.random.Generator, n_things: int | None = None, sign: bool | None = None) -> Scene:
    """Draw a random scene: horizon near the middle, 1..max_objects (4) distinct objects on the ground, maybe a
    sign. Objects that do not fit after ``placement_retries`` attempts are left out of the last attempt."""
    horizon = rng.uniform(0.4, 0.6)
    left = bool(rng.random() < SETTINGS.light_left_rate)
    sun = (rng.uniform(0.12, 0.38) if left else rng.uniform(0.62, 0.88), rng.uniform(0.12, horizon - 0.14))
    scene = Scene(
        horizon=horizon, lit_from_left=left, sun=sun,
        sky_top=tuple(rng.uniform([40, 90, 190], [90, 150, 250])),
        sky_low=tuple(rng.uniform([190, 205, 215], [240, 235, 245])),
        green=tuple(rng.uniform([50, 110, 30], [100, 170, 80])),
        brown=tuple(rng.uniform([100, 70, 35], [150, 105, 60])),
    )
    if sign is None:
        sign = bool(rng.random() < 0.3)
    world = SETTINGS
    if world.sign_inside:  # the sign's size (bitmap and a one-pixel margin); on the ground, inside the image
        sw, sh = 5 * world.digit_pixel, 7 * world.digit_pixel
        place = lambda: (rng.uniform(0.03, 0.97 - sw), min(rng.uniform(horizon + 0.02, 0.7), 0.98 - sh))  # noqa: E731
    else:
        sw, sh = 0.3, 0.28
        place = lambda: (rng.uniform(0.05, 0.65), rng.uniform(horizon + 0.02, 0.7))  # noqa: E731
    if sign:
        scene.sign = place()
        scene.digit = str(int(rng.integers(10)))
    n = int(rng.integers(1, world.max_objects + 1)) if n_things is None else n_things
    kinds = [(s, c) for s in SHAPES for c in COLORS]
    chosen = [kinds[k] for k in rng.permutation(len(kinds))[:n]]
    a, b = world.object_radius
    for _ in range(world.placement_retries):  # place the objects again from scratch until all of them fit
        scene.things = []
        for shape, color in chosen:
            for _ in range(30):  # rejection sampling: objects do not overlap each other or the sign
                y = rng.uniform(horizon + 0.08, 0.9)
                r = a + b * (y - horizon) / (1 - horizon)  # larger lower down
                x = rng.uniform(r, 1 - r)
                clear = all((x - t.x) ** 2 + (y - t.y) ** 2 > (r + t.r + 0.03) ** 2 for t in scene.things)
                if scene.sign is not None:
                    sx, sy = scene.sign
                    clear &= not (sx - r < x < sx + sw + r and sy - r < y < sy + sh + r)
                if clear:
                    scene.things.append(Thing(shape, color, float(x), float(y), float(r)))
                    break
        if len(scene.things) == len(chosen):
            break
    return scene


def render(scene: Scene, size: int | tuple[int, int] = 64) -> Image.Image:
    """Draw a scene: sky and ground gradients, sun, sign, objects, then the side light."""
    w, h = (size, size) if isinstance(size, int) else size
    hz = max(1, min(h - 1, int(round(scene.horizon * h))))
    y = np.arange(h, dtype=np.float32)[:, None, None]
    sky = np.array(scene.sky_top) + (y / hz) * (np.array(scene.sky_low) - np.array(scene.sky_top))
    ground = np.array(scene.green) + ((y - hz) / max(1, h - hz)) * (np.array(scene.brown) - np.array(scene.green))
    base = np.where(y < hz, sky, ground)
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(base, (h, w, 3))).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    s = min(w, h)
    sx, sy, sr = scene.sun[0] * w, scene.sun[1] * h, 0.09 * s
    draw.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), fill=(255, 240, 140))
    if scene.sign is not None:
        x0, y0 = int(scene.sign[0] * w), int(scene.sign[1] * h)
        px = max(1, round(s * SETTINGS.digit_pixel))  # one pixel of the 3x5 digit bitmap
        draw.rectangle((x0, y0, x0 + 5 * px, y0 + 7 * px), fill=(250, 250, 250))
        for i, bit in enumerate(_DIGITS[scene.digit]):
            if bit == "1":
                r, c = divmod(i, 3)
                bx, by = x0 + (c + 1) * px, y0 + (r + 1) * px
                draw.rectangle((bx, by, bx + px - 1, by + px - 1), fill=(0, 0, 0))
    for t in scene.things:
        cx, cy, d = t.x * w, t.y * h, t.r * s
        fill = COLORS[t.color]
        if t.shape == "circle":
            draw.ellipse((cx - d, cy - d, cx + d, cy + d), fill=fill)
        elif t.shape == "square":
            draw.rectangle((cx - d, cy - d, cx + d, cy + d), fill=fill)
        else:
            draw.polygon([(cx, cy - d * 1.15), (cx - d * 1.1, cy + d), (cx + d * 1.1, cy + d)], fill=fill)
    light = np.linspace(1.15, 0.7, w, dtype=np.float32)
    if not scene.lit_from_left:
        light = light[::-1]
    arr = np.asarray(img, dtype=np.float32) * light[None, :, None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _blocks(rng: np.random.Generator, rows: int, cols: int, size: int, colour: Callable) -> Image.Image:
    """A grid of flat blocks, row by row, cell k of colour ``colour(k)`` (drawn first) with a light texture."""
    arr = np.empty((size, size, 3), dtype=np.float32)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        block = colour(k) + rng.normal(0, 6, (size // rows + 1, size // cols + 1, 3))
        ys, xs = slice(r * size // rows, (r + 1) * size // rows), slice(c * size // cols, (c + 1) * size // cols)
        arr[ys, xs] = block[: ys.stop - ys.start, : xs.stop - xs.start]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def mosaic(rng: np.random.Generator, rows: int, cols: int, size: int = 64) -> Image.Image:
    """A grid of flat, lightly textured colour blocks: images with no landscape, for ordering."""
    return _blocks(rng, rows, cols, size, lambda k: rng.uniform(20, 235, 3))


def separated_mosaic(rng: np.random.Generator, rows: int, cols: int, size: int = 64, margin: float = 12.0,
                     tries: int = 20) -> Image.Image:
    """A mosaic whose cells' mean brightnesses lie at least ``ORDERING_MIN_GAP`` apart, so their ranking is well posed.

    The cells' luminances are drawn uniformly among the sets spaced ``margin`` apart within 30..225 (n sorted uniform
    draws, the i-th shifted by i * margin), dealt to the cells in a random order, and each cell gets a random colour of
    its luminance (grey plus a random chroma that leaves the luminance unchanged), with the texture of :func:`mosaic`.
    """
    n, lo, hi = rows * cols, 30.0, 225.0
    if hi - (n - 1) * margin <= lo:
        raise ValueError(f"a {rows}x{cols} mosaic cannot space {n} cells {margin} levels apart within {lo}..{hi}")
    weights = np.array([0.299, 0.587, 0.114])  # PIL's luminance ("L") of an RGB colour

    def colour_of(level):
        chroma = rng.normal(size=3)
        chroma -= weights * (chroma @ weights) / (weights @ weights)  # keeps the luminance
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(chroma > 0, (255 - level) / chroma, np.where(chroma < 0, -level / chroma, np.inf))
        return level + rng.uniform(0, 0.8) * room.min() * chroma

    for _ in range(tries):
        levels = (np.sort(rng.uniform(lo, hi - (n - 1) * margin, n)) + margin * np.arange(n))[rng.permutation(n)]
        image = _blocks(rng, rows, cols, size, lambda k: colour_of(levels[k]))
        if brightness_ranks(image, rows, cols)[1] >= ORDERING_MIN_GAP:
            return image
    raise RuntimeError(f"no {rows}x{cols} mosaic with cells {ORDERING_MIN_GAP} levels apart in {tries} tries")


def brightness_ranks(image: Image.Image, rows: int, cols: int) -> tuple[list[int], float]:
    """Rank of each cell's mean luminance (1 = brightest), row-major; and the smallest gap between cells."""
    lum = np.asarray(image.convert("L"), dtype=np.float32)
    h, w = lum.shape
    means = np.array([lum[r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols].mean()
                      for r in range(rows) for c in range(cols)])
    order = np.argsort(-means, kind="stable")
    ranks = np.empty(len(means), dtype=int)
    ranks[order] = np.arange(1, len(means) + 1)
    gap = float(np.min(np.diff(np.sort(means)))) if len(means) > 1 else float("inf")
    return ranks.tolist(), gap


# -----------------------------------------------------------------------------
# Prompts: every prompt states its answer format in the jigsaw prompt's words


def answer_instruction(what: str, example: str) -> str:
    return (f"Output only the final answer inside <answer> </answer> as {what}, for example: "
            f"<answer>{example}</answer>" + (" (this example only shows the format; it is not the answer)."
                                             if SETTINGS.jigsaw_wording else "."))


def grid_description(rows: int, cols: int) -> str:
    """The numbered-grid paragraph, worded as in the jigsaw prompt."""
    n = rows * cols
    first, last = ("left", "right") if rows == 1 else ("top", "bottom") if cols == 1 else ("top-left", "bottom-right")
    grid = "\n".join(" ".join(str(r * cols + c + 1) for c in range(cols)) for r in range(rows))
    return f"The positions in the {rows}x{cols} grid are numbered row by row, from 1 ({first}) to {n} ({last}):\n\n{grid}"


@dataclass
class Item:
    """One question about one image, with the expected answer body (what goes inside <answer>)."""

    skill: str
    image: Image.Image
    question: str
    answer: str
    seed: int
    scene: Scene | None = None  # what the image was drawn from (None for a mosaic): tells what else is in view


def _grounding(rng, size):
    scene = sample_scene(rng, sign=False)
    if rng.random() < 0.3:
        name, (x, y) = "the sun", scene.sun
    else:
        t = scene.things[int(rng.integers(len(scene.things)))]
        name, x, y = f"the {t.color} {t.shape}", t.x, t.y
    q = (f"The image is divided into a 2x2 grid. {grid_description(2, 2)}\n\nIn which position is {name}? "
         + answer_instruction("one number", "3"))
    return render(scene, size), q, str(cell_of(x, y)), scene


def _ocr(rng, size):
    scene = sample_scene(rng, sign=True)
    q = "What digit is written on the white sign? " + answer_instruction("one number", "7")
    return render(scene, size), q, scene.digit, scene


def _perception(rng, size):
    asked = SETTINGS.perception_questions  # the default three kinds draw as before: rng.integers(3)
    kind = PERCEPTION_QUESTIONS.index(asked[int(rng.integers(len(asked)))])
    scene = sample_scene(rng, sign=False)
    if kind == 0:
        q = "Which side is the light coming from, left or right? " + answer_instruction("one word", "left")
        return render(scene, size), q, "left" if scene.lit_from_left else "right", scene
    if kind == 3:  # every colour present, in the palette's order: a dense readout of the objects' colours
        present = [c for c in COLORS if any(t.color == c for t in scene.things)]
        q = "Which colours are the objects in the image? " + answer_instruction(
            f"the colours in the order {', '.join(list(COLORS)[:3])}, ... separated by spaces", "red white")
        return render(scene, size), q, " ".join(present), scene
    if kind == 4:  # every object's colour and shape, by palette then shape order: a dense readout that binds them
        present = [(c, s) for c in COLORS for s in SHAPES if any((t.color, t.shape) == (c, s) for t in scene.things)]
        q = "Which objects are in the image? " + answer_instruction(
            "the colour and shape of each object, colours in the order "
            f"{', '.join(list(COLORS)[:3])}, ... separated by spaces", "red circle white square")
        return render(scene, size), q, " ".join(f"{c} {s}" for c, s in present), scene
    t = scene.things[int(rng.integers(len(scene.things)))]
    if kind == 1:  # colour of a shape; other objects of that shape are removed so the question is unambiguous
        scene.things = [u for u in scene.things if u is t or u.shape != t.shape]
        q = f"What colour is the {t.shape}? " + answer_instruction("one word", "red")
        return render(scene, size), q, t.color, scene
    scene.things = [u for u in scene.things if u is t or u.color != t.color]
    q = f"What shape is the {t.color} object? " + answer_instruction("one word", "square")
    return render(scene, size), q, t.shape, scene


def _hallucination(rng, size):
    asked = SETTINGS.hallucination_questions
    scene = sample_scene(rng)
    kind = asked[int(rng.integers(len(asked)))] if len(asked) > 1 else asked[0]  # the default draws as before
    if kind == "colour":  # a colour alone: "is there a red object?"
        present = {(t.color,) for t in scene.things}
        pool = {(c,) for c in COLORS}
    else:
        present = {(t.color, t.shape) for t in scene.things}
        pool = {(c, s) for c in COLORS for s in SHAPES}
    absent = sorted(pool - present)  # empty only if a scene may hold every colour (max_objects >= 6): then "yes"
    if rng.random() < 0.5 or not absent:
        thing = sorted(present)[int(rng.integers(len(present)))]
        answer = "yes"
    else:
        thing = absent[int(rng.integers(len(absent)))]
        answer = "no"
    name = " ".join(thing) if kind == "colour_shape" else f"{thing[0]} object"
    what, example = "yes or no", "yes"
    if SETTINGS.hallucination_echo:  # restate what was asked, then answer: "red circle yes" / "red no"
        what = f"the {'colour and shape' if kind == 'colour_shape' else 'colour'}, then {what}"
        example, answer = f"{'blue square' if kind == 'colour_shape' else 'blue'} yes", f"{' '.join(thing)} {answer}"
    q = f"Is there a {name} in the image? " + answer_instruction(what, example)
    return render(scene, size), q, answer, scene


def _counting(rng, size):
    scene = sample_scene(rng, sign=bool(rng.random() < 0.3))
    q = "How many objects stand on the ground? " + answer_instruction("one number", "2")
    return render(scene, size), q, str(len(scene.things)), scene


def _ordering(rng, size):
    grids, weights = zip(*SETTINGS.ordering_grids)
    weights = np.array(weights, dtype=float)
    rows, cols = grids[int(rng.choice(len(grids), p=weights / weights.sum()))]
    n = rows * cols
    for _ in range(50):  # skip images whose cells are too close in brightness to rank reliably
        scene = sample_scene(rng) if rng.random() < 0.5 else None  # a landscape, or a mosaic of blocks
        image = render(scene, size) if scene is not None else mosaic(rng, rows, cols, size)
        ranks, gap = brightness_ranks(image, rows, cols)
        if gap >= ORDERING_MIN_GAP:
            break
    else:  # every try too close: the bases so far kept the last one (an ill-posed item)
        if SETTINGS.ordering_well_posed:
            image, scene = separated_mosaic(rng, rows, cols, size), None
            ranks, gap = brightness_ranks(image, rows, cols)
    example = " ".join(map(str, np.roll(np.arange(1, n + 1), 1)))
    if SETTINGS.ordering_paraphrases:
        task = ORDERING_TASKS[int(rng.integers(len(ORDERING_TASKS)))]  # drawn last: image and answer unchanged
        q = f"The image is divided into a {rows}x{cols} grid of regions. {grid_description(rows, cols)}\n\n{task}"
    elif SETTINGS.jigsaw_wording:  # the jigsaw prompt's paragraphs, about another task
        q = (f"The image is a {rows}x{cols} grid of tiles: it was cut into {rows} rows and {cols} columns of equal "
             f"tiles. Your task is to rank the tiles by brightness.\n\n{grid_description(rows, cols)}\n\n"
             f"For each position, write the brightness rank of its tile: 1 for the brightest, {n} for the darkest.")
    else:
        q = (f"The image is divided into a {rows}x{cols} grid of regions. {grid_description(rows, cols)}\n\n"
             f"For each position, write the brightness rank of its region: 1 for the brightest, {n} for the darkest.")
    if SETTINGS.ordering_random_example:  # drawn after everything else: image, answer and wording unchanged
        example = " ".join(map(str, rng.permutation(n) + 1))
    if SETTINGS.ordering_varied_wording:  # drawn after everything else: image, answer and example unchanged
        words = {"rows": rows, "cols": cols, "row_word": "row" + "s" * (rows > 1),
                 "col_word": "column" + "s" * (cols > 1)}
        opening = ORDERING_OPENINGS[int(rng.integers(len(ORDERING_OPENINGS)))].format(**words)
        if rng.random() < 0.5:
            opening += f" Your task is to rank the {'tiles' if 'tiles' in opening else 'regions'} by brightness."
        tasks = ORDERING_TASKS + ORDERING_VARIED_TASKS
        task = tasks[int(rng.integers(len(tasks)))]
        if rng.random() < 0.5:
            task += " " + ORDERING_RULES[int(rng.integers(len(ORDERING_RULES)))]
        joint = " " if rng.random() < 0.5 else "\n\n"  # the grid in the opening's paragraph, or in its own
        q = f"{opening}{joint}{grid_description(rows, cols)}\n\n{task}"
    q += "\n\n" + answer_instruction(f"{n} numbers separated by spaces", example)
    return image, q, " ".join(map(str, ranks)), scene


_MAKERS: dict[str, Callable] = {
    "grounding": _grounding, "ocr": _ocr, "perception": _perception,
    "hallucination": _hallucination, "counting": _counting, "ordering": _ordering,
}


def check_skills(skills) -> list[str]:
    skills = list(SKILLS) if skills is None else list(skills)
    unknown = [s for s in skills if s not in SKILLS]
    if unknown or not skills:
        raise ValueError(f"unknown skill(s) {unknown or skills}; the skills are: {', '.join(SKILLS)}")
    return skills


def question_kind(skill: str, question: str, answer: str, image: Image.Image | None = None,
                  scene: Scene | None = None) -> str:
    """The kind of an item's question, to split a skill's accuracy where it is lost (``evaluate.accuracy_by_kind``).

    grounding: ``sun`` or ``object`` (a named object's cell: needs the name bound to the image); perception: one of
    :data:`PERCEPTION_QUESTIONS`; hallucination: the answer, ``yes`` or ``no`` (a base that says yes to absent things
    loses the noes); ordering: the grid, ``RxC``, and given the item's image, ``RxC ill-posed`` where its closest two
    cells lie less than ``ORDERING_MIN_GAP`` apart (no model can read that ranking); counting: the true count; OCR:
    ``digit``.

    Given the item's scene (``Item.scene``), the questions that name an object say what else is in view, to tell
    reading an object from binding a name to it: a named object's cell and the colour or shape of a named one are
    ``... alone`` when it is the scene's only object and ``... among others`` otherwise; a ``no`` is ``no, colour
    seen`` when another object has the asked colour (and none the asked shape), ``no, shape seen``, ``no, both seen``
    or ``no, neither seen`` (POPE's adversarial negatives are the first three: a base that checks only the colour says
    yes to ``no, colour seen``).
    """
    check_skills([skill])
    kind = None
    if skill == "grounding":
        kind = "sun" if "the sun?" in question else "object"
    elif skill == "perception":
        for name, opening in zip(PERCEPTION_QUESTIONS, ("Which side is the light", "What colour is the",
                                                        "What shape is the", "Which colours are", "Which objects are")):
            if opening in question:
                kind = name
                break
    elif skill == "hallucination" and answer.split() and answer.split()[-1] in ("yes", "no"):
        kind = answer.split()[-1]
    elif skill == "ordering":
        grid = re.search(r"(\d+)x(\d+)", question) or re.search(r"(\d+) rows? and (\d+) columns?", question)
        if grid:
            rows, cols = int(grid.group(1)), int(grid.group(2))
            posed = image is None or brightness_ranks(image, rows, cols)[1] >= ORDERING_MIN_GAP
            kind = f"{rows}x{cols}" + ("" if posed else " ill-posed")
    elif skill == "counting":
        kind = answer
    elif skill == "ocr":
        kind = "digit"
    if kind is None:
        raise ValueError(f"not a {skill} question of this world: {question!r} (answer {answer!r})")
    if scene is not None and kind in ("object", "colour", "shape"):
        kind += " alone" if len(scene.things) == 1 else " among others"
    elif scene is not None and kind == "no":
        asked = re.search(r"Is there an? (\w+) (\w+) in the image", question)
        if asked and asked.group(2) in SHAPES:  # a colour and a shape ("red circle"); not a colour alone
            colour = any(t.color == asked.group(1) for t in scene.things)
            shape = any(t.shape == asked.group(2) for t in scene.things)
            kind += ", " + {(True, False): "colour", (False, True): "shape", (True, True): "both",
                            (False, False): "neither"}[colour, shape] + " seen"
    return kind


def item_seed(skill: str, split: str, i: int, seed: int = 0) -> int:
    """The seed of item i: train and test draw from disjoint streams of one SeedSequence."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    keys = [seed, SPLITS.index(split), list(SKILLS).index(skill), i]
    return int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0] >> 1)


def make_item(skill: str, split: str, i: int, seed: int = 0, size: int = 64) -> Item:
    """Item i of a skill's split; the same arguments always give the same item."""
    check_skills([skill])
    s = item_seed(skill, split, i, seed)
    image, question, answer, scene = _MAKERS[skill](np.random.default_rng(s), size)
    extra = np.random.default_rng([s, 1]) if SETTINGS.preamble_rate else None  # its own stream: the item is unchanged
    if extra is not None and extra.random() < SETTINGS.preamble_rate:
        k = int(extra.integers(1, 4))
        chosen = extra.choice(len(PREAMBLES), k, replace=False)
        question = " ".join(PREAMBLES[j] for j in chosen) + "\n\n" + question
    return Item(skill, image, question, answer, s, scene)


def items(skill: str, split: str, n: int, seed: int = 0, size: int = 64) -> list[Item]:
    """The first n items of a skill's split."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"a skill split needs n >= 1 items, got n={n!r}")
    return [make_item(skill, split, i, seed, size) for i in range(n)]


def build_dataset(n_per_skill: int | dict, split: str = "train", seed: int = 0, size: int = 64,
                  skills=None, shuffle_seed: int | None = 0, progress: bool = True, start: int | dict = 0):
    """A TRL-ready ``datasets.Dataset`` of skill items: prompt, completion, image, skill, answer.

    Items ``start .. start + n - 1`` of each skill's split (``start`` per skill if a dict), so
    successive calls can draw fresh items.
    """
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature
    from tqdm.auto import tqdm

    skills = check_skills(skills)
    counts = n_per_skill if isinstance(n_per_skill, dict) else {s: n_per_skill for s in skills}
    rows = {k: [] for k in ("prompt", "completion", "image", "skill", "answer")}
    starts = start if isinstance(start, dict) else {s: start for s in skills}
    total = sum(counts[s] for s in skills)
    with tqdm(total=total, desc=f"{split} items", disable=not progress or total < 2000) as bar:
        for skill in skills:
            for i in range(starts.get(skill, 0), starts.get(skill, 0) + counts[skill]):
                item = make_item(skill, split, i, seed, size)
                buf = io.BytesIO()
                item.image.save(buf, format="PNG", compress_level=1)
                rows["prompt"].append(user_turn(item.question))
                rows["completion"].append(assistant_turn(f"<answer>{item.answer}</answer>"))
                rows["image"].append({"bytes": buf.getvalue(), "path": None})
                rows["skill"].append(skill)
                rows["answer"].append(item.answer)
                bar.update()
    message = [{"role": Value("string"), "content": [{"type": Value("string"), "text": Value("string")}]}]
    features = Features({"prompt": message, "completion": message, "image": ImageFeature(),
                         "skill": Value("string"), "answer": Value("string")})
    ds = Dataset.from_dict(rows, features=features)
    return ds.shuffle(seed=shuffle_seed) if shuffle_seed is not None else ds


def corpus(n: int = 40, seed: int = 0) -> list[str]:
    """Text of the world's prompts and answers, for training the pocket tokenizer."""
    texts = []
    for skill in SKILLS:
        for it in items(skill, "train", n, seed, size=16):
            texts += [it.question, f"<answer>{it.answer}</answer>"]
    return texts
