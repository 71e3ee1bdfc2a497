"""
Paper-scale prior knowledge: evaluate a checkpoint on the paper's six benchmarks with lmms-eval.

arXiv 2506.23508 measures what fine-tuning on jigsaw puzzles does to Qwen2.5-VL's prior knowledge on
six standard lmms-eval tasks (https://github.com/EvolvingLMMs-Lab/lmms-eval). Each stands for one
skill family, and at pocket scale for one skill of the kit's synthetic world (jigsaw_lib/world.py):

    task                   family              pocket skill   what it asks
    refcoco_bbox_rec_val   grounding           grounding      RefCOCO val: box the object a phrase names
    docvqa_val             ocr                 ocr            DocVQA val: read an answer off a document
    mme                    perception          perception     MME: 2,374 yes/no questions in 14 subtasks
    mmstar                 general VQA         counting       MMStar: 1,500 vision-indispensable MCQs
    pope                   hallucination       hallucination  POPE: "Is there a <object> in the image?"
    mmmu_val               reasoning           ordering       MMMU val: college-level multiple choice

RefCOCO is lmms-eval's REC task (phrase -> box, scored by IoU): "refcoco_bbox_val" is the reverse,
captioning a boxed region (CIDEr), and refcoco_grounding_* (Qwen-style pixel boxes) has no val split.

lmms-eval is NOT installed in .venv: it pulls ~100 packages the kit does not pin. It gets its own
virtual environment, and this module only calls that environment's python:

    python3 -m venv .venv-lmms && .venv-lmms/bin/pip install -r requirements-lmms-eval.txt

Then, with the datasets reachable (they come from the Hugging Face hub):

    from jigsaw_lib import lmms_eval
    df = lmms_eval.run("checkpoints/sft-answers", model_name="sft-answers")   # tidy rows
    lmms_eval.read_results("runs/lmms_eval", "sft-answers", primary_only=True)

What lmms-eval writes (read from its source, version 0.7.3: lmms_eval/loggers/evaluation_tracker.py
save_results_aggregated; lmms_eval/evaluator.py simple_evaluate; lmms_eval/evaluator_utils.py
consolidate_results / prepare_print_tasks): ``--output_path DIR`` gets
``DIR/<model>/<YYYYMMDD_HHMMSS>_results.json``, where <model> is the last two parts of ``pretrained=``
with "/" turned into "__". Its "results" maps task -> {"alias": task, "<metric>,<filter>": value,
"<metric>_stderr,<filter>": ..., "<metric>_stderr_clt,<filter>": ..., "<metric>_stderr_clustered,
<filter>": ...}; the filter is "none" for all six tasks; a stderr lmms-eval cannot compute is the
string "N/A", a value a task returns but does not aggregate is [] (mmmu_val's "submission,none").
Beside "results": "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
"config" (model, model_args, batch_size, limit, ...), "git_hash", "date", "model_name", ...

Two quirks handled here: ``python -m lmms_eval`` exits 0 even when the evaluation raised (it prints
the traceback unless --verbosity DEBUG), so run() insists on a results file that was not there before;
and the qwen2_5_vl model asserts it got no unknown model_args, so extra_model_args must be among
pretrained, device_map, attn_implementation, min_pixels, max_pixels, max_num_frames, fps,
system_prompt, interleave_visuals, reasoning_prompt, use_cache, batch_size.
"""

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from jigsaw_lib import paths

LMMS_PYTHON = paths.ROOT / ".venv-lmms" / "bin" / "python"  # not resolved: a venv python is a symlink
INSTALL_HINT = "python3 -m venv .venv-lmms && .venv-lmms/bin/pip install -r requirements-lmms-eval.txt"
OUTPUT_DIR = paths.RUNS / "lmms_eval"  # raw lmms-eval output (git-ignored); tidy rows go to results/

PAPER_TASKS = ("refcoco_bbox_rec_val", "docvqa_val", "mme", "mmstar", "pope", "mmmu_val")

