"""Open-in-Colab badges and the Colab-only first cell of every notebook.

Every notebook starts with a badge that opens it on Colab and a code cell that, only on
Colab, clones the workbook, installs it and switches the models to their hub ids (Colab
has internet and its own PyTorch). Everywhere else that cell does nothing.

The badges point at :data:`REPOSITORY`. If you host the workbook elsewhere (a fork, a
workshop copy), repoint every notebook with::

    python -m helpers.colab your-name/your-repository
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from . import config
from .models import EMBEDDER_HUB_ID, LLM_HUB_ID

REPOSITORY = "llm-optimization-workbook/llm-optimization-workbook"
BRANCH = "main"
SETUP_TAG = "colab-setup"
_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\n*")
_REPOSITORY_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
COLAB_DIR = "/content/workbook"
# Extras of pyproject.toml a notebook needs on Colab, by its two-digit prefix (default: none).
# Only 11 starts Ray Serve and reads manifests; notebook 12 imports nothing from the serve extra.
NOTEBOOK_EXTRAS = {"11": ("serve",)}


def _check_repository(repository: str) -> str:
    if not _REPOSITORY_NAME.match(repository or ""):
        raise ValueError(f"Repository must look like 'owner/name' (a GitHub repository), got {repository!r}.")
    return repository


def badge_markdown(notebook_name: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The 'Open in Colab' badge for ``notebooks/<notebook_name>`` in ``repository``."""
    _check_repository(repository)
    url = f"https://colab.research.google.com/github/{repository}/blob/{branch}/notebooks/{notebook_name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def extras_for(notebook_name: str) -> tuple[str, ...]:
    """The pyproject extras ``notebook_name`` (e.g. ``11_serving_and_load_balancing.ipynb``) needs on Colab."""
    return NOTEBOOK_EXTRAS.get(Path(notebook_name).name[:2], ())


def setup_cell_source(notebook_name: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """Source of the first code cell of ``notebook_name``: installs the workbook on Colab, does nothing elsewhere.

    The install carries the extras the notebook needs (:data:`NOTEBOOK_EXTRAS`); authoring
    tools (the ``dev`` extra) are never installed on Colab. When the clone fails (a wrong or
    private repository) the cell stops with a message naming the command that repoints it.
    """
    _check_repository(repository)
    extras = extras_for(notebook_name)
    target = COLAB_DIR + (f"[{','.join(extras)}]" if extras else "")
    url = f"https://github.com/{repository}"
    failure = (f"Could not clone {url} (branch {branch}): the repository was not found or is private. "
               f"If you host your own copy of the workbook, point the notebooks at it with "
               f"`python -m helpers.colab owner/name` and commit.")
    return "\n".join([
        "# On Colab only: fetch and install the workbook, then use the models' hub ids.",
        "# Everywhere else (JupyterLab, `make run`, nbval) this cell does nothing.",
        "import os, sys",
        "",
        f'if "google.colab" in sys.modules and not os.path.isdir("{COLAB_DIR}/helpers"):',
        f"    !git clone --quiet --depth 1 --branch {branch} {url} {COLAB_DIR}",
        f'    if not os.path.isdir("{COLAB_DIR}/helpers"):',
        f"        raise SystemExit({failure!r})",
        f'    %pip install --quiet -e "{target}"',
        'if "google.colab" in sys.modules:',
        f'    sys.path.insert(0, "{COLAB_DIR}")  # the editable install is only seen after a restart',
        f'    os.chdir("{COLAB_DIR}/notebooks")',
        f'    os.environ.setdefault("WORKBOOK_LLM", "{LLM_HUB_ID}")',
        f'    os.environ.setdefault("WORKBOOK_EMBEDDER", "{EMBEDDER_HUB_ID}")',
    ])


def add_to_notebook(path: Path | str, repository: str = REPOSITORY, branch: str = BRANCH) -> bool:
    """Put (or repoint) the badge in the title cell and the Colab setup cell after it.

    Idempotent: running it again with the same repository changes nothing. Returns True
    when the file changed.
    """
    import nbformat

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    before = nbformat.writes(notebook)
    title = notebook.cells[0]
    if title.cell_type != "markdown":
        raise ValueError(f"{path.name}: the first cell must be the markdown title cell.")
    lines = _BADGE.sub("", title.source).split("\n", 1)
    badge = badge_markdown(path.name, repository, branch)
    title.source = lines[0] + "\n\n" + badge + ("\n\n" + lines[1].lstrip("\n") if len(lines) > 1 else "")
    source = setup_cell_source(path.name, repository, branch)
    existing = [cell for cell in notebook.cells if SETUP_TAG in cell.metadata.get("tags", [])]
    if existing:
        existing[0].source = source
    else:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = [SETUP_TAG]
        notebook.cells.insert(1, cell)
    if nbformat.writes(notebook) == before:
        return False
    nbformat.write(notebook, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Add or repoint the Open-in-Colab badge and setup cell.")
    parser.add_argument("repository", nargs="?", default=REPOSITORY, help="owner/name on GitHub")
    parser.add_argument("--branch", default=BRANCH)
    args = parser.parse_args(argv)
    try:
        _check_repository(args.repository)
    except ValueError as error:
        parser.error(str(error))
    for path in sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        changed = add_to_notebook(path, args.repository, args.branch)
        print(f"{path.name}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
