"""Time a pretraining step of the pocket base: batches of mixed prompt lengths vs grouped by length.

    .venv/bin/python benchmarks/pretrain_step.py [--steps 25]

Runs ``pretrain.pretrain`` (the real path: TRL's SFTTrainer on the world's skills) for a few steps on the
last curriculum stage's mixture (all six skills), once as shipped and once with ``group_by_length``
(the tower frozen as shipped; its vision pretraining, which sets its weights but not the step's cost, is
skipped), and prints the median wall time per optimizer step after five warm-up steps. The prompts run from ~45
tokens (OCR, counting) to ~130 (3x3 ordering), so about 40% of a mixed batch is padding to its longest
prompt.
"""

import argparse
import statistics
import tempfile

import torch
from _timing import StepTimer

from jigsaw_lib import pretrain


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=25)
    a = parser.parse_args()
    mix = pretrain.CURRICULUM[-1]["mix"]
    shipped_steps = pretrain.PretrainConfig().steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 32, mixture {mix}")
    for grouped in (False, True):
        config = pretrain.PretrainConfig(stages=[{"steps": a.steps, "mix": mix}], group_by_length=grouped,
                                         vision_steps=0)
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as out:
            pretrain.pretrain(config, out, progress=False, callbacks=[timer])
        step = statistics.median(timer.times[5:])
        print(f"{'grouped by length' if grouped else 'mixed lengths    '}: {step:.3f} s/step "
              f"({shipped_steps:,} steps: {shipped_steps * step / 60:.1f} min of training)")


if __name__ == "__main__":
    main()
