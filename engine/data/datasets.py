"""The dataset types: ``sr``, ``sr_seg``, ``paired``, ``unpaired``, ``single``, ``frames``
and ``interp``.

Each item is a dict of float32 CxHxW tensors in [0, 1] keyed as the type's
``provides`` in :data:`engine.data.kinds.KINDS` says; :data:`DATASETS` holds the class
of each type. Items are addressed by ``(epoch, index)`` (a plain index
means epoch 0); all randomness of an item — which file when folders are weighted, the
crop, flips, degradations — comes from a generator seeded by ``(seed, epoch, index)``,
so a sample does not depend on the worker that made it or on what came before.

Validation sets draw from :data:`VALIDATION_SEED`, not the run's seed: their only
random draws are the degradations (validation never flips, and crops at the centre),
so every validation of every run sees the same degraded inputs and its numbers can be
compared across runs and seeds.

Problems found by looking at the files' headers (unreadable files, images too small
for the crop, unmatched pairs) are raised — or, with ``on_bad_image: skip``, skipped
and listed in ``dataset.skipped`` — when the dataset is made, before training starts.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.data import geometry
from engine.data.degrade import Pipeline
from engine.data.errors import DataError
from engine.data.folders import IMAGES, SEG_MAPS, FileKind, Side, load_side, lr_stem, read_subset
from engine.data.imageio import probe, read_image
from engine.data.kinds import KINDS
from engine.data.options import DataOptions, parse_options
from engine.data.resize import resize
from engine.data.segmaps import probe_seg, read_seg, seg_stem

Sample = dict[str, torch.Tensor]
Key = int | tuple[int, int]

#: Decoded images kept per process (bytes); helps small datasets such as builtin:photos.
CACHE_BYTES = 256 * 2**20
#: A probability map may be this many pixels smaller than its HR image, less one
#: (SFTGAN's segmentation script cuts images to a multiple of 8 first).
SEG_CUT = 8
#: The seed of every validation set's draws (its degradations), whatever the run's seed.
VALIDATION_SEED = 0


def make_dataset(
    section: DataOptions | dict[str, Any],
    *,
    scale: int,
    train: bool,
    seed: int,
    multiple: int = 1,
    spec_dir: Path | None = None,
) -> LoomDataset:
    """The dataset a ``data.train`` / ``data.val`` section describes (as parsed
    settings, or the section itself); see the module doc. ``seed`` seeds a training
    set; a validation set always draws from :data:`VALIDATION_SEED`."""
    opts = (
        section
        if isinstance(section, DataOptions)
        else parse_options(section, train=train, scale=scale)
    )
    return DATASETS[opts.kind](
        opts,
        scale=scale if KINDS[opts.kind].scaled else 1,  # the others have no LR side
        train=train,
        seed=seed if train else VALIDATION_SEED,
        multiple=multiple,
        spec_dir=spec_dir,
    )


class LoomDataset(Dataset[Sample]):
    """What every dataset type shares: keys, seeding, loading, checks, skipping."""

    def __init__(
        self,
        opts: DataOptions,
        *,
        scale: int,
        train: bool,
        seed: int,
        multiple: int,
        spec_dir: Path | None,
    ) -> None:
        self.opts, self.scale, self.train, self.seed = opts, scale, train, seed
        self.multiple = multiple
        self.spec_dir = spec_dir
        self.skipped: list[str] = []  # "file: reason", found when the dataset was made
        #: Files that failed when read (``on_bad_image: skip``), not yet told to the
        #: training process: :meth:`take_failed` hands them to the loader's batches.
        self.failed: list[str] = []
        self.sizes: dict[Path, tuple[int, int]] = {}  # (height, width) of every file
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self.align = 1
        self.degrade: Pipeline | None = None

    # -- what subclasses provide ------------------------------------------------------

    def __len__(self) -> int:
        raise NotImplementedError

    def _sample(self, index: int, rng: np.random.Generator) -> Sample:
        raise NotImplementedError

    # -- addressing and seeding --------------------------------------------------------

    def __getitem__(self, key: Key) -> Sample:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        n = len(self)
        if index < 0:
            raise IndexError(f"negative index {index}")
        # An index past the end (a small dataset repeated within an epoch) reads item
        # index % n, with its own random draws.
        for attempt in range(min(n, 64) if self.opts.skip_bad else 1):
            rng = np.random.default_rng([self.seed, epoch, index, attempt])
            try:
                return self._sample((index + attempt) % n, rng)
            except DataError as exc:
                if not self.opts.skip_bad:
                    raise
                self.skipped.append(str(exc))
                self.failed.append(str(exc))
        raise DataError(f"{self.opts.where}: 64 images in a row could not be read; see above")

    def take_failed(self) -> list[str]:
        """The files that failed since the last call (in this process: a DataLoader
        worker has its own copy of the dataset, so its loader's batches carry them)."""
        failed, self.failed = self.failed, []
        return failed

    # -- files ---------------------------------------------------------------------------

    def side(self, key: str, *, kind: FileKind = IMAGES, stem: Callable[[str], str] = str) -> Side:
        """The files of folder key ``key``; ``stem`` maps a file's stem to the stem it
        pairs on (``0001x4`` → ``0001``), which is what ``subset`` lists. A subset line
        may also name a folder (a sequence, as Vimeo-90K's lists do): all files under it."""
        opts = self.opts
        side = load_side(
            key,
            opts.folders[key],
            opts.where,
            self.spec_dir,
            train=self.train,
            weights=opts.weights,
            kind=kind,
        )
        if opts.subset:
            wanted = read_subset(opts.subset, opts.where, self.spec_dir)
            side.keep([_listed(stem(s), wanted) for s in side.stems])
            if not side.files:
                raise DataError(f"{opts.where}.subset: no file of {side.label} is listed in it")
        return side

    def scan(self, side: Side) -> None:
        """Read every file's header: unreadable files and their sizes, before training."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(partial(_probe_or_error, read_header=self.header), side.files))
        ok = []
        for file, result in zip(side.files, results, strict=True):
            if isinstance(result, DataError):
                self.reject(file, str(result), fatal=result)
                ok.append(False)
            else:
                self.sizes[file] = (result[1], result[0])
                ok.append(True)
        side.keep(ok)
        self.require(side)

    def header(self, file: Path) -> tuple[int, int]:
        """An image's (width, height) from its header, refused above max_megapixels."""
        return probe(file, max_megapixels=self.opts.max_megapixels)

    def reject(self, file: Path, reason: str, *, fatal: DataError | None = None) -> None:
        if not self.opts.skip_bad:
            raise fatal or DataError(reason)
        self.skipped.append(reason if str(file) in reason else f"{file}: {reason}")

    def require(self, side: Side) -> None:
        if not side.files:
            raise DataError(
                f"{side.label}: no usable images left ({len(self.skipped)} skipped, e.g. "
                f"{self.skipped[0] if self.skipped else '-'})"
            )

    def check_size(self, side: Side, region: Callable[[Path], tuple[int, int]]) -> None:
        ok = []
        for file in side.files:
            why = geometry.too_small(region(file), self.opts, self.align, self.multiple)
            if why:
                h, w = self.sizes[file]
                self.reject(
                    file,
                    f"image '{file}' is {w}x{h}, {why}; lower the crop, or remove the image "
                    "(on_bad_image: skip skips such images)",
                )
            ok.append(why is None)
        side.keep(ok)
        self.require(side)

    def limit(self, side: Side) -> None:
        if self.opts.max_size is not None and len(side) > self.opts.max_size:
            side.keep([i < self.opts.max_size for i in range(len(side))])

    def pick(self, side: Side, index: int, rng: np.random.Generator, *, random: bool) -> int:
        """A file of ``side``: by weight of its folders, at random, or at ``index``."""
        if self.train and side.weights:
            weights = np.asarray(side.weights) / sum(side.weights)
            folder = int(rng.choice(len(weights), p=weights))
            start = sum(len(f.files) for f in side.folders[:folder])
            return start + int(rng.integers(len(side.folders[folder].files)))
        if random and self.train:
            return int(rng.integers(len(side)))
        return index % len(side)

    def load(self, file: Path, read: Callable[[Path], np.ndarray] | None = None) -> np.ndarray:
        """The pixels of an image (or what ``read`` makes of another file), cached."""
        cached = self._cache.get(file)
        if cached is not None:
            self._cache.move_to_end(file)
            return cached
        pixels = (
            read(file)
            if read
            else read_image(file, self.opts.channels, max_megapixels=self.opts.max_megapixels)
        )
        if pixels.nbytes <= CACHE_BYTES // 4:
            self._cache[file] = pixels
            self._cached_bytes += pixels.nbytes
            while self._cached_bytes > CACHE_BYTES:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return pixels

    def plan(self, region: tuple[int, int], rng: np.random.Generator) -> geometry.Plan:
        return geometry.make_plan(
            region,
            self.opts,
            align=self.align,
            multiple=self.multiple,
            train=self.train,
            rng=rng,
        )

    def match(self, side: Side, found: dict[str, Path], names: tuple[str, str]) -> dict[Path, Path]:
        """Pair ``side``'s files with ``found`` (stem → file); unmatched files either way
        are an error, or skipped with ``on_bad_image: skip``."""
        mine = side.by_stem()
        missing = [s for s in mine if s not in found]
        extra = [s for s in found if s not in mine]
        for stems, have, lack in ((missing, *names), (extra, *names[::-1])):
            if stems and not self.opts.skip_bad:
                shown = ", ".join(f"'{s}'" for s in stems[:5]) + (", …" if len(stems) > 5 else "")
                raise DataError(
                    f"{self.opts.where}: {len(stems)} files in {have} have no match by stem in "
                    f"{lack}: {shown}; add the missing files, or set on_bad_image: skip to "
                    "leave unmatched files out"
                )
            self.skipped += [f"{self.opts.where}.{have} '{s}': no match in {lack}" for s in stems]
        side.keep([s in found for s in side.stems])
        self.require(side)
        return {f: found[s] for s, f in zip(side.stems, side.files, strict=True)}

    def check_partners(
        self,
        side: Side,
        partner: dict[Path, Path],
        check: Callable[[Path, Path], str | None],
        read_header: Callable[[Path], tuple[int, int]] | None = None,
    ) -> None:
        """Read the partners' headers (``read_header`` gives (width, height)) and drop
        (or refuse) pairs that ``check`` faults."""
        ok = []
        for file in side.files:
            other = partner[file]
            if other not in self.sizes:
                result = _probe_or_error(other, read_header or self.header)
                if isinstance(result, DataError):
                    self.reject(other, str(result), fatal=result)
                    ok.append(False)
                    continue
                self.sizes[other] = (result[1], result[0])
            why = check(file, other)
            if why:
                self.reject(other, why)
            ok.append(why is None)
        side.keep(ok)
        self.require(side)

    def pair_lr(self, hr: Side) -> dict[Path, Path]:
        """Read the headers of ``hr`` and, with ``lr`` folders, pair each HR file with
        the LR file of its stem (``0001x4`` matches ``0001`` at scale 4) whose size is
        the HR size / scale, rounded down; a pair that is not is refused (or skipped)."""
        lr_of: dict[Path, Path] = {}
        if "lr" in self.opts.folders:
            lr = self.side("lr", stem=partial(lr_stem, scale=self.scale))
            found = {lr_stem(stem, self.scale): f for stem, f in lr.by_stem().items()}
            lr_of = self.match(hr, found, ("hr", "lr"))
        self.scan(hr)
        if lr_of:
            self.check_partners(hr, lr_of, self._lr_size_fault)
        return lr_of

    def _lr_size_fault(self, hr: Path, lr: Path) -> str | None:
        s = self.scale
        (H, W), (h, w) = self.sizes[hr], self.sizes[lr]
        if 0 <= H - h * s < s and 0 <= W - w * s < s:
            return None
        return (
            f"lr image '{lr}' is {w}x{h} but its hr image '{hr}' is {W}x{H}; at scale {s} "
            f"the lr image must be {W // s}x{H // s} (check scale and the lr folder)"
        )

    def scaled_region(self, file: Path, lr_of: dict[Path, Path]) -> tuple[int, int]:
        """The part of HR image ``file`` that has LR pixels: its LR partner's size x
        scale, or (LR made from HR) its size cut to a multiple of the scale."""
        lr = lr_of.get(file)
        if lr is not None:
            h, w = self.sizes[lr]
            return h * self.scale, w * self.scale
        h, w = self.sizes[file]
        return geometry.floor_to(h, self.scale), geometry.floor_to(w, self.scale)

    def make_lr(self, hr: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The LR image of an HR crop: degraded (if the spec says so), then resized."""
        size = (hr.shape[-2] // self.scale, hr.shape[-1] // self.scale)
        out = self.degrade.run(hr, rng, final_size=size) if self.degrade else hr
        if tuple(out.shape[-2:]) != size:
            out = resize(out, size, self.opts.resize_kernel)
        return out.contiguous()

    def check_crop_multiple(self) -> None:
        crop = self.opts.crop_size
        unit = self.align * self.multiple
        if crop and self.opts.preprocess.crop and crop % unit:
            raise DataError(
                f"{self.opts.where}.crop_size {crop} does not fit the network: the input "
                f"must be a multiple of {self.multiple}, so crop_size must be a multiple of "
                f"{unit}; use {max(crop // unit, 1) * unit}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.opts.where}, {len(self)} items)"


def _listed(stem: str, wanted: set[str]) -> bool:
    """Whether a subset names the file (by stem or file name) or a folder it is in."""
    path = Path(stem)
    folders = (p.as_posix() for p in path.parents if p.parts)
    return stem in wanted or path.name in wanted or any(f in wanted for f in folders)


def _probe_or_error(
    file: Path, read_header: Callable[[Path], tuple[int, int]] = probe
) -> tuple[int, int] | DataError:
    try:
        return read_header(file)
    except DataError as exc:
        return exc


def _region_of(sizes: dict[Path, tuple[int, int]], unit: int) -> Callable[[Path], tuple[int, int]]:
    def region(file: Path) -> tuple[int, int]:
        h, w = sizes[file]
        return h // unit * unit, w // unit * unit

    return region


class SRDataset(LoomDataset):
    """HR images; LR from ``lr`` folders (matched by stem) or made from the HR crop."""

    def __init__(self, opts: DataOptions, **kw: Any) -> None:
        super().__init__(opts, **kw)
        self.align = self.scale
        self.check_crop_multiple()
        self.hr = self.side("hr")
        self.lr_of = self.pair_lr(self.hr)
        self.add_partners()
        self.check_size(self.hr, self.region)
        self.limit(self.hr)
        self.degrade = Pipeline.parse(opts.degradations, where=f"{opts.where}.degradations")

    def add_partners(self) -> None:
        """Match further files to the HR images (``sr_seg``'s maps); ``sr`` has none."""

    def region(self, file: Path) -> tuple[int, int]:
        return self.scaled_region(file, self.lr_of)

    def __len__(self) -> int:
        return len(self.hr)

    def _sample(self, index: int, rng: np.random.Generator) -> Sample:
        file = self.hr.files[self.pick(self.hr, index, rng, random=False)]
        return self.planes(file, self.plan(self.region(file), rng), rng)

    def planes(self, file: Path, plan: geometry.Plan, rng: np.random.Generator) -> Sample:
        """The tensors of HR image ``file`` cut as ``plan`` says."""
        hr = geometry.apply(self.load(file), plan)
        lr_file = self.lr_of.get(file)
        if lr_file is not None:
            return {"lr": geometry.apply(self.load(lr_file), plan, self.scale), "hr": hr}
        return {"lr": self.make_lr(hr, rng), "hr": hr}


class SegSRDataset(SRDataset):
    """``sr`` plus ``seg``: each HR image's segmentation probability map (SFTGAN).

    Maps are matched by stem (``NAME_bic.pth`` matches ``NAME``), must have the HR
    image's size — or be cut by less than :data:`SEG_CUT` pixels at the bottom and
    right, as SFTGAN's script cuts images to a multiple of 8 — and are cut, flipped
    and rotated with the HR image (the same plan).
    """

    def add_partners(self) -> None:
        classes = self.opts.seg_classes
        found = {
            seg_stem(s): f
            for s, f in self.side("seg", kind=SEG_MAPS, stem=seg_stem).by_stem().items()
        }
        self.seg_of = self.match(self.hr, found, ("hr", "seg"))

        def check(hr: Path, seg: Path) -> str | None:
            (H, W), (h, w) = self.sizes[hr], self.sizes[seg]
            if 0 <= H - h < SEG_CUT and 0 <= W - w < SEG_CUT:
                return None
            return (
                f"seg map '{seg}' is {w}x{h} but its hr image '{hr}' is {W}x{H}; a probability "
                f"map must have its HR image's size, or be at most {SEG_CUT - 1} pixels smaller "
                "at the bottom and right (make the maps from the HR images)"
            )

        self.check_partners(self.hr, self.seg_of, check, partial(probe_seg, classes=classes))

    def region(self, file: Path) -> tuple[int, int]:
        height, width = super().region(file)
        h, w = self.sizes[self.seg_of[file]]
        s = self.scale
        return min(height, geometry.floor_to(h, s)), min(width, geometry.floor_to(w, s))

    def planes(self, file: Path, plan: geometry.Plan, rng: np.random.Generator) -> Sample:
        seg = self.load(self.seg_of[file], partial(read_seg, classes=self.opts.seg_classes))
        return {
            **super().planes(file, plan, rng),
            "seg": geometry.apply(seg, plan, kernel="bilinear"),
        }


class PairedDataset(LoomDataset):
    """A and B images of the same size, matched by stem, or side-by-side AB images."""

    def __init__(self, opts: DataOptions, **kw: Any) -> None:
        super().__init__(opts, **kw)
        self.check_crop_multiple()
        self.side_by_side = "folder" in opts.folders
        self.a = self.side("folder" if self.side_by_side else "A")
        self.b_of: dict[Path, Path] = {}
        if not self.side_by_side:
            self.b_of = self.match(self.a, self.side("B").by_stem(), ("A", "B"))
        self.scan(self.a)
        if not self.side_by_side:
            self._check_b()
        self.check_size(self.a, self.region)
        self.limit(self.a)

    def _check_b(self) -> None:
        def check(a: Path, b: Path) -> str | None:
            (ha, wa), (hb, wb) = self.sizes[a], self.sizes[b]
            if (ha, wa) == (hb, wb):
                return None
            return (
                f"B image '{b}' is {wb}x{hb} but its A image '{a}' is {wa}x{ha}; paired "
                "images must have the same size"
            )

        self.check_partners(self.a, self.b_of, check)

    def region(self, file: Path) -> tuple[int, int]:
        h, w = self.sizes[file]
        return (h, w // 2) if self.side_by_side else (h, w)

    def __len__(self) -> int:
        return len(self.a)

    def _sample(self, index: int, rng: np.random.Generator) -> Sample:
        file = self.a.files[self.pick(self.a, index, rng, random=False)]
        plan = self.plan(self.region(file), rng)
        if self.side_by_side:
            pixels = self.load(file)
            half = pixels.shape[1] // 2
            a, b = pixels[:, :half], pixels[:, half : 2 * half]
        else:
            a, b = self.load(file), self.load(self.b_of[file])
        return {"A": geometry.apply(a, plan), "B": geometry.apply(b, plan)}


class UnpairedDataset(LoomDataset):
    """A and B independent; in training, each item's B is drawn at random."""

    def __init__(self, opts: DataOptions, **kw: Any) -> None:
        super().__init__(opts, **kw)
        self.check_crop_multiple()
        self.a, self.b = self.side("A"), self.side("B")
        for side in (self.a, self.b):
            self.scan(side)
            self.check_size(side, _region_of(self.sizes, 1))
            self.limit(side)

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def _sample(self, index: int, rng: np.random.Generator) -> Sample:
        out = {}
        for key, side, random in (("A", self.a, False), ("B", self.b, True)):
            file = side.files[self.pick(side, index, rng, random=random)]
            plan = self.plan(self.sizes[file], rng)
            out[key] = geometry.apply(self.load(file), plan)
        return out


class SingleDataset(LoomDataset):
    """One folder of images (inference, or self-supervised targets)."""

    def __init__(self, opts: DataOptions, **kw: Any) -> None:
        super().__init__(opts, **kw)
        self.check_crop_multiple()
        self.x = self.side("folder")
        self.scan(self.x)
        self.check_size(self.x, _region_of(self.sizes, 1))
        self.limit(self.x)

    def __len__(self) -> int:
        return len(self.x)

    def _sample(self, index: int, rng: np.random.Generator) -> Sample:
        file = self.x.files[self.pick(self.x, index, rng, random=False)]
        return {"x": geometry.apply(self.load(file), self.plan(self.sizes[file], rng))}


class FramesDataset(LoomDataset):
    """Windows of ``frames`` consecutive frames: ``lr`` (T x C x h x w), ``hr`` the centre,
    ``hr_frames`` the whole HR window (T x C x H x W).

    Each sub-folder holding images is one sequence, its frames in file-name order, or
    several when every file is named ``<scene>_<frame>`` (traiNNer-redux's flat layout).
    LR frames come from ``lr`` folders with the same layout, or are made from the HR
    frames (each with the same degradation draws). In training a window is read
    backwards half of the time (``reverse``) and with a random ``frame_skip``.
    """

    source = "hr"  # the folder key of the sequences

    def __init__(self, opts: DataOptions, **kw: Any) -> None:
        super().__init__(opts, **kw)
        self.align = self.scale
        self.check_crop_multiple()
        self.hr = self.side(self.source)
        self.lr_of = self.pair_lr(self.hr)
        self.check_size(self.hr, self.region)
        self.sequences = self._sequences()
        span = opts.frames
        self.windows = [
            (q, c) for q, seq in enumerate(self.sequences) for c in range(len(seq) - span + 1)
        ]
        if not self.windows:
            raise DataError(
                f"{opts.where}.{self.source}: no sequence has {span} frames (frames: {span}); "
                "each sub-folder of frames is one sequence"
            )
        if opts.max_size is not None:
            self.windows = self.windows[: opts.max_size]
        self.degrade = Pipeline.parse(opts.degradations, where=f"{opts.where}.degradations")

    def _sequences(self) -> list[list[Path]]:
        groups: dict[Path, list[Path]] = {}
        for file in self.hr.files:
            groups.setdefault(file.parent, []).append(file)
        return [
            seq
            for _, files in sorted(groups.items())
            for seq in _split_flat(sorted(files, key=lambda f: f.name))
        ]

    def region(self, file: Path) -> tuple[int, int]:
        return self.scaled_region(file, self.lr_of)

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, index: int, rng: np.random.Generator) -> tuple[list[Path], geometry.Plan]:
        """The frames of window ``index`` (skipped and reversed as drawn) and their plan."""
        seq_index, start = self.windows[index]
        seq, span = self.sequences[seq_index], self.opts.frames
        lo, hi = self.opts.frame_skip
        skip = int(rng.integers(lo, hi + 1)) if self.train else lo
        skip = max(1, min(skip, (len(seq) - 1) // max(span - 1, 1)))
        start = min(start, len(seq) - 1 - skip * (span - 1))
        chosen = seq[start : start + skip * (span - 1) + 1 : skip]
        if self.train and self.opts.reverse and rng.random() < 0.5:
            chosen = chosen[::-1]
        regions = {self.region(f) for f in chosen}
        if len(regions) > 1:
            raise DataError(f"frames of one sequence differ in size near '{chosen[0]}'")
        return chosen, self.plan(regions.pop(), rng)

    def _sample(self, index: int, rng: np.random.Generator) -> Sample:
        chosen, plan = self.window(index, rng)
        hr = [geometry.apply(self.load(f), plan) for f in chosen]
        if self.lr_of:
            lr = [geometry.apply(self.load(self.lr_of[f]), plan, self.scale) for f in chosen]
        else:
            state = rng.bit_generator.state
            lr = []
            for frame in hr:  # the same degradation draws for every frame of the window
                rng.bit_generator.state = state
                lr.append(self.make_lr(frame, rng))
        # hr_frames: the whole HR window, for losses on the neighbours (OFR at HR).
        return {"lr": torch.stack(lr), "hr": hr[len(hr) // 2], "hr_frames": torch.stack(hr)}


#: traiNNer-redux's flat naming: ``<scene>_<frame>`` files of many clips in one folder.
_FLAT = re.compile(r"^(?P<scene>.+)_(?P<frame>\d+)$")


def _split_flat(files: list[Path]) -> list[list[Path]]:
    """One folder's frames as sequences: a folder per clip (REDS, Vimeo-90K) is one
    sequence in file-name order; when every stem is ``<scene>_<frame>`` (``city_0007``),
    each scene is a sequence ordered by its frame number, so ``city_10`` follows
    ``city_9`` and clips never share a window."""
    matches = [_FLAT.match(f.stem) for f in files]
    if not all(matches):
        return [files]
    scenes: dict[str, list[tuple[int, Path]]] = {}
    for m, f in zip(matches, files, strict=True):
        if m is not None:  # all are; the check narrows the type
            scenes.setdefault(m["scene"], []).append((int(m["frame"]), f))
    return [[f for _, f in sorted(frames)] for _, frames in sorted(scenes.items())]


class InterpDataset(FramesDataset):
    """Frame interpolation triplets (RIFE): inputs ``f0`` and ``f1``, target ``mid``.

    Windows of 3 frames of one sequence, all at full resolution (the spec's scale does
    not apply). With ``frame_skip`` k the inputs are k frames before and after the
    middle frame; ``reverse`` swaps the inputs half of the time in training (RIFE's
    temporal swap: the middle frame of a reversed triplet is the same frame, t = 0.5
    maps to 1 − t = 0.5); ``channel_reverse`` turns RGB into BGR half of the time in
    training (RIFE's channel reversal); crops, flips, rotations and channel order are
    the same for all three frames.
    """

    source = "folder"

    def _sample(self, index: int, rng: np.random.Generator) -> Sample:
        chosen, plan = self.window(index, rng)
        frames = [geometry.apply(self.load(f), plan) for f in chosen]
        # Drawn after the window's draws, so specs without it keep their batches.
        if self.train and self.opts.channel_reverse and rng.random() < 0.5:
            frames = [_bgr_keep_alpha(f) for f in frames]
        f0, mid, f1 = frames
        return {"f0": f0, "f1": f1, "mid": mid}


def _bgr_keep_alpha(frame: torch.Tensor) -> torch.Tensor:
    """RGB(A) to BGR(A): the colour channels reversed, a gray frame or alpha kept."""
    if frame.shape[0] < 3:
        return frame
    return torch.cat((frame[:3].flip(0), frame[3:]))


#: The class of each dataset type; a test keeps it equal to :data:`KINDS`.
DATASETS: dict[str, type[LoomDataset]] = {
    "sr": SRDataset,
    "sr_seg": SegSRDataset,
    "paired": PairedDataset,
    "unpaired": UnpairedDataset,
    "single": SingleDataset,
    "frames": FramesDataset,
    "interp": InterpDataset,
}
