"""What each dataset type reads and provides, and the resize kernels: defined once.

A leaf of facts (it imports nothing but the standard library): the spec's schema and
``DATASET_PROVIDES`` (engine/spec/skeleton.py), the checks of a dataset section
(engine/data/options.py) and the dataset classes (engine/data/datasets.py, one per
type, checked by a test to cover :data:`KINDS` exactly) all read these tables.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """One way to give a type's folders: the keys it needs and the keys it may add."""

    needs: tuple[str, ...]
    may: tuple[str, ...] = ()
    note: str = ""  # what this layout means, when a type has several

    def fits(self, given: set[str]) -> bool:
        """Whether the folder keys ``given`` are exactly this layout's."""
        return set(self.needs) <= given <= {*self.needs, *self.may}

    def __str__(self) -> str:
        return " and ".join(self.needs) + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class DatasetKind:
    """A dataset type: the ``data.<key>`` tensors it provides and the folders it reads."""

    name: str
    provides: tuple[str, ...]
    layouts: tuple[Layout, ...]
    #: Whether the type has an LR side at 1/scale of its target (HR) side: only these
    #: take ``lr_crop_size`` and ``degradations``, and their sizes divide by the scale.
    scaled: bool = False

    @property
    def folders(self) -> tuple[str, ...]:
        """Every folder key the type reads, in the order its layouts name them."""
        return tuple(dict.fromkeys(k for lay in self.layouts for k in (*lay.needs, *lay.may)))

    @property
    def needs(self) -> str:
        """The folder keys it needs, in words: ``A and B, or folder (side-by-side ...)``."""
        return ", or ".join(str(lay) for lay in self.layouts)

    def fits(self, given: set[str]) -> bool:
        """Whether the folder keys ``given`` make one of the type's layouts."""
        return any(lay.fits(given) for lay in self.layouts)


KINDS: dict[str, DatasetKind] = {
    k.name: k
    for k in (
        DatasetKind("sr", ("lr", "hr"), (Layout(("hr",), ("lr",)),), scaled=True),
        DatasetKind("sr_seg", ("lr", "hr", "seg"), (Layout(("hr", "seg"), ("lr",)),), scaled=True),
        DatasetKind(
            "paired",
            ("A", "B"),
            (Layout(("A", "B")), Layout(("folder",), note="side-by-side AB images")),
        ),
        DatasetKind("unpaired", ("A", "B"), (Layout(("A", "B")),)),
        DatasetKind("single", ("x",), (Layout(("folder",)),)),
        DatasetKind("frames", ("lr", "hr", "hr_frames"), (Layout(("hr",), ("lr",)),), scaled=True),
        DatasetKind("interp", ("f0", "f1", "mid"), (Layout(("folder",)),)),
    )
}

#: Every folder key of any dataset type.
FOLDER_KEYS: tuple[str, ...] = tuple(dict.fromkeys(f for k in KINDS.values() for f in k.folders))

#: The kernels of engine/data/resize.py (``resize_kernel``, the ``resize`` degradation).
KERNELS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos", "area")

#: The default of a dataset's ``max_megapixels``: larger images are refused from their
#: header, before any decoding. 200 MP holds the largest camera sensors (150 MP) and
#: decodes to 0.6 GB (1.2 GB at 16 bits); a PNG of a few KB can declare 10000 MP.
MAX_MEGAPIXELS = 200.0
