"""The study's runs: notebook 02's plan, run one after another or side by side in worker processes.

    jobs = study.plan("pocket", seeds=[0, 1, 2], sft_lr_sweep=[1e-4, 3e-4, 1e-3], runs_dir=runs_dir)
    metrics = study.run(jobs, workers=2, live=plots.LiveCurves())

:func:`plan` lists the runs of the study (per seed: RFT, SFT on its final and on its early rollouts, SFT, and SFT
on answers with SFT on rollouts' settings; then the SFT learning-rate sweep), each with its config, its folder and
the run it needs: SFT on rollouts samples from RFT's checkpoint, so it starts once that RFT run has finished.
:func:`run` runs them and returns every run's tidy metrics in one table.

Why side by side. The pocket model's matrices are too small to keep two CPU threads busy: on the 2-core machine
of session 28 one GRPO step of the RFT preset took 4.7 s in one process with 2 threads and 6.1 s with 1 thread,
and two 1-thread processes side by side took 6.6 and 7.2 s a step each, about 1.36 times the work of one 2-thread
process. (Two processes of two threads each fight over the cores: 5-6 times slower each, by the project's notes.) So on a CPU
:func:`run` starts one worker process per core, each with one thread, and hands them the runs as the runs they
need finish (:func:`next_jobs`). The thread count does not change what a run learns or measures: SFT and RFT runs
with 1 and 2 threads logged equal losses, rewards and evaluations, value for value (session 28); each run seeds
itself (the trainer's seed, the rollouts' sampling seed), so its metrics do not depend on which worker ran it or
what it ran before. Its ``wall_seconds`` do: side by side, a run's steps take longer (they share the cores), and
the study ends sooner.

With ``workers=1`` (and on a GPU, where one process owns the device: several GPUs are ``accelerate launch``'s
job) the runs go one after another in this process, with the trainer's own progress bars and the live curves as
they train. With several workers each run's output goes to ``<run folder>/run.log``, the live curves are redrawn
from the running runs' ``metrics.csv`` files, and one progress bar counts the optimizer steps of all runs.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from . import config

RUNNERS = {"sft": "run_sft", "rft": "run_rft", "rollout_sft": "run_rollout_sft"}
METHODS = ("rft", "rollout_sft", "rollout_sft_early", "sft", "sft_matched")  # a seed's runs, in the order started


@dataclass
class Job:
    """One run of the study: its config, its folder, and the run whose checkpoint it reads (``needs``).

    ``same_as`` names a run whose metrics this one reuses under its own label, unrun (the sweep's point at the
    preset's learning rate is seed 0's SFT run).
    """

    cfg: config.RunConfig
    output_dir: Path
    needs: str | None = None
    same_as: str | None = None

    @property
    def name(self) -> str:
        return self.cfg.run_name


def plan(scale: str = "pocket", *, seeds=(0, 1, 2), methods=METHODS, sft_lr_sweep=(), early_step: int = 25,
         runs_dir: str | Path, overrides: dict | None = None, common: dict | None = None) -> list[Job]:
    """Notebook 02's runs, in the order they are started.

    Per seed: RFT (keeping its model of ``early_step``), SFT on its final model's correct rollouts, SFT on its
    ``early_step`` model's, then SFT on answers, and SFT on answers with SFT on rollouts' settings (``sft_matched``,
    :func:`config.answers_control`: the control of C5; its config follows ``rollout_sft``'s overrides); then the SFT
    sweep on seed 0, one run per learning rate (a rate equal to the preset's reuses seed 0's SFT run, if it is
    planned). ``overrides`` maps a method to config overrides ({"rft": {"learning_rate": 3e-5}}); ``common``
    overrides every run's config.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; the methods are: {', '.join(METHODS)}")
    rollouts = [m for m in methods if m.startswith("rollout")]
    if rollouts and "rft" not in methods:
        raise ValueError(f"{rollouts} learn from RFT's rollouts: add 'rft' to methods")
    overrides, common, runs_dir = overrides or {}, common or {}, Path(runs_dir)
    unknown = sorted(set(overrides) - set(config.CLASSES))
    if unknown:
        raise ValueError(f"overrides for unknown method(s) {unknown}; the methods are: {', '.join(config.CLASSES)}")

    def make(method, seed, **kw):
        return config.make(method, scale, seed=seed, **{**common, **overrides.get(method, {}), **kw})

    def job(cfg, **kw):
        return Job(cfg, runs_dir / cfg.run_name, **kw)

    jobs = []
    for seed in seeds:
        if "rft" in methods:
            rft = job(make("rft", seed, save_steps=[early_step]))
            jobs.append(rft)
            if "rollout_sft" in methods:
                jobs.append(job(make("rollout_sft", seed, rollouts_from=str(rft.output_dir / "final")),
                                needs=rft.name))
            if "rollout_sft_early" in methods:
                jobs.append(job(make("rollout_sft", seed, rollouts_from=str(rft.output_dir / f"model-step{early_step}"),
                                     name="rollout_sft_early"), needs=rft.name))
        if "sft" in methods:
            jobs.append(job(make("sft", seed)))
        if "sft_matched" in methods:  # SFT on answers with SFT on rollouts' settings (config.answers_control)
            jobs.append(job(config.answers_control(make("rollout_sft", seed))))
    preset_lr = make("sft", 0).learning_rate
    for lr in sft_lr_sweep:
        cfg = make("sft", 0, learning_rate=lr, name=f"sft_lr{lr:g}")
        reuse = math.isclose(lr, preset_lr) and "sft" in methods and 0 in seeds
        jobs.append(job(cfg, same_as="sft-seed0" if reuse else None))
    return jobs


def default_workers() -> int:
    """One worker per CPU core on a CPU; 1 on a GPU (one process owns it)."""
    import torch

    return 1 if torch.cuda.is_available() else _cores()


def _cores() -> int:
    """The CPU cores this process may run on (a container's share, where the machine has more)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


def _execute(job: Job, **kw) -> pd.DataFrame:
    """Run one job in this process and return its metrics."""
    from . import train

    return getattr(train, RUNNERS[job.cfg.method])(job.cfg, job.output_dir, **kw).metrics


def _execute_in_worker(job: Job, threads: int) -> pd.DataFrame:
    """Run one job in a worker process with ``threads`` threads; what it prints goes to ``<run folder>/run.log``.

    In a notebook, ipykernel forwards what the kernel's children write to the notebook: two runs' progress bars and
    logs would interleave there. The log keeps each run's output with the run (the trainer's logs, warnings, a
    traceback); the notebook shows one progress bar for all runs.
    """
    import sys
    import traceback

    import torch

    torch.set_num_threads(threads)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    with open(job.output_dir / "run.log", "w") as log:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
            return _execute(job, progress=False)
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _read(csv: Path) -> pd.DataFrame | None:
    """A running job's metrics.csv up to its last whole line, or None where it has none yet."""
    import io

    try:
        text = csv.read_text()
    except OSError:  # not written yet, or removed by a run that starts anew
        return None
    text = text[: text.rfind("\n") + 1]  # a worker may be writing the last line
    try:
        return pd.read_csv(io.StringIO(text)) if text.count("\n") > 1 else None
    except (ValueError, pd.errors.ParserError):
        return None


