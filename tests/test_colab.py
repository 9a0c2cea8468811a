import os

import nbformat
import pytest

from helpers import colab


def _notebook(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# 05 · Quantization\n\nBody text."),
                      nbformat.v4.new_code_cell("print('hello')")]
    path = tmp_path / "05_quantization.ipynb"
    nbformat.write(notebook, path)
    return path


def test_badge_points_at_the_notebook_on_colab():
    badge = colab.badge_markdown("05_quantization.ipynb", "someone/workbook", "main")
    assert badge.endswith("(https://colab.research.google.com/github/someone/workbook/blob/main/"
                          "notebooks/05_quantization.ipynb)")


@pytest.mark.parametrize("bad", ["", "no-slash", "a/b/c", "https://github.com/a/b"])
def test_bad_repository_names_are_refused(bad):
    with pytest.raises(ValueError, match="owner/name"):
        colab.badge_markdown("x.ipynb", bad)


def test_add_to_notebook_is_idempotent_and_repoints(tmp_path):
    path = _notebook(tmp_path)
    assert colab.add_to_notebook(path, "first/repo")
    assert not colab.add_to_notebook(path, "first/repo")
    cells = nbformat.read(path, as_version=4).cells
    assert len(cells) == 3 and cells[0].source.startswith("# 05 · Quantization\n\n[![Open In Colab]")
    assert "Body text." in cells[0].source and colab.SETUP_TAG in cells[1].metadata["tags"]
    assert colab.add_to_notebook(path, "second/repo")
    cells = nbformat.read(path, as_version=4).cells
    assert len(cells) == 3 and "first/repo" not in cells[0].source + cells[1].source
    assert "second/repo" in cells[0].source and "github.com/second/repo" in cells[1].source


def test_setup_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    from IPython.core.inputtransformer2 import TransformerManager

    python_source = TransformerManager().transform_cell(colab.setup_cell_source("someone/workbook"))
    calls = []
    monkeypatch.chdir(tmp_path)
    namespace = {"get_ipython": lambda: type("Shell", (), {"system": calls.append,
                                                           "run_line_magic": lambda *a: calls.append(a)})()}
    exec(compile(python_source, "setup_cell", "exec"), namespace)
    assert calls == [] and os.getcwd() == str(tmp_path)


def test_every_notebook_has_the_badge_and_setup_cell():
    for path in sorted(colab.config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert "[![Open In Colab]" in cells[0].source and f"/notebooks/{path.name})" in cells[0].source, path.name
        assert colab.SETUP_TAG in cells[1].metadata.get("tags", []), path.name
