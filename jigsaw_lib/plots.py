"""One plotting style for every figure of the kit, and one way to save them.

Every notebook calls :func:`use_style` once and :func:`save_figure` for each figure, so figures
share fonts, palette and size, and land in ``figures/`` as PNG and PDF under a stable name.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from transformers import TrainerCallback

from . import paths

# One colour per method, used by every figure that compares methods.
METHOD_COLORS = {
    "base": "#7f7f7f",
    "sft": "#d62728",
    "rft": "#1f77b4",
    "rollout_sft": "#2ca02c",
    "rollout_sft_early": "#98df8a",
    "sft_matched": "#ff9896",  # SFT on answers at SFT on rollouts' settings: SFT's colour, lighter
    "reasoning": "#ff7f0e",
}
# One colour per data source of the learning-dynamics analysis (matching the method each source feeds).
SOURCE_COLORS = {
    "sft_answers": METHOD_COLORS["sft"],
    "rft_rollouts": METHOD_COLORS["rft"],
    "rft_rollouts_early": METHOD_COLORS["rollout_sft_early"],
    "reasoning": METHOD_COLORS["reasoning"],
}


def use_style() -> None:
    """Seaborn's paper context with a white grid; call once at the top of a notebook."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.2)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                                "axes.titleweight": "bold"})


def save_figure(fig, name: str, directory: str | Path | None = None) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` and ``<name>.pdf`` in ``figures/`` (or ``directory``).

    The PDF carries no creation date, so a figure drawn again from the same numbers is the same file.
    """
    if not name or any(c in name for c in "/\\ ") or name.endswith((".png", ".pdf")):
        raise ValueError(f"figure name {name!r} must be a bare stem like 'puzzle_examples' (no path, no suffix)")
    out = Path(directory) if directory is not None else paths.FIGURES
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        target = out / f"{name}{suffix}"
        fig.savefig(target, metadata={"CreationDate": None} if suffix == ".pdf" else None)
        written.append(target)
    return written


def draw_grid(ax, image, rows: int, cols: int, numbers: list[int] | None = None) -> None:
    """Show ``image`` with the grid's tile borders and, if given, one number per position."""
    import numpy as np

    ax.imshow(np.asarray(image))
    w, h = image.size
    for r in range(1, rows):
        ax.axhline(r * h / rows, color="white", lw=1.2)
    for c in range(1, cols):
        ax.axvline(c * w / cols, color="white", lw=1.2)
    if numbers is not None:
        for i, number in enumerate(numbers):
            r, c = divmod(i, cols)
            ax.text((c + 0.5) * w / cols, (r + 0.5) * h / rows, str(number), ha="center", va="center",
                    color="white", fontsize=11, fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "black", "alpha": 0.45, "lw": 0})
    ax.set_xticks([])
    ax.set_yticks([])


def puzzle_panel(puzzle, answer: list[int] | None = None, axes=None, title: str | None = None):
    """Original | shuffled (each position labelled with its answer number) | reassembled by ``answer``.

    ``answer`` defaults to the puzzle's solution, so the third panel must equal the first; pass a
    model's answer to see what it put where. Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .puzzles import reassemble

    answer = list(puzzle.solution if answer is None else answer)
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    else:
        fig = axes[0].figure
    draw_grid(axes[0], puzzle.original, puzzle.rows, puzzle.cols,
               numbers=list(range(1, puzzle.rows * puzzle.cols + 1)))
    axes[0].set_title("original (positions)")
    draw_grid(axes[1], puzzle.image, puzzle.rows, puzzle.cols, numbers=answer)
    axes[1].set_title("shuffled (answer)")
    draw_grid(axes[2], reassemble(puzzle.image, puzzle.rows, puzzle.cols, answer), puzzle.rows, puzzle.cols)
    axes[2].set_title("reassembled")
    if title:
        axes[0].set_ylabel(title)
    return fig


class LiveCurves(TrainerCallback):
    """A training callback that redraws the tracked curves in the notebook each time a run evaluates.

    Add it to a run (``train.run_rft(cfg, callbacks=[live])``); it reads the run's ``metrics.csv``
    (written by :class:`jigsaw_lib.tracking.Tracker`) and ``finished`` (the tidy metrics of runs done
    before), and redraws one panel per metric in place.
    """

    def __init__(self, metrics=("jigsaw_exact", "prior_mean", "kl_to_base"), finished=None):
        self.metrics, self.finished = list(metrics), finished
        self._drawn, self._handle = None, None

    def on_step_end(self, args, state, control, **kwargs):
        import pandas as pd

        csv = Path(args.output_dir).parent / "metrics.csv"
        if not state.is_world_process_zero or not csv.exists():
            return
        self.update(pd.read_csv(csv))

    def update(self, run):
        """Redraw with ``run`` (the tidy metrics of the runs in progress, or None) if a tracked curve has a new point.

        The trainer's own logs reach metrics.csv at every step; until session 24 a figure was drawn (and sent to
        papermill) at every step of every run of notebook 02. :func:`jigsaw_lib.study.run` calls this with the
        metrics of the runs its workers train.
        """
        if run is None:
            return
        tracked = run[run.metric.isin(self.metrics)]
        latest = (len(tracked), tracked.step.max() if len(tracked) else None)
        if latest == self._drawn or not len(tracked):
            return
        self._drawn = latest
        self.draw(run)

    def draw(self, run):
        import matplotlib.pyplot as plt
        import pandas as pd
        from IPython.display import display

        frames = [run] + ([self.finished] if self.finished is not None and len(self.finished) else [])
        data = pd.concat(frames, ignore_index=True)
        fig, axes = plt.subplots(1, len(self.metrics), figsize=(3.6 * len(self.metrics), 3))
        for ax, metric in zip(axes, self.metrics):
            m = data[data.metric == metric]
            for (method, seed), g in m.groupby(["method", "seed"]):
                ax.plot(g.step, g.value, color=METHOD_COLORS.get(method), alpha=0.8,
                        label=method if seed == m[m.method == method].seed.min() else None)
            ax.set(title=metric, xlabel="step")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
