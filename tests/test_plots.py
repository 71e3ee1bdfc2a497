"""The one way figures are saved: PNG and PDF under a stable name, the same bytes when drawn again."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from jigsaw_lib import plots  # noqa: E402


def draw():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0.24, 0.5, 0.66])
    return fig


def test_save_figure_writes_png_and_pdf_that_repeat(tmp_path):
    first = plots.save_figure(draw(), "curve", tmp_path / "a")
    second = plots.save_figure(draw(), "curve", tmp_path / "b")
    assert [p.name for p in first] == ["curve.png", "curve.pdf"]
    # no creation date in the PDF: re-running a notebook on the same numbers leaves figures/ unchanged
    assert b"/CreationDate" not in first[1].read_bytes()
    assert first[1].read_bytes() == second[1].read_bytes()
    assert first[0].read_bytes() == second[0].read_bytes()
    plt.close("all")


@pytest.mark.parametrize("name", ["", "figures/curve", "curve.png", "my curve"])
def test_save_figure_rejects_names_that_are_not_stems(tmp_path, name):
    with pytest.raises(ValueError, match="bare stem"):
        plots.save_figure(draw(), name, tmp_path)
    plt.close("all")


def test_live_curves_redraw_only_when_a_tracked_curve_has_a_new_point(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import pandas as pd

    live = plots.LiveCurves()
    drawn = []
    monkeypatch.setattr(live, "draw", lambda run: drawn.append(len(run)))
    args = SimpleNamespace(output_dir=str(tmp_path / "trainer"))
    state = SimpleNamespace(is_world_process_zero=True)
    csv = tmp_path / "metrics.csv"

    def log(step, metric):
        pd.DataFrame([dict(method="rft", seed=0, step=step, metric=metric, value=0.5)]).to_csv(
            csv, mode="a", header=not csv.exists(), index=False)
        live.on_step_end(args, state, None)

    live.on_step_end(args, state, None)  # no metrics.csv yet
    log(0, "jigsaw_exact")  # an evaluation: drawn
    log(1, "train/loss")  # the trainer's logs of every step: not drawn
    log(2, "train/loss")
    log(2, "prior_mean")  # a tracked metric again: drawn
    log(3, "train/reward")
    assert drawn == [1, 4]
