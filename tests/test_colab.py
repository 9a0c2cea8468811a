import os
import sys
import types

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


def _run_cell(source, calls, on_system=None):
    """Execute a setup cell as IPython would, recording shell commands and line magics in ``calls``."""
    from IPython.core.inputtransformer2 import TransformerManager

    def system(command):
        calls.append(command)
        if on_system:
            on_system(command)

    shell = type("Shell", (), {"system": staticmethod(system),
                               "run_line_magic": staticmethod(lambda *a: calls.append(" ".join(a)))})()
    namespace = {"get_ipython": lambda: shell}
    exec(compile(TransformerManager().transform_cell(source), "setup_cell", "exec"), namespace)


def _on_colab(monkeypatch, tmp_path, name):
    """Pretend to be on Colab with the clone going to ``tmp_path`` instead of /content/workbook."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("WORKBOOK_LLM", "kept")
    monkeypatch.setenv("WORKBOOK_EMBEDDER", "kept")
    monkeypatch.setattr(sys, "path", list(sys.path))
    return colab.setup_cell_source(name, "someone/workbook").replace(colab.COLAB_DIR, str(tmp_path / "workbook"))


def test_setup_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    calls = []
    monkeypatch.chdir(tmp_path)
    _run_cell(colab.setup_cell_source("11_serving_and_load_balancing.ipynb", "someone/workbook"), calls)
    assert calls == [] and os.getcwd() == str(tmp_path)


def test_extras_follow_the_notebook():
    assert colab.extras_for("11_serving_and_load_balancing.ipynb") == ("serve",)
    assert colab.extras_for("notebooks/01_prompt_engineering.ipynb") == ()
    assert '-e "/content/workbook[serve]"' in colab.setup_cell_source("11_serving_and_load_balancing.ipynb")
    first = colab.setup_cell_source("01_prompt_engineering.ipynb")
    assert '-e "/content/workbook"' in first and "[" not in first.split("%pip", 1)[1].split("\n", 1)[0]


def test_setup_cell_on_colab_installs_the_extras_and_no_authoring_tools(monkeypatch, tmp_path):
    def clone(command):  # a successful clone: the folder appears
        (tmp_path / "workbook" / "helpers").mkdir(parents=True)
        (tmp_path / "workbook" / "notebooks").mkdir()

    for name, expected in [("11_serving_and_load_balancing.ipynb", '"%s[serve]"'),
                           ("01_prompt_engineering.ipynb", '"%s"')]:
        calls = []
        monkeypatch.chdir(tmp_path)
        if (tmp_path / "workbook").exists():
            import shutil

            shutil.rmtree(tmp_path / "workbook")
        _run_cell(_on_colab(monkeypatch, tmp_path, name), calls, on_system=clone)
        assert calls[0].startswith("git clone") and "https://github.com/someone/workbook" in calls[0]
        install = calls[1]
        assert install.startswith("pip install") and install.endswith(expected % (tmp_path / "workbook"))
        commands = " ".join(calls).replace(str(tmp_path), "TMP")
        assert not any(tool in commands for tool in ("nbval", "pytest", "jupyterlab", "dev"))
        assert os.getcwd() == str(tmp_path / "workbook" / "notebooks")


def test_failed_clone_stops_with_the_repoint_command(monkeypatch, tmp_path):
    calls = []
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        _run_cell(_on_colab(monkeypatch, tmp_path, "05_quantization.ipynb"), calls)  # the clone creates nothing
    assert "python -m helpers.colab owner/name" in str(stopped.value)
    assert "https://github.com/someone/workbook" in str(stopped.value)
    assert len(calls) == 1 and calls[0].startswith("git clone")  # no pip install after a failed clone
    assert os.getcwd() == str(tmp_path)


def test_pyproject_keeps_authoring_tools_out_of_the_main_dependencies():
    import tomllib

    project = tomllib.loads((colab.config.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    main = " ".join(project["dependencies"])
    for tool in ("jupyterlab", "nbval", "pytest"):
        assert tool not in main and any(entry.startswith(tool) for entry in project["optional-dependencies"]["dev"])
    for extra in {extra for extras in colab.NOTEBOOK_EXTRAS.values() for extra in extras}:
        assert extra in project["optional-dependencies"]


def test_every_notebook_has_the_badge_and_setup_cell():
    for path in sorted(colab.config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert "[![Open In Colab]" in cells[0].source and f"/notebooks/{path.name})" in cells[0].source, path.name
        assert colab.SETUP_TAG in cells[1].metadata.get("tags", []), path.name
        # the committed cell is the one colab.py writes today (installs this notebook's extras, stops on a failed clone)
        assert cells[1].source == colab.setup_cell_source(path.name), f"{path.name}: run python -m helpers.colab"
