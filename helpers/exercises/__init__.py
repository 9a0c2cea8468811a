"""Checks for the exercises at the end of each notebook.

Each ``check_<notebook>_<n>(answer, ...)`` prints whether the answer is right and
why, and returns True or False, so a learner gets feedback without a solution key.
The checks of notebook NN live in ``nbNN.py``; all of them are importable from here.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []
for _module_info in pkgutil.iter_modules(__path__):
    if _module_info.name.startswith("nb"):
        _module = importlib.import_module(f"{__name__}.{_module_info.name}")
        for _name in dir(_module):
            if _name.startswith("check_"):
                globals()[_name] = getattr(_module, _name)
                __all__.append(_name)
