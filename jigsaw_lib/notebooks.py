"""Run the numbered notebooks headless with papermill: the engine of ``make reproduce`` and the tests.

    python -m jigsaw_lib.notebooks                      # every notebooks/NN_*.ipynb, in number order
    python -m jigsaw_lib.notebooks 01 -p rows 2 -p cols 2
    python -m jigsaw_lib.notebooks --smoke              # the tests' tiny settings (smoke=True)

Executed copies go to ``runs/``. Unlike papermill, which only warns, a parameter that a notebook's
``parameters`` cell does not define is an error, so a misspelled setting cannot run silently with
its default. The first failing cell stops the run (papermill raises ``PapermillExecutionError``). A notebook
that declares an ``interactive`` parameter gets ``interactive=False`` unless it is set: its widgets are drawn
once, as no one is there to move them, and a widget cell can hang papermill's client (jupyter/nbclient#312; it
hung ``make reproduce`` once in session 18).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

from . import paths

NOTEBOOKS = paths.ROOT / "notebooks"
_NUMBERED = re.compile(r"^(\d+)_.*\.ipynb$")


def notebook_paths(directory: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in number order."""
    found = [p for p in Path(directory).glob("*.ipynb") if _NUMBERED.match(p.name)]
    return sorted(found, key=lambda p: (int(_NUMBERED.match(p.name).group(1)), p.name))


def find(name: str, directory: Path = NOTEBOOKS) -> Path:
    """A notebook by path, file name, stem or number prefix ('01', '01_puzzles')."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.exists():
        return p
    for nb in notebook_paths(directory):
        if nb.stem == name or nb.name == name or nb.name.split("_", 1)[0] == name:
            return nb
    known = ", ".join(nb.name for nb in notebook_paths(directory)) or "none"
    raise FileNotFoundError(f"no notebook {name!r} in {directory} (numbered notebooks: {known})")


def parameters_of(notebook: Path) -> dict:
    """The parameters a notebook's cell tagged ``parameters`` defines, with their defaults."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def run(notebook: str | Path, parameters: dict | None = None, output_dir: Path | None = None,
        progress_bar: bool = True, log_output: bool = False) -> Path:
    """Execute one notebook with papermill in its own folder; returns the executed copy's path."""
    import papermill

    notebook = find(str(notebook)) if not Path(notebook).exists() else Path(notebook)
    parameters = dict(parameters or {})
    known = parameters_of(notebook)
    if not known and parameters:
        raise ValueError(f"{notebook.name} has no cell tagged 'parameters'; cannot set {sorted(parameters)}")
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for {notebook.name}; its parameters are: {', '.join(known)}"
        )
    if "interactive" in known:
        parameters.setdefault("interactive", False)
    output_dir = Path(output_dir) if output_dir is not None else paths.RUNS
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / notebook.name
    papermill.execute_notebook(str(notebook), str(out), parameters=parameters, cwd=str(notebook.parent),
                               kernel_name="python3", progress_bar=progress_bar, log_output=log_output)
    return out


def _value(text: str):
    """A command-line parameter value: a Python literal if it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="names or numbers; default: all numbered notebooks")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--smoke", action="store_true", help="set smoke=True (tiny, fast settings)")
    parser.add_argument("--output-dir", type=Path, default=paths.RUNS)
    args = parser.parse_args(argv)
    parameters = {name: _value(value) for name, value in args.parameter}
    if args.smoke:
        parameters["smoke"] = True
    targets = [find(n) for n in args.notebooks] if args.notebooks else notebook_paths()
    if not targets:
        print(f"no numbered notebooks in {NOTEBOOKS}", file=sys.stderr)
        return 1
    for nb in targets:
        print(f"== {nb.relative_to(paths.ROOT) if nb.is_relative_to(paths.ROOT) else nb}", flush=True)
        out = run(nb, parameters, output_dir=args.output_dir)
        print(f"   executed copy: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
