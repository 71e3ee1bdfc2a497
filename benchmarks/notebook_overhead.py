"""What notebook 02 adds to training, and what running its runs side by side saves.

    python benchmarks/notebook_overhead.py [--steps 60] [--seeds 3] [--methods rft rollout_sft rollout_sft_early sft]
                                           [--workers 1 2] [--notebook-only]

Notebook 02 runs a dozen trainings, with live curves and progress bars. This runs ``--seeds`` runs of each of
``--methods`` (default: SFT only) of ``--steps`` steps on the cached pocket base, through notebook 02 (papermill, as
``make reproduce`` does, in its order: per seed RFT, SFT on its rollouts, on its early rollouts, SFT) once for each
``--workers`` value (1: in turn in the kernel; 2: side by side in two worker processes, one thread each,
:mod:`jigsaw_lib.study`), then in turn in this process (the plain loop), into a temporary folder (the committed
results and checkpoints are not touched). It prints each run's training seconds per step (``wall_seconds``,
evaluation excluded), the whole notebook's seconds, and whether each notebook's numbers equal the first's. A
notebook in turn (workers=1) that costs more per step than the plain loop, or more with each run, spends that time
outside training; side by side a run's steps take longer (two runs share the cores) and the notebook less.
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
METHODS = ("rft", "rollout_sft", "rollout_sft_early", "sft")
ROLLOUTS = dict(n_train=256)  # SFT on rollouts: fewer puzzles to sample from (the sampling is not a training step)


def per_step(metrics, steps: int) -> str:
    w = metrics[metrics.metric == "wall_seconds"]
    per = (w.groupby(["method", "seed"], sort=False)["value"].max() / steps).round(3)
    return ", ".join(f"{m} {s}: {v}" for (m, s), v in per.items())


def plain_loop(study, base: str, methods, seeds, overrides: dict, early_step: int, out: Path):
    """Notebook 02's runs in its order, with the library's own calls and no notebook, one after another."""
    jobs = study.plan(seeds=seeds, methods=methods, early_step=early_step, runs_dir=out, overrides=overrides,
                      common={"base": base})
    return study.run(jobs, workers=1, progress=False)


def same_numbers(a, b) -> bool:
    """Equal metrics value for value, wall_seconds (a timing) aside."""
    def values(m):
        m = m[m.metric != "wall_seconds"]
        return m.set_index(["method", "seed", "step", "metric"])["value"].sort_index()

    return values(a).equals(values(b))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--notebook-only", action="store_true", help="skip the plain loop")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="run notebook 02 once with each of these workers (1: runs in turn; 2: side by side, "
                             "one thread each, on this 2-core machine)")
    parser.add_argument("--no-progress", action="store_true",
                        help="the trainer without its progress display (disable_tqdm; it prints its logs instead)")
    parser.add_argument("--methods", nargs="+", default=["sft"], choices=METHODS,
                        help="notebook 02's methods to run (SFT on rollouts needs rft)")
    args = parser.parse_args(argv)
    if any(m.startswith("rollout") for m in args.methods) and "rft" not in args.methods:
        parser.error("SFT on rollouts samples from the RFT run of its seed: add rft to --methods")
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

    from jigsaw_lib import notebooks, paths, study

    seeds = list(range(args.seeds))
    short = dict(SHORT, max_steps=args.steps, **({"trl": {"disable_tqdm": True}} if args.no_progress else {}))
    early_step = max(1, args.steps // 2)
    overrides = {m: short for m in ("rft", "sft")} | {"rollout_sft": {**short, **ROLLOUTS}}
    print(f"{args.steps} steps a run, seconds of training per step by method and seed (evaluation excluded):")
    first = None
    for workers in args.workers:
        shutil.rmtree(paths.CHECKPOINTS / "runs", ignore_errors=True)  # every notebook trains its runs anew
        t = time.perf_counter()
        notebooks.run("02", dict(methods=list(args.methods), seeds=seeds, sft_lr_sweep=[], early_step=early_step,
                                 overrides=overrides, workers=workers), progress_bar=False)
        in_notebook = time.perf_counter() - t
        notebook = pd.read_csv(paths.RESULTS / "metrics.csv")
        print(f"  notebook 02 (papermill), workers={workers}: {per_step(notebook, args.steps)}   "
              f"whole notebook {in_notebook:.0f} s")
        if first is None:
            first = notebook
        else:
            print(f"    same numbers as workers={args.workers[0]}: {same_numbers(first, notebook)}")
    if not args.notebook_only:
        t = time.perf_counter()
        plain = plain_loop(study, str(paths.CHECKPOINTS / "pocket-base"), args.methods, seeds, overrides,
                           early_step, tmp / "plain")
        print(f"  plain loop:              {per_step(plain, args.steps)}   all runs {time.perf_counter() - t:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
