"""Tracking a run: new-task accuracy, every prior skill and KL to the base model, every K steps.

:class:`Tracker` is a TRL/transformers ``TrainerCallback``. At step 0 (the base model), every
``eval_every`` optimizer steps and at the last step it measures

- ``jigsaw_exact``, ``jigsaw_hit``, ``jigsaw_well_formed``: greedy answers on held-out puzzles;
- ``jigsaw_row_hit``, ``jigsaw_col_hit``: the share of tiles those answers send to their right row, and to
  their right column (:func:`evaluate.axis_hits`): RFT can learn one axis and not the other;
- ``prior/<skill>`` and ``prior_mean``: held-out accuracy of every prior skill (pocket scale);
- ``kl_to_base``: KL(pi_0 || pi) on held-out jigsaw prompts (:class:`dynamics.KLProbe`);
- ``wall_seconds``: training time so far, evaluation excluded;

and copies what the trainer logs (loss, reward, entropy, ``frac_reward_zero_std``, ...) as ``train/<key>``,
so a collapse of GRPO (entropy near 0, most groups without reward spread) is seen at once. Rows follow
the results schema ``method, seed, step, metric, value`` and are appended to ``<output_dir>/metrics.csv``
as they come, so an interrupted run keeps what it measured; on resume, rows after the checkpoint's step
are dropped and measured again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainerCallback

from . import evaluate
from .dynamics import KLProbe
from .models import load, save

TRAIN_KEYS = ("loss", "reward", "reward_std", "entropy", "frac_reward_zero_std", "kl", "grad_norm",
              "rewards/hit_reward/mean", "rewards/exact_reward/mean", "rewards/format_reward/mean",
              "completions/mean_length", "mean_token_accuracy")


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

    def measure(self, model, step: int):
        cfg = self.cfg
        with cfg.in_puzzle_world():  # held-out puzzles in the run's puzzle world; prior skills below in the base's
            jig = evaluate.evaluate_jigsaw(model, self.processor, [tuple(g) for g in cfg.grids], cfg.eval_jigsaw,
                                           samples=0, image_size=cfg.image_size, answer_format=cfg.answer_format,
                                           max_new_tokens=cfg.max_completion_length, progress=self.progress,
                                           axes=True)
        for metric in ("exact", "hit", "well_formed", "row_hit", "col_hit"):
            per_grid = jig[jig.metric == metric]
            self._add(step, f"jigsaw_{metric}", per_grid["value"].mean())
            if len(per_grid) > 1:
                for _, r in per_grid.iterrows():
                    self._add(step, f"jigsaw_{metric}/{r.skill.removeprefix('jigsaw_')}", r.value)
        if self.prior:
            skills = evaluate.evaluate_skills(model, self.processor, cfg.eval_prior, image_size=cfg.image_size,
                                              progress=self.progress)
            for _, r in skills.iterrows():
                self._add(step, f"prior/{r.skill}", r.value)
            self._add(step, "prior_mean", skills["value"].mean())
        self._add(step, "kl_to_base", self.kl.measure(model))
        self._add(step, "wall_seconds", self.train_seconds)
        if step in cfg.save_steps:
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
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.main:
            return
        self.train_seconds += time.perf_counter() - self._t
        step = state.global_step
        if step % self.cfg.eval_every == 0 or step == state.max_steps:
            self.measure(model, step)
        self._t = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        for key in TRAIN_KEYS:
            if logs and key in logs:
                self._add(state.global_step, f"train/{key}", logs[key])

