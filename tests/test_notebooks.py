"""Every numbered notebook runs headless under papermill with smoke parameters, and stays thin."""

import json
import os

import pytest

from jigsaw_lib import notebooks

NOTEBOOKS = notebooks.notebook_paths()


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_with_parameters(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "strip outputs before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    params = notebooks.parameters_of(path)
    assert "smoke" in params and "scale" in params
    # papermill skips a line it cannot parse (an "=" in a comment, say), and that parameter could not be set
    assigned = [line.split("=")[0].strip() for line in "".join(tagged[0]["source"]).splitlines()
                if line and not line.startswith((" ", "#")) and "=" in line]
    assert list(params) == assigned


def test_unknown_parameter_is_an_error_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter.*'rowz'"):
        notebooks.run(NOTEBOOKS[0], {"rowz": 2}, output_dir=tmp_path)


def test_batch_runs_draw_widgets_once(tmp_path, monkeypatch):
    import papermill

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, out, parameters, **kw: seen.update(parameters))
    puzzles_nb = notebooks.find("01")
    assert "interactive" in notebooks.parameters_of(puzzles_nb)
    notebooks.run(puzzles_nb, {"smoke": True}, output_dir=tmp_path)
    assert seen == {"smoke": True, "interactive": False}  # a widget cell can hang papermill (jupyter/nbclient#312)
    notebooks.run(puzzles_nb, {"interactive": True}, output_dir=tmp_path)
    assert seen["interactive"] is True
    seen.clear()
    notebooks.run(notebooks.find("04"), {}, output_dir=tmp_path)  # no such parameter: none added
    assert seen == {}


def test_unknown_notebook_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="01_puzzles"):
        notebooks.find("99")


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    """One output root for the whole sequence: later notebooks read what earlier ones wrote."""
    root = tmp_path_factory.mktemp("smoke")
    names = ("FIGURES", "RESULTS", "DATA", "RUNS", "CHECKPOINTS")
    saved = {n: os.environ.get(f"JIGSAW_{n}") for n in names}
    for n in names:
        os.environ[f"JIGSAW_{n}"] = str(root / n.lower())
    yield root
    for n, v in saved.items():
        if v is None:
            os.environ.pop(f"JIGSAW_{n}", None)
        else:
            os.environ[f"JIGSAW_{n}"] = v


EXPECTED_FIGURES = {
    "00_": {"world_skills", "base_skills", "pretrain_curve", "base_jigsaw_examples", "base_skills_by_kind"},
    "01_": {"puzzle_sources", "puzzle_grids"},
    "03_": {"perplexity_by_source", "influence_vs_step", "influence_heatmap", "influence_symmetry",
            "kl_vs_forgetting", "where_forgetting_sits"},
    "04_": {"jigsaw_and_prior_vs_step", "prior_skills_vs_step", "accuracy_vs_forgetting", "sft_lr_sweep"},
}
EXPECTED_RESULTS = {"00_": {"base_model.csv", "base_model_by_kind.csv"}, "02_": {"metrics.csv"}, "03_": {"dynamics.csv", "kl_vs_forgetting.csv", "grafts.csv"},
                    "04_": {"forgetting_table.csv", "forgetting_table.md", "forgetting_at_matched_accuracy.csv",
                            "forgetting_table_final_probe.csv", "forgetting_table_final_probe.md", "claims.csv",
                            "claims.md"}}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_smoke_parameters(path, smoke_root):
    out = notebooks.run(path, {"smoke": True}, output_dir=smoke_root / "executed", progress_bar=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = {f.stem for f in (smoke_root / "figures").glob("*.png")}
    written = {f.name for f in (smoke_root / "results").glob("*")}
    for prefix, expected in EXPECTED_FIGURES.items():
        if path.name.startswith(prefix):
            assert expected <= figures, expected - figures
            assert all((smoke_root / "figures" / f"{f}.pdf").exists() for f in expected)
    for prefix, expected in EXPECTED_RESULTS.items():
        if path.name.startswith(prefix):
            assert expected <= written, expected - written