SKILL_FAMILY = {"refcoco_bbox_rec_val": "grounding", "docvqa_val": "ocr", "mme": "perception",
                "mmstar": "general VQA", "pope": "hallucination", "mmmu_val": "reasoning"}
POCKET_SKILL = {"refcoco_bbox_rec_val": "grounding", "docvqa_val": "ocr", "mme": "perception",
                "mmstar": "counting", "pope": "hallucination", "mmmu_val": "ordering"}

# The number the paper reports per task. Scales as lmms-eval writes them: 0..1 everywhere except MME,
# which is in points (perception 0..2000 over 10 subtasks, cognition 0..800 over 4; each subtask is
# accuracy + accuracy+ in percent). The paper reports 0..1 metrics as percentages (PAPER_FACTOR).
PRIMARY_METRIC = {
    "refcoco_bbox_rec_val": "refcoco_ACC@0.5",  # box correct at IoU >= 0.5 (REC accuracy)
    "docvqa_val": "anls",  # average normalised Levenshtein similarity
    # Derived here: perception + cognition, 0..2800. The paper's MME drop for SFT (-1854 points for the
    # 7B, whose perception alone is ~1,700) only fits the total; both parts are rows of their own too.
    "mme": "mme_total_score",
    "mmstar": "average",  # mean over MMStar's six categories
    "pope": "pope_accuracy",  # exact "yes"/"no" match: unparseable answers count as wrong
    "mmmu_val": "mmmu_acc",
}
PAPER_FACTOR = {task: (1.0 if task == "mme" else 100.0) for task in PAPER_TASKS}

_STDERR = re.compile(r"_stderr(_clt|_clustered)?$")


def _model_args(checkpoint, extra_model_args):
    """lmms-eval's "k=v,k=v" string: pretrained first, then the extras; commas would split a value."""
    ckpt = Path(checkpoint)
    pretrained = str(ckpt.resolve()) if ckpt.exists() else str(checkpoint)  # local dir, or a hub id
    args = {"pretrained": pretrained, **(extra_model_args or {})}
    for key, value in args.items():
        if "," in str(value):
            raise ValueError(f"model_args {key}={value!r}: lmms-eval splits model_args on ',', so values cannot hold one")
    return ",".join(f"{k}={v}" for k, v in args.items())


