"""Every numbered notebook runs headless under papermill with smoke parameters, and stays thin."""

import json

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


def test_unknown_parameter_is_an_error_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter.*'rowz'"):
        notebooks.run(NOTEBOOKS[0], {"rowz": 2}, output_dir=tmp_path)


def test_unknown_notebook_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="01_puzzles"):
        notebooks.find("99")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_smoke_parameters(path, tmp_path, monkeypatch):
    for name in ("FIGURES", "RESULTS", "DATA", "RUNS"):
        monkeypatch.setenv(f"JIGSAW_{name}", str(tmp_path / name.lower()))
    out = notebooks.run(path, {"smoke": True}, output_dir=tmp_path / "runs", progress_bar=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = list((tmp_path / "figures").glob("*.png"))
    if path.name.startswith("01_"):
        assert {f.stem for f in figures} >= {"puzzle_sources", "puzzle_grids"}
        assert all(f.with_suffix(".pdf").exists() for f in figures)
