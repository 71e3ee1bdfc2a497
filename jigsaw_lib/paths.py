"""Where the kit reads and writes: one place for every directory, relative to the project root.

Notebooks run with their own folder as the working directory (JupyterLab, papermill ``--cwd
notebooks``); library code, tests and benchmarks run from the root. Resolving everything from this
file makes both agree.

Each output directory can be redirected with an environment variable (``JIGSAW_FIGURES``,
``JIGSAW_RESULTS``, ``JIGSAW_CHECKPOINTS``, ``JIGSAW_DATA``, ``JIGSAW_RUNS``): the tests run the
notebooks with smoke settings into a temporary folder this way, leaving the committed figures and
results untouched.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _dir(variable: str, default: str) -> Path:
    return Path(os.environ.get(variable) or ROOT / default)


FIGURES = _dir("JIGSAW_FIGURES", "figures")  # PNG + PDF of every figure, committed
RESULTS = _dir("JIGSAW_RESULTS", "results")  # tidy CSV tables, committed
CHECKPOINTS = _dir("JIGSAW_CHECKPOINTS", "checkpoints")  # models built or trained here; git-ignored but the pocket base
DATA = _dir("JIGSAW_DATA", "data")  # generated datasets saved to disk, git-ignored
RUNS = _dir("JIGSAW_RUNS", "runs")  # executed notebook copies, git-ignored