def build_command(checkpoint, tasks=PAPER_TASKS, output_dir=OUTPUT_DIR, batch_size=1, num_processes=1, limit=None,
                  python=LMMS_PYTHON, model="qwen2_5_vl", extra_model_args=None, log_samples=False,
                  allow_any_task=False):
    """The argv that evaluates `checkpoint` on `tasks` with lmms-eval, writing under `output_dir`.

    One process: ``python -m lmms_eval ...`` (the model spreads over visible GPUs with device_map=auto).
    Several: ``python -m accelerate.commands.launch --num_processes N -m lmms_eval ...`` (data parallel,
    one GPU each), the `accelerate launch` of lmms-eval's README run by the lmms environment's python.
    `limit` (examples per task, or a fraction if < 1) is for smoke tests only: lmms-eval warns that
    limited metrics are not real ones.
    """
    tasks = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise ValueError("no tasks given")
    unknown = [t for t in tasks if t not in PAPER_TASKS]
    if unknown and not allow_any_task:
        raise ValueError(f"unknown tasks {unknown}; the paper's are {list(PAPER_TASKS)} "
                         "(allow_any_task=True for others)")
    if int(num_processes) < 1 or int(batch_size) < 1:
        raise ValueError(f"num_processes and batch_size must be >= 1, got {num_processes}, {batch_size}")
    launcher = ["-m", "lmms_eval"]
    if int(num_processes) > 1:
        launcher = ["-m", "accelerate.commands.launch", "--num_processes", str(int(num_processes))] + launcher
    cmd = [str(python), *launcher,
           "--model", model,
           "--model_args", _model_args(checkpoint, extra_model_args),
           "--tasks", ",".join(tasks),
           "--batch_size", str(int(batch_size)),
           "--output_path", str(output_dir)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if log_samples:
        cmd += ["--log_samples"]
    return cmd


def _check_python(python):
    """The lmms environment's interpreter must exist; say how to make it if not."""
    found = shutil.which(str(python)) if "/" not in str(python) else (str(python) if Path(python).exists() else None)
    if found is None:
        raise FileNotFoundError(f"lmms-eval's python {str(python)!r} not found; create it with: {INSTALL_HINT}")


def run(checkpoint, tasks=PAPER_TASKS, output_dir=OUTPUT_DIR, model_name=None, primary_only=False, python=LMMS_PYTHON,
        **kwargs):
    """Evaluate `checkpoint` with lmms-eval (a subprocess) and return its tidy rows (see read_results).

    kwargs go to build_command (batch_size, num_processes, limit, model, extra_model_args, ...).
    Raises FileNotFoundError if the lmms environment is missing, CalledProcessError if lmms-eval fails,
    RuntimeError if it exited 0 without writing a new results file (it swallows evaluation errors).
    """
    _check_python(python)
    cmd = build_command(checkpoint, tasks=tasks, output_dir=output_dir, python=python, **kwargs)
    before = _results_files(output_dir)
    subprocess.run(cmd, check=True)
    new = {p: t for p, t in _results_files(output_dir).items() if before.get(p) != t}
    if not new:
        raise RuntimeError(f"lmms-eval exited 0 but wrote no new *_results.json under {output_dir}; it only logs "
                           "evaluation errors: see its output above, or rerun with --verbosity DEBUG")
    path = max(new, key=lambda p: (new[p], p.name))
    return read_results(path, model_name or str(checkpoint), primary_only=primary_only)


def _results_files(output_dir):
    """Every ``*_results.json`` under `output_dir` (lmms-eval nests them in a model folder) -> mtime."""
    return {p: p.stat().st_mtime_ns for p in Path(output_dir).rglob("*_results.json")}


def find_results_file(output_dir):
    """The newest ``*_results.json`` anywhere under `output_dir` (lmms-eval nests it in a model folder)."""
    files = _results_files(output_dir)
    if not files:
        raise FileNotFoundError(f"no lmms-eval *_results.json under {output_dir}")
    return max(files, key=lambda p: (files[p], p.name))


def _number(value):
    """A finite float, or None for what lmms-eval writes when it has no number ("N/A", [], NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_results(path_or_dir, model_name=None, primary_only=False):
    """lmms-eval's results file (or the newest under a directory) as tidy rows: model, skill, metric, value.

    skill is "lmms/<task>"; metric is lmms-eval's name without the ",none" filter suffix (another filter
    stays, as "<metric>,<filter>"); alias, stderr entries and non-numbers are dropped. MME also gets
    "mme_total_score" = perception + cognition. model_name defaults to the file's own "model_name".
    primary_only keeps one row per task, PRIMARY_METRIC's.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        path = find_results_file(path)
    data = json.loads(path.read_text())
    model = model_name or data.get("model_name") or data.get("config", {}).get("model", "unknown")
    rows = []
    for task, entries in data["results"].items():
        metrics = {}
        for key, value in entries.items():
            name, sep, filt = key.rpartition(",")
            if not sep or _STDERR.search(name) or (v := _number(value)) is None:
                continue
            metrics[name if filt == "none" else key] = v
        if task == "mme" and {"mme_perception_score", "mme_cognition_score"} <= metrics.keys():
            metrics["mme_total_score"] = metrics["mme_perception_score"] + metrics["mme_cognition_score"]
        for name, v in metrics.items():
            if not primary_only or PRIMARY_METRIC.get(task) == name:
                rows.append({"model": model, "skill": f"lmms/{task}", "metric": name, "value": v})
    return pd.DataFrame(rows, columns=["model", "skill", "metric", "value"])
