"""Loom's data pipeline: datasets, preprocess, degradations, built-in data, loaders.

The public API (imports torch on first use, so ``engine.data.options`` stays
torch-free for ``validate``)::

    ds = make_dataset(section, scale=4, train=True, seed=0, multiple=1, spec_dir=path)
    loader = make_loader(ds, batch_size=16, workers=4, seed=0, shuffle=True, drop_last=True)
    state = loader.state_dict(); loader.load_state_dict(state)

Every problem with the data raises :class:`DataError` naming the file and the option
to change. See docs/data.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.data.errors import DataError

if TYPE_CHECKING:
    from engine.data.datasets import make_dataset
    from engine.data.loader import Loader, make_loader

__all__ = ["DataError", "Loader", "make_dataset", "make_loader"]

_LAZY = {
    "make_dataset": "engine.data.datasets",
    "make_loader": "engine.data.loader",
    "Loader": "engine.data.loader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.data' has no attribute '{name}'")
