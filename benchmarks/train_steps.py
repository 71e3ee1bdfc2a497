"""Time one SFT step and one GRPO step on the pocket Qwen2.5-VL (CPU), as the kit runs them.

    .venv/bin/python benchmarks/train_steps.py [--steps 6] [--grid 2x2]

Builds the default pocket model (random weights; step time does not depend on them, except that
GRPO's generation stops early once a model emits <|im_end|>: max_completion_length bounds it),
makes puzzles on 64x64 procedural images, and prints the median wall time per optimizer step after
one warm-up step.
"""

import argparse
import statistics
import tempfile

import torch
from _timing import StepTimer

from jigsaw_lib import puzzles, train
from jigsaw_lib.models import PocketSpec, build_pocket, load, n_parameters


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--grid", default="2x2")
    parser.add_argument("--sft-batch", type=int, default=16)
    parser.add_argument("--grpo-prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion-tokens", type=int, default=24)
    a = parser.parse_args()
    rows, cols = (int(x) for x in a.grid.split("x"))
    spec = PocketSpec()
    n = max(a.sft_batch, a.grpo_prompts) * (a.steps + 1)
    data = puzzles.build_dataset(puzzles.procedural_images(n, size=spec.image_size), rows, cols, n=n,
                                 answer_format="direct")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; grid {a.grid}, "
          f"image {spec.image_size}px")
    with tempfile.TemporaryDirectory() as out:
        model, processor = build_pocket(spec)
        print(f"pocket model: {n_parameters(model) / 1e6:.2f}M parameters")
        timer = StepTimer()
        trainer = train.sft_trainer(model, processor, data, out, max_steps=a.steps + 1, learning_rate=1e-3,
                                    per_device_train_batch_size=a.sft_batch, disable_tqdm=True,
                                    logging_steps=1000)
        trainer.add_callback(timer)
        trainer.train()
        sft = statistics.median(timer.times[1:])
        print(f"SFT  step: {sft:.3f} s  (batch {a.sft_batch} puzzles)")

        build_pocket(spec, save_dir=f"{out}/pocket")  # GRPO re-loads its KL reference from disk
        model, processor = load(f"{out}/pocket")
        timer = StepTimer()
        trainer = train.grpo_trainer(model, processor, data, out, max_steps=a.steps + 1, learning_rate=1e-5,
                                     per_device_train_batch_size=a.grpo_prompts * a.generations,
                                     num_generations=a.generations, max_completion_length=a.completion_tokens,
                                     disable_tqdm=True, logging_steps=1000)
        trainer.add_callback(timer)
        trainer.train()
        grpo = statistics.median(timer.times[1:])
        print(f"GRPO step: {grpo:.3f} s  ({a.grpo_prompts} prompts x {a.generations} rollouts, "
              f"{a.completion_tokens} completion tokens max, beta 0.04)")


if __name__ == "__main__":
    main()
