"""
Puzzle throughput on one core: 3x3 puzzles per second on 224x224 procedural images, measured as
(a) scene generation + shuffle and (b) shuffle alone on pre-made images; plus build_dataset rows/s.

    .venv/bin/python benchmarks/puzzle_throughput.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jigsaw_lib.puzzles import build_dataset, make_puzzle, procedural_images, procedural_scene  # noqa: E402

N, SIZE, ROWS, COLS = 500, 224, 3, 3


def rate(fn, n):
    fn(0)  # warm up
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


images = [procedural_scene(SIZE, seed=i) for i in range(N)]
gen_and_shuffle = rate(lambda i: make_puzzle(procedural_scene(SIZE, seed=i), ROWS, COLS, seed=i), N)
shuffle_only = rate(lambda i: make_puzzle(images[i], ROWS, COLS, seed=i), N)
start = time.perf_counter()
build_dataset(procedural_images(N, size=SIZE), ROWS, COLS, N)
dataset_rows = N / (time.perf_counter() - start)

print(f"{ROWS}x{COLS} puzzles on {SIZE}x{SIZE} procedural images, {N} each:")
print(f"  generation + shuffle   {gen_and_shuffle:8.0f} puzzles/s")
print(f"  shuffle only           {shuffle_only:8.0f} puzzles/s")
print(f"  build_dataset (+PNG)   {dataset_rows:8.0f} rows/s")
