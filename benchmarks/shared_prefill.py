"""Sampling several answers per prompt: each prompt read once (the kit's ``generate``) against once per sample.

    .venv/bin/python benchmarks/shared_prefill.py [--checkpoint checkpoints/pocket-base] [--prompts 256] [--samples 4]

SFT on rollouts samples 4 answers to each of 2,048 puzzles from an RFT checkpoint, the jigsaw evaluation 8 per
puzzle for pass@8, and the KL probe 4 per prompt. A pocket prompt is about 190 tokens and an answer about 8, so
reading the prompt is nearly all the work, and ``generate(num_return_sequences=k)`` reads it k times.
``evaluate.generate`` reads it once (``evaluate.generate_shared``), and since session 30 the instruction that all
the puzzles' prompts begin with is read once a batch (``jigsaw_lib.prefix``, installed by ``models.load``). This
times the three on the study's puzzles with the same seed: per sample with neither, each prompt once, and both; and
counts the samples that are the same token for token as the first's.
"""

import argparse
import time

import torch

from jigsaw_lib import config, evaluate, pretrain, train
from jigsaw_lib.pretrain import base_world


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(pretrain.DEFAULT_DIR))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    a = parser.parse_args()
    from jigsaw_lib.models import load
    from jigsaw_lib.prefix import share_prefix

    cfg = config.make("rollout_sft", "pocket")
    with base_world(cfg.base):
        model, processor = load(a.checkpoint)
        data = train.train_dataset(cfg, n=a.prompts)
        prompts, images = list(data["prompt"]), list(data["image"])
        times, drawn = {}, {}
        ways = {"each prompt read per sample": (False, False), "each prompt read once": (False, True),
                "and the instruction once a batch": (True, True)}
        for way, (prefix, shared) in ways.items():
            share_prefix(model, enable=prefix)
            torch.manual_seed(0)
            start = time.perf_counter()
            drawn[way] = evaluate.generate(model, processor, prompts, images, do_sample=True, num_samples=a.samples,
                                           shared_prefill=shared, return_ids=True, progress=False)
            times[way] = time.perf_counter() - start
    first = next(iter(ways))
    print(f"{a.prompts} puzzles x {a.samples} samples from {a.checkpoint}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for way in ways:
        same = sum(x == y for gx, gy in zip(drawn[first], drawn[way]) for x, y in zip(gx, gy))
        print(f"  {way:34s} {times[way]:5.1f} s  ({times[first] / times[way]:.2f}x)  same samples {same} of "
              f"{a.prompts * a.samples}")


if __name__ == "__main__":
    main()
