"""What notebook 02 adds to training: the same short SFT runs inside the notebook (papermill) and in a plain loop.

    python benchmarks/notebook_overhead.py [--steps 60] [--seeds 3]

Notebook 02 runs a dozen trainings in one kernel, with live curves and progress bars. This runs ``--seeds`` SFT runs
of ``--steps`` steps on the cached pocket base, first through notebook 02 (papermill, as ``make reproduce`` does),
then with ``train.run_sft`` in this process, into a temporary folder (the committed results and checkpoints are not
touched), and prints each run's training seconds per step (``wall_seconds``, evaluation excluded). A notebook that
costs more per step than the plain loop, or more with each run, spends that time outside training.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT = dict(eval_every=30, eval_jigsaw=20, eval_prior=10, eval_kl=4, probe_jigsaw=0, probe_prior=0)


def per_step(metrics, steps: int):
    w = metrics[metrics.metric == "wall_seconds"]
    return (w.groupby("seed")["value"].max() / steps).round(3).to_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--notebook-only", action="store_true", help="skip the plain loop")
    parser.add_argument("--no-progress", action="store_true",
                        help="the trainer without its progress display (disable_tqdm; it prints its logs instead)")
    args = parser.parse_args(argv)
    base = ROOT / "checkpoints" / "pocket-base"
    if not (base / "config.json").exists():
        raise SystemExit(f"no pocket base at {base}: run notebooks/00_base_model.ipynb first")
    tmp = Path(tempfile.mkdtemp(prefix="nb-overhead-"))
    for var, sub in [("JIGSAW_CHECKPOINTS", "checkpoints"), ("JIGSAW_RESULTS", "results"),
                     ("JIGSAW_FIGURES", "figures"), ("JIGSAW_RUNS", "runs"), ("JIGSAW_DATA", "data")]:
        os.environ[var] = str(tmp / sub)  # before jigsaw_lib is imported, and inherited by the notebook's kernel
    shutil.copytree(base, tmp / "checkpoints" / "pocket-base")
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from jigsaw_lib import config, notebooks, paths, train

    seeds = list(range(args.seeds))
    short = dict(SHORT, max_steps=args.steps, **({"trl": {"disable_tqdm": True}} if args.no_progress else {}))
    t = time.perf_counter()
    notebooks.run("02", dict(methods=["sft"], seeds=seeds, sft_lr_sweep=[], overrides={"sft": short}),
                  progress_bar=False)
    in_notebook = time.perf_counter() - t
    notebook = pd.read_csv(paths.RESULTS / "metrics.csv")
    print(f"SFT, {args.steps} steps a run, seconds of training per step by seed (evaluation excluded):")
    print(f"  notebook 02 (papermill): {per_step(notebook, args.steps)}   whole notebook {in_notebook:.0f} s")
    if not args.notebook_only:
        t = time.perf_counter()
        copy = str(paths.CHECKPOINTS / "pocket-base")
        plain = pd.concat([train.run_sft(config.make("sft", seed=s, base=copy, **short), tmp / "plain" / f"sft-seed{s}",
                                         progress=False).metrics for s in seeds])
        print(f"  plain loop:              {per_step(plain, args.steps)}   all runs {time.perf_counter() - t:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
