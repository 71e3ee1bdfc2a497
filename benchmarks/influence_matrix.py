"""Benchmark: the 64 x 64 influence matrix (64 jigsaw training samples on 64 prior-skill samples).

Times, on the pocket model: the first-order matrix from per-sample gradients (full parameters), the
measured one-step matrix (64 SGD steps, each followed by re-scoring the 64 prior samples), and the
same first-order matrix in a count-sketch projection and in a parameter subspace, with how well
those track the full one (Pearson r over the 4,096 entries). Target: <= 60 s for the 64 x 64 matrix.

    .venv/bin/python benchmarks/influence_matrix.py [--checkpoint DIR] [--n 64]
"""

import argparse
import time

import numpy as np
import torch

from jigsaw_lib import dynamics, paths, puzzles
from jigsaw_lib.models import PocketSpec, build_pocket, load


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(paths.CHECKPOINTS / "pocket-base"),
                        help="a pocket checkpoint (default: the cached base; a fresh pocket model if absent)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--project", type=int, default=8192)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    try:
        model, processor = load(args.checkpoint)
        which = args.checkpoint
    except FileNotFoundError:
        path = paths.CHECKPOINTS / "bench-pocket"
        build_pocket(PocketSpec(), save_dir=path)
        model, processor = load(path)
        which = "fresh pocket model (random weights; no cached base)"
    size = args.image_size
    data = puzzles.build_dataset(puzzles.procedural_images(args.n, size=int(size), seed=0), 2, 2, n=args.n, seed=0,
                                 answer_format="direct")
    train = dynamics.Samples.from_dataset(data)
    per_skill = -(-args.n // 6)
    probe = dynamics.prior_samples(per_skill, size=int(size)).head(args.n)
    print(f"model: {which}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{torch.get_num_threads()} threads; {len(train)} x {len(probe)} matrix")

    t = time.perf_counter()
    first = dynamics.gradient_influence(model, processor, train, probe, lr=1e-5)
    t_first = time.perf_counter() - t
    print(f"first-order (full gradients): {t_first:.1f} s")

    t = time.perf_counter()
    measured = dynamics.step_influence(model, processor, train, probe, lr=1e-5)
    t_step = time.perf_counter() - t
    r = np.corrcoef(measured.delta.ravel(), first.delta.ravel())[0, 1]
    print(f"measured one-step (lr 1e-5): {t_step:.1f} s; Pearson r with first-order: {r:.3f}")

    for label, kw in [(f"count sketch k={args.project}", {"project": args.project}),
                      ("subspace: last text layer", {"subspace": r"language_model\.layers\.3\."})]:
        t = time.perf_counter()
        approx = dynamics.gradient_influence(model, processor, train, probe, lr=1e-5, **kw)
        sec = time.perf_counter() - t
        r = np.corrcoef(approx.delta.ravel(), first.delta.ravel())[0, 1]
        print(f"{label}: {sec:.1f} s; Pearson r with full: {r:.3f}")
    print(f"64x64 target <= 60 s: first-order {'met' if t_first <= 60 else 'NOT met'}, "
          f"measured {'met' if t_step <= 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
