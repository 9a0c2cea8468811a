"""The library under the LLM Optimization Workbook notebooks.

Each technique has a module named after it; shared plumbing lives in ``config``, ``models``,
``data``, ``machine``, ``generation``, ``labels``, ``metrics``, ``results`` and ``plots``.
helpers/README.md describes the layout and how to extend it.
"""

from __future__ import annotations

__all__ = ["setup_notebook"]


def setup_notebook(stem: str, seed: int = 0):
    """Start a notebook: name its results file, seed everything, print the machine and profile.

    Returns the active :class:`helpers.config.Profile`.
    """
    import logging
    import warnings

    from . import config, machine, results

    warnings.filterwarnings("ignore", message=".*kernels.*")
    # peft calls a transformers method that transformers 5 has renamed; the warning is noise for learners.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # bitsandbytes logs a missing optional CPU kernel package on import; it is harmless here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    results.set_notebook(stem)
    config.seed_everything(seed)
    active = config.profile()
    machine.print_machine()
    print(f"Profile: {active.name} (set WORKBOOK_PROFILE=full for workshop-sized samples)")
    return active
