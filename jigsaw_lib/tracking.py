"""Tracking a run: new-task accuracy, every prior skill and KL to the base model, every K steps.

:class:`Tracker` is a TRL/transformers ``TrainerCallback``. At step 0 (the base model), every
``eval_every`` optimizer steps and at the last step it measures

- ``jigsaw_exact``, ``jigsaw_hit``, ``jigsaw_well_formed``: greedy answers on held-out puzzles;
- ``jigsaw_row_hit``, ``jigsaw_col_hit``: the share of tiles those answers send to their right row, and to
  their right column (:func:`evaluate.axis_hits`): RFT can learn one axis and not the other;
- ``prior/<skill>`` and ``prior_mean``: held-out accuracy of every prior skill (pocket scale);
- ``kl_to_base``: KL(pi_0 || pi) on held-out jigsaw prompts (:class:`dynamics.KLProbe`);
- ``wall_seconds``: training time so far, evaluation excluded;
- ``probe/<metric>``, at step 0 and the last step only, when the config sets ``probe_jigsaw`` / ``probe_prior``:
  the same jigsaw and prior metrics on larger held-out sets (:func:`evaluate.measure`), for verdicts that a
  small probe's noise cannot decide;

and copies what the trainer logs (loss, reward, entropy, ``frac_reward_zero_std``, ...) as ``train/<key>``,
so a collapse of GRPO (entropy near 0, most groups without reward spread) is seen at once. Rows follow
the results schema ``method, seed, step, metric, value`` and are appended to ``<output_dir>/metrics.csv``
as they come, so an interrupted run keeps what it measured; on resume, rows after the checkpoint's step
are dropped and measured again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainerCallback

from . import evaluate
from .analysis import PROBE
from .dynamics import KLProbe
from .models import load, save

# the base model's measures (step 0), per base and setting: greedy answers and the KL probe are deterministic, so the
# runs of one process measure the base once (notebook 02's dozen runs: once in turn, once per worker side by side,
# study.run); Tracker._base_once
_BASE_MEASURES: dict[str, list] = {}
TRAIN_KEYS = ("loss", "reward", "reward_std", "entropy", "frac_reward_zero_std", "kl", "grad_norm",
              "rewards/hit_reward/mean", "rewards/exact_reward/mean", "rewards/format_reward/mean",
              "completions/mean_length", "mean_token_accuracy")


def _fingerprint(base: str) -> list:
    """The base's name and, for a checkpoint directory, every file's name, size and time: a base retrained or
    copied in place is measured again."""
    path = Path(base)
    if not path.is_dir():
        return [base]
    return [base] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(path.iterdir()) if p.is_file()]


class Tracker(TrainerCallback):
    def __init__(self, cfg, processor, output_dir, *, prior: bool = True, progress: bool = False):
        self.cfg, self.processor, self.progress, self.prior = cfg, processor, progress, prior
        self.output_dir = Path(output_dir)
        self.csv = self.output_dir / "metrics.csv"
        self.rows: list[dict] = []
        self.kl: KLProbe | None = None
        self.train_seconds = 0.0
        self._t = None

    # -- bookkeeping -------------------------------------------------------------------------------
    def _add(self, step: int, metric: str, value: float):
        row = {"method": self.cfg.label, "seed": self.cfg.seed, "step": int(step), "metric": metric,
               "value": float(value)}
        self.rows.append(row)
        pd.DataFrame([row]).to_csv(self.csv, mode="a", header=not self.csv.exists(), index=False)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["method", "seed", "step", "metric", "value"])

    # -- measuring ---------------------------------------------------------------------------------
    def _kl_probe(self, device):
        # the reference model samples on the policy's device: at paper scale a 3B model on the CPU would take hours
        base, _ = load(self.cfg.base)
        base.to(device)
        with self.cfg.in_puzzle_world():
            data = evaluate.jigsaw_eval_set(*self.cfg.grids[0], self.cfg.eval_kl, self.cfg.image_size,
                                            self.cfg.answer_format, seed=evaluate.JIGSAW_TEST_SEED + 1)
        probe = KLProbe(base, self.processor, data["prompt"], data["image"], samples=4,
                        max_new_tokens=self.cfg.max_completion_length)
        del base
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return probe

    def _base_once(self, model, what: str, sizes, compute):
        """``compute()`` of the base model (step 0), once a process for one base and one setting: greedy answers
        and the KL probe's fixed samples are deterministic, so every run of notebook 02 in a process (in turn: all
        of them; side by side: a worker's) would measure the same numbers again."""
        cfg = self.cfg
        key = json.dumps([what, _fingerprint(cfg.base), str(model.device), str(model.dtype), cfg.puzzle_world, cfg.grids,
                          cfg.image_size, cfg.answer_format, cfg.max_completion_length, sizes], sort_keys=True)
        if key not in _BASE_MEASURES:
            _BASE_MEASURES[key] = compute()
        return _BASE_MEASURES[key]

    def measure(self, model, step: int, *, final: bool = False):
        cfg = self.cfg
        sizes = (cfg.eval_jigsaw, cfg.eval_prior if self.prior else 0, cfg.eval_kl)

        def small():
            return (list(evaluate.measure(model, self.processor, cfg, *sizes[:2], progress=self.progress)),
                    self.kl.measure(model))

        evaluation, kl = self._base_once(model, "eval", sizes, small) if step == 0 else small()
        for metric, value in evaluation:
            self._add(step, metric, value)
        if (step == 0 or final) and (cfg.probe_jigsaw or (cfg.probe_prior and self.prior)):
            # the larger final probe: the base and the run's last model, on more puzzles and items
            probe_sizes = (cfg.probe_jigsaw, cfg.probe_prior if self.prior else 0)

            def probe():
                return evaluate.measure(model, self.processor, cfg, *probe_sizes, axes=False, progress=self.progress)

            for metric, value in self._base_once(model, "probe", probe_sizes, probe) if step == 0 else probe():
                self._add(step, PROBE + metric, value)
        self._add(step, "kl_to_base", kl)
        self._add(step, "wall_seconds", self.train_seconds)

    def keep(self, model, step: int):
        """Save the model of ``step`` if the run's ``save_steps`` ask for it (evaluated there or not)."""
        if step in self.cfg.save_steps:
            save(model, self.processor, self.output_dir / f"model-step{step}")

    # -- callback hooks ----------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.main = state.is_world_process_zero  # under accelerate, only the main process measures
        if not self.main:
            return
        if self.csv.exists():  # resuming: keep what was measured up to the checkpoint
            old = pd.read_csv(self.csv)
            old = old[old.step <= state.global_step]
            old.to_csv(self.csv, index=False)
            self.rows = old.to_dict("records")
            times = old[old.metric == "wall_seconds"]
            self.train_seconds = float(times["value"].max()) if len(times) else 0.0
        if self.kl is None:
            self.kl = self._kl_probe(model.device)
        if state.global_step == 0 and not self.rows:
            self.measure(model, 0)
            self.keep(model, 0)
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.main:
            return
        self.train_seconds += time.perf_counter() - self._t
        step = state.global_step
        if step % self.cfg.eval_every == 0 or step == state.max_steps:
            self.measure(model, step, final=step == state.max_steps)
        self.keep(model, step)
        self._t = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        for key in TRAIN_KEYS:
            if logs and key in logs:
                self._add(state.global_step, f"train/{key}", logs[key])

