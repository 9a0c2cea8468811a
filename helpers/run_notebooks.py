"""Execute the workbook's notebooks in place and write the scorecard (``make run``).

Usage: ``python -m helpers.run_notebooks [notebook ...]`` — with no arguments every
``notebooks/NN_*.ipynb`` runs in order. Each notebook's wall time is printed as it
finishes; the run stops at the first failing notebook and says which cell failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import config, results


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The notebooks to run, in order; names may be stems, file names or paths."""
    all_notebooks = sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return all_notebooks
    chosen = []
    for name in names:
        chosen.append(_one_notebook(name, all_notebooks))
    return chosen


def _one_notebook(name: str, all_notebooks: list[Path]) -> Path:
    """The notebook ``name`` names: its file name, its stem, or its two-digit number (``"03"``)."""
    choices = ", ".join(path.stem for path in all_notebooks)
    wanted = Path(name).name
    matches = [path for path in all_notebooks if wanted in (path.name, path.stem)
               or (len(wanted) == 2 and wanted.isdigit() and path.stem[:2] == wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise SystemExit(f"No notebook matches {name!r}: give a two-digit number (e.g. '03'), a stem or a "
                         f"file name; choose from: {choices}")
    raise SystemExit(f"{name!r} matches {len(matches)} notebooks ({', '.join(p.stem for p in matches)}); "
                     f"give one two-digit number, stem or file name.")


def execute(path: Path, timeout: int = 1800) -> float:
    """Run one notebook top to bottom, saving its outputs in place; return seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        nbformat.write(notebook, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="stems or prefixes such as 00 or 05_quantization")
    args = parser.parse_args(argv)
    os.environ.setdefault("WORKBOOK_PROFILE", "quick")
    config.profile()  # fail early on a bad profile name
    paths = notebook_paths(args.notebooks)
    total_start = time.perf_counter()
    minutes: dict[str, float] = {}
    for index, path in enumerate(paths, start=1):
        print(f"[{index}/{len(paths)}] {path.name} ...", flush=True)
        try:
            seconds = execute(path)
        except Exception as error:  # nbclient raises CellExecutionError with the cell and traceback
            print(f"[{index}/{len(paths)}] {path.name} FAILED:\n{error}", file=sys.stderr)
            return 1
        minutes[path.stem] = seconds / 60
        print(f"[{index}/{len(paths)}] {path.name} done in {seconds / 60:.1f} min", flush=True)
    total_minutes = (time.perf_counter() - total_start) / 60
    scorecard = results.scorecard()
    results.save_run_times(minutes)
    if not args.notebooks:  # a partial run must not overwrite the README's full table
        results.update_readme()
    print(f"All {len(paths)} notebooks ran in {total_minutes:.1f} min; "
          f"scorecard written to {scorecard.relative_to(config.PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
