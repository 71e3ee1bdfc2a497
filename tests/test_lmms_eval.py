"""jigsaw_lib.lmms_eval: the lmms-eval command it builds and the results it reads (no lmms-eval, no network).

tests/data/lmms_eval_results.json follows the file lmms-eval 0.7.3 (PyPI wheel; same code in
EvolvingLMMs-Lab/lmms-eval on GitHub) writes with --output_path: lmms_eval/loggers/evaluation_tracker.py
save_results_aggregated (the JSON dump, the model-folder/<date>_results.json path, the model_* fields),
lmms_eval/evaluator.py simple_evaluate ("results", "group_subtasks", "configs", "versions", "n-shot",
"higher_is_better", "n-samples", "config", "git_hash", "date", ...), lmms_eval/evaluator_utils.py
consolidate_results ("alias", "<metric>,none", "_stderr", "_stderr_clt", "_stderr_clustered", "N/A", and []
for returned-but-unaggregated values such as mmmu_val's "submission"). Metric names come from each task's
yaml: tasks/refcoco/_default_template_bbox_rec_yaml, tasks/docvqa/docvqa_val.yaml, tasks/mme/mme.yaml,
tasks/mmstar/_default_template_yaml, tasks/pope/pope.yaml, tasks/mmmu/mmmu_val.yaml. Values are made up
(near Qwen2.5-VL-7B's); "configs" keeps a subset of each TaskConfig's fields.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from jigsaw_lib import lmms_eval as le

FIXTURE = Path(__file__).parent / "data" / "lmms_eval_results.json"


def test_fixture_covers_every_paper_task_and_primary_metric():
    results = json.loads(FIXTURE.read_text())["results"]
    assert set(results) == set(le.PAPER_TASKS)
    for task in le.PAPER_TASKS:
        metric = le.PRIMARY_METRIC[task]
        if task != "mme":  # mme_total_score is derived
            assert f"{metric},none" in results[task]
    for table in (le.SKILL_FAMILY, le.POCKET_SKILL, le.PRIMARY_METRIC, le.PAPER_FACTOR):
        assert set(table) == set(le.PAPER_TASKS)


def test_read_results_tidy_rows():
    df = le.read_results(FIXTURE, "sft-answers")
    assert list(df.columns) == ["model", "skill", "metric", "value"]
    assert set(df["model"]) == {"sft-answers"}
    assert set(df["skill"]) == {f"lmms/{t}" for t in le.PAPER_TASKS}
    assert df["value"].dtype == float
    got = {(s, m): v for s, m, v in zip(df["skill"], df["metric"], df["value"])}
    assert got[("lmms/pope", "pope_accuracy")] == 0.8697
    assert got[("lmms/docvqa_val", "anls")] == 0.9462
    assert got[("lmms/mmstar", "science & technology")] == 0.488
    assert got[("lmms/refcoco_bbox_rec_val", "refcoco_ACC@0.5")] == 0.9003
    assert got[("lmms/mme", "mme_total_score")] == pytest.approx(1695.4218 + 641.7857)
    # 7 REC metrics, anls, 2 MME parts + total, 7 MMStar, 5 POPE, mmmu_acc
    assert len(df) == 7 + 1 + 3 + 7 + 5 + 1


def test_read_results_drops_stderr_alias_and_non_numbers():
    df = le.read_results(FIXTURE, "m")
    metrics = set(df["metric"])
    assert not any("stderr" in m for m in metrics)
    assert not any("," in m for m in metrics)  # ",none" stripped
    assert "alias" not in metrics
    # mmmu_val's returned-but-unaggregated values are [] in the file: skipped, not zeros
    assert df[df["skill"] == "lmms/mmmu_val"]["metric"].tolist() == ["mmmu_acc"]


def test_read_results_primary_only():
    df = le.read_results(FIXTURE, "m", primary_only=True)
    assert dict(zip(df["skill"], df["metric"])) == {f"lmms/{t}": le.PRIMARY_METRIC[t] for t in le.PAPER_TASKS}


def test_read_results_skips_na_nan_and_keeps_other_filters(tmp_path):
    data = {"results": {"pope": {"alias": "pope", "pope_accuracy,none": "N/A", "pope_f1_score,none": float("nan"),
                                 "pope_recall,none": 1},
                        "ai2d": {"alias": "ai2d", "exact_match,flexible-extract": 0.8}},
            "model_name": "Qwen/Qwen2.5-VL-7B-Instruct"}
    path = tmp_path / "20260101_000000_results.json"
    path.write_text(json.dumps(data))  # writes NaN as lmms-eval's json.dumps does
    df = le.read_results(path)
    assert df["model"].unique().tolist() == ["Qwen/Qwen2.5-VL-7B-Instruct"]  # from the file
    assert sorted(zip(df["skill"], df["metric"], df["value"])) == [
        ("lmms/ai2d", "exact_match,flexible-extract", 0.8), ("lmms/pope", "pope_recall", 1.0)]


def test_find_results_file_newest_nested(tmp_path):
    older = tmp_path / "qwen2.5-vl-7b__base" / "20260101_000000_results.json"
    newer = tmp_path / "qwen2.5-vl-7b__sft" / "20260102_000000_results.json"
    for i, p in enumerate((older, newer)):
        p.parent.mkdir(parents=True)
        shutil.copy(FIXTURE, p)
        os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))
    (tmp_path / "qwen2.5-vl-7b__sft" / "20260102_000000_samples_pope.jsonl").write_text("{}\n")
    assert le.find_results_file(tmp_path) == newer
    assert len(le.read_results(tmp_path, "m")) == 24  # a directory reads its newest file


def test_find_results_file_missing_names_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        le.find_results_file(tmp_path)


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_build_command_single_process(tmp_path):
    ckpt = tmp_path / "sft-answers"
    ckpt.mkdir()
    cmd = le.build_command(ckpt, output_dir=tmp_path / "out", python="/venv/bin/python",
                           extra_model_args={"max_pixels": 1605632, "attn_implementation": "sdpa"})
    assert cmd[:3] == ["/venv/bin/python", "-m", "lmms_eval"]
    assert _flag(cmd, "--model") == "qwen2_5_vl"
    assert _flag(cmd, "--model_args") == f"pretrained={ckpt.resolve()},max_pixels=1605632,attn_implementation=sdpa"
    assert _flag(cmd, "--tasks") == "refcoco_bbox_rec_val,docvqa_val,mme,mmstar,pope,mmmu_val"
    assert _flag(cmd, "--batch_size") == "1"
    assert _flag(cmd, "--output_path") == str(tmp_path / "out")
    assert "--limit" not in cmd and "--log_samples" not in cmd


def test_build_command_multi_process_limit_and_hub_id():
    cmd = le.build_command("Qwen/Qwen2.5-VL-3B-Instruct", tasks=["pope", "mme"], num_processes=8, batch_size=2,
                           limit=20, log_samples=True, python="py")
    assert cmd[:7] == ["py", "-m", "accelerate.commands.launch", "--num_processes", "8", "-m", "lmms_eval"]
    assert _flag(cmd, "--model_args") == "pretrained=Qwen/Qwen2.5-VL-3B-Instruct"  # not a local dir: kept as is
    assert _flag(cmd, "--tasks") == "pope,mme"
    assert _flag(cmd, "--batch_size") == "2"
    assert _flag(cmd, "--limit") == "20"
    assert "--log_samples" in cmd
    as_list = le.build_command("m", tasks=["pope", "mme"], python="py")
    assert le.build_command("m", tasks="pope,mme", python="py") == as_list


def test_build_command_rejects_unknown_tasks_and_bad_args():
    with pytest.raises(ValueError, match="refcoco_bbox_rec_val"):  # the message lists PAPER_TASKS
        le.build_command("m", tasks=["pope", "gqa"])
    assert "gqa" in le.build_command("m", tasks=["gqa"], allow_any_task=True)
    with pytest.raises(ValueError, match="cannot hold one"):
        le.build_command("m", extra_model_args={"system_prompt": "a, b"})
    with pytest.raises(ValueError):
        le.build_command("m", num_processes=0)


def test_run_missing_python_names_path_and_install(tmp_path):
    missing = tmp_path / ".venv-lmms" / "bin" / "python"
    with pytest.raises(FileNotFoundError) as err:
        le.run("m", python=missing, output_dir=tmp_path)
    assert str(missing) in str(err.value) and "requirements-lmms-eval.txt" in str(err.value)


def test_run_reads_what_the_subprocess_wrote(tmp_path):
    """A stand-in 'python' that writes the fixture where lmms-eval would: run() parses it."""
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\nimport shutil, sys, pathlib\n"
                    "out = pathlib.Path(sys.argv[sys.argv.index('--output_path') + 1]) / 'org__model'\n"
                    "out.mkdir(parents=True)\n"
                    f"shutil.copy({str(FIXTURE)!r}, out / '20260312_143015_results.json')\n")
    fake.chmod(0o755)
    df = le.run("org/model", output_dir=tmp_path / "out", python=fake, model_name="base", primary_only=True)
    assert len(df) == 6 and set(df["model"]) == {"base"}


def test_run_refuses_stale_results(tmp_path):
    """lmms-eval exits 0 even when evaluation raised: an old results file must not pass for a new one."""
    stale = tmp_path / "out" / "m" / "20250101_000000_results.json"
    stale.parent.mkdir(parents=True)
    shutil.copy(FIXTURE, stale)
    os.utime(stale, (1_600_000_000, 1_600_000_000))
    fake = tmp_path / "fake_python"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="no new"):
        le.run("m", output_dir=tmp_path / "out", python=fake)