def _check(jobs: list[Job]) -> None:
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"two jobs would write to one run folder: {sorted(n for n in names if names.count(n) > 1)}")
    before = set()
    for j in jobs:
        for other in filter(None, (j.needs, j.same_as)):
            if other not in names:
                raise ValueError(f"{j.name} needs the run {other}, which is not in the plan")
            if other not in before:
                raise ValueError(f"{j.name} needs the run {other}, which the plan lists after it")
        if j.same_as and next(o for o in jobs if o.name == j.same_as).same_as:
            raise ValueError(f"{j.name} reuses {j.same_as}, which reuses another run: name that run")
        before.add(j.name)


def next_jobs(pending: list[Job], running: int, done, workers: int) -> list[Job]:
    """The jobs to start now: as many as there are free workers, of those whose needed run is done; first the runs
    that others wait for (RFT), the rest in the plan's order."""
    needed = {j.needs for j in pending}
    ready = [j for j in pending if j.needs is None or j.needs in done]
    ready.sort(key=lambda j: j.name not in needed)
    return ready[:max(0, workers - running)]


def run(jobs: list[Job], workers: int | None = None, *, live=None, progress: bool = True,
        poll_seconds: float = 5.0) -> pd.DataFrame:
    """Run ``jobs`` (from :func:`plan`) and return their metrics, concatenated in the plan's order.

    ``workers=None`` is :func:`default_workers`. ``live`` (a :class:`jigsaw_lib.plots.LiveCurves`) redraws the
    curves as the runs evaluate. ``progress=False`` turns off the runs' own progress bars (in turn); side by side
    there is one bar for all runs. One failing run stops the study: side by side, the runs still going are stopped.
    """
    _check(jobs)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not jobs:
        return pd.DataFrame(columns=["method", "seed", "step", "metric", "value"])
    todo = [j for j in jobs if not j.same_as]
    done: dict[str, pd.DataFrame] = {}
    if workers == 1:
        for j in todo:  # in the plan's order, which _check has shown puts every needed run first
            if live is not None:
                live.finished = pd.concat(done.values()) if done else None
            done[j.name] = _execute(j, progress=progress, callbacks=[live] if live is not None else [])
    else:
        _run_side_by_side(todo, min(workers, len(todo)), done, live, poll_seconds)
    for j in jobs:
        if j.same_as:
            done[j.name] = done[j.same_as].assign(method=j.cfg.label)
    return pd.concat([done[j.name] for j in jobs], ignore_index=True)


def _run_side_by_side(todo: list[Job], workers: int, done: dict, live, poll_seconds: float) -> None:
    """Hand the jobs to ``workers`` processes (:func:`next_jobs`) and poll their metrics for the curves and bar."""
    from concurrent.futures.process import BrokenProcessPool

    from tqdm.auto import tqdm

    threads = max(1, _cores() // workers)
    pending, running = list(todo), {}
    bar = tqdm(total=sum(j.cfg.max_steps for j in todo), desc=f"{len(todo)} runs, {workers} workers", unit="step")
    start = time.perf_counter()
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    try:
        while pending or running:
            for j in next_jobs(pending, len(running), done, workers):
                # a run trained before in this folder: its metrics would show until the new run starts anew
                (j.output_dir / "metrics.csv").unlink(missing_ok=True)
                running[pool.submit(_execute_in_worker, j, threads)] = j
                pending.remove(j)
            if not running:
                raise RuntimeError(f"no run can start: {[j.name for j in pending]} wait for runs not planned")
            finished, _ = wait(running, timeout=poll_seconds, return_when=FIRST_COMPLETED)
            for future in finished:
                j = running.pop(future)
                try:
                    done[j.name] = future.result()
                except BrokenProcessPool as e:
                    raise RuntimeError(f"a worker process died (killed, or out of memory?) while running "
                                       f"{sorted([j.name] + [o.name for o in running.values()])}") from e
                except BaseException as e:
                    raise RuntimeError(f"run {j.name} failed ({type(e).__name__}: {e}); what it printed is in "
                                       f"{j.output_dir / 'run.log'}") from e
            frames = {j.name: _read(j.output_dir / "metrics.csv") for j in running.values()}
            bar.n = sum(j.cfg.max_steps for j in todo if j.name in done) + sum(
                int(f.step.max()) for f in frames.values() if f is not None and len(f))
            bar.set_postfix_str(", ".join(frames))
            bar.refresh()
            if live is not None:
                live.finished = pd.concat(done.values()) if done else None
                shown = [f for f in frames.values() if f is not None]
                live.update(pd.concat(shown, ignore_index=True) if shown else None)
    except BaseException:
        # an error or an interrupt: stop the runs still going (a pool's shutdown would wait for them to end)
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    if live is not None:  # the last runs' final points
        live.finished = None
        live.draw(pd.concat(done.values(), ignore_index=True))
    print(f"{len(todo)} runs on {workers} workers ({threads} thread(s) each): "
          f"{(time.perf_counter() - start) / 60:.1f} min")
