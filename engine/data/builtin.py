"""Built-in data: real photographs from scikit-image's wheel, and domains made from them.

No download ever happens: scikit-image ships these photographs inside its package.
Each domain is written once, as PNG files (``.npy`` for ``segments``), under the
cache folder (``$LOOM_CACHE``, else ``$XDG_CACHE_HOME/loom``, else ``~/.cache/loom``),
so that DataLoader workers and later runs read ordinary folders. Names are
``DOMAIN[_GROUP][/SPLIT]``:

* domains: ``photos`` (the photographs), ``edges`` (Canny edge maps, black lines on
  white), ``cartoon`` (edge-preserving smoothing, colour quantization, dark edges),
  ``pans`` (camera-pan frame sequences cut from the photographs), ``segments``
  (soft 8-class segmentation probability maps, ``.npy``, a synthetic stand-in for
  SFTGAN's segmenter);
* groups: ``faces`` (astronaut, chelsea the cat) and ``scenery`` (all the others);
* splits: ``train``, ``val``, ``all``; without one, training sections get ``train``
  and validation sections ``val``.

The same stems appear in every domain, so ``paired`` with ``A: builtin:edges`` and
``B: builtin:photos`` gives edge → photo pairs. docs/data.md says how each is made.
"""

# scikit-image ships py.typed yet leaves its functions unannotated; calling them is fine.
# mypy: allow-untyped-calls

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.data.errors import DataError

#: The colour photographs scikit-image ships (stem → group); gray ones are left out.
PHOTOS: dict[str, str] = {
    "astronaut": "faces",
    "chelsea": "faces",
    "coffee": "scenery",
    "hubble_deep_field": "scenery",
    "immunohistochemistry": "scenery",
    "motorcycle_left": "scenery",
    "motorcycle_right": "scenery",
    "rocket": "scenery",
}
#: Held out for validation: one of each group, both small enough to validate quickly.
VAL: tuple[str, ...] = ("chelsea", "coffee")
GROUPS: tuple[str, ...] = ("faces", "scenery")
SPLITS: tuple[str, ...] = ("train", "val", "all")
RECIPE_VERSION = 1

#: Camera pans: frames per sequence, frame size, and sequences per photograph.
PAN_FRAMES, PAN_SIZE, PAN_SEQUENCES = 7, 128, 4

#: Segments: one prototype per class in (L*, a*, b*, texture) — CIE Lab colour and the
#: local standard deviation of L* — and how soft the assignment and smoothing are.
SEGMENT_PROTOTYPES: tuple[tuple[float, float, float, float], ...] = (
    (15.0, 0.0, 0.0, 2.0),  # 0 dark
    (92.0, 0.0, 0.0, 2.0),  # 1 bright
    (55.0, 0.0, 0.0, 2.0),  # 2 flat gray
    (60.0, -5.0, -35.0, 2.0),  # 3 blue
    (50.0, -35.0, 30.0, 2.0),  # 4 green
    (50.0, 50.0, 35.0, 2.0),  # 5 red
    (65.0, 10.0, 55.0, 2.0),  # 6 yellow and brown
    (50.0, 0.0, 0.0, 25.0),  # 7 textured
)
SEGMENT_TEMPERATURE, SEGMENT_TEXTURE_SIGMA, SEGMENT_SMOOTH_SIGMA = 8.0, 2.0, 2.0


def _photo(stem: str) -> np.ndarray:
    import skimage.data

    if stem.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        pair: np.ndarray = left if stem.endswith("left") else right
        return pair
    photo: np.ndarray = getattr(skimage.data, stem)()
    return photo


def _edges(stem: str) -> np.ndarray:
    """Canny edges (sigma 2) of the photo's luminance: black 1-pixel lines on white, RGB."""
    from skimage import color, feature

    gray = color.rgb2gray(_photo(stem))
    edges = feature.canny(gray, sigma=2.0)
    return np.repeat(np.where(edges, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _cartoon(stem: str) -> np.ndarray:
    """Flat colour regions with dark outlines, the look cartoonization models learn.

    1. total-variation smoothing (Chambolle, weight 0.1) flattens texture, keeps edges;
    2. median-cut quantization to 12 colours, then a 5x5 median filter per channel;
    3. Canny edges of the smoothed image (sigma 1.5), thickened to 3 pixels, drawn at
       15 % brightness.
    """
    from PIL import Image
    from skimage import color, feature, filters, morphology, restoration

    photo = _photo(stem).astype(np.float32) / 255.0
    smooth = restoration.denoise_tv_chambolle(photo, weight=0.1, channel_axis=-1, max_num_iter=100)
    as8 = Image.fromarray((np.clip(smooth, 0, 1) * 255).astype(np.uint8))
    flat = as8.quantize(colors=12, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    flat_rgb = filters.median(np.asarray(flat.convert("RGB")), footprint=np.ones((5, 5, 1), bool))
    edges = feature.canny(
        color.rgb2gray(smooth), sigma=1.5, low_threshold=0.05, high_threshold=0.12
    )
    edges = morphology.dilation(edges, morphology.disk(1))
    out = flat_rgb.copy()
    out[edges] = (out[edges] * 0.15).astype(np.uint8)
    result: np.ndarray = out
    return result


def _pans(stem: str) -> dict[str, np.ndarray]:
    """Frame sequences of a camera panning across the photo at a constant speed.

    Each sequence is PAN_FRAMES windows of PAN_SIZE pixels whose corner moves by a
    whole-pixel step per frame (a seeded direction and speed, 1 to 6 pixels), so every
    frame — the middle one included — is an exact crop of the photo.
    """
    photo = _photo(stem)
    rng = np.random.default_rng([RECIPE_VERSION, sum(map(ord, stem))])
    height, width = photo.shape[:2]
    frames: dict[str, np.ndarray] = {}
    for k in range(PAN_SEQUENCES):
        step = rng.integers(-6, 7, size=2)
        if not step.any():
            step[1] = 3
        travel = np.abs(step) * (PAN_FRAMES - 1)
        y0 = rng.integers(0, height - PAN_SIZE - travel[0] + 1) + max(0, -step[0]) * (
            PAN_FRAMES - 1
        )
        x0 = rng.integers(0, width - PAN_SIZE - travel[1] + 1) + max(0, -step[1]) * (PAN_FRAMES - 1)
        for t in range(PAN_FRAMES):
            y, x = y0 + step[0] * t, x0 + step[1] * t
            frames[f"{stem}_{k}/{t:03d}"] = photo[y : y + PAN_SIZE, x : x + PAN_SIZE]
    return frames


def _segments(stem: str) -> np.ndarray:
    """A soft segmentation of the photo into 8 classes: 8 x H x W float32, summing to 1.

    Not a real segmenter (and not SFTGAN's outdoor categories): each pixel's features
    are its CIE Lab colour and texture (the standard deviation of L* in a Gaussian
    window, sigma 2); its probabilities are a softmax over minus the distances to the
    8 fixed ``SEGMENT_PROTOTYPES`` divided by ``SEGMENT_TEMPERATURE``; each channel is
    then smoothed by a Gaussian (sigma 2) and every pixel renormalized to sum 1.
    """
    from scipy import ndimage
    from skimage import color

    lab = color.rgb2lab(_photo(stem)[:, :, :3]).astype(np.float64)
    light = lab[:, :, 0]
    mean = ndimage.gaussian_filter(light, SEGMENT_TEXTURE_SIGMA)
    square = ndimage.gaussian_filter(light * light, SEGMENT_TEXTURE_SIGMA)
    texture = np.sqrt(np.clip(square - mean * mean, 0, None))
    features = np.concatenate([lab, texture[:, :, None]], axis=2)
    prototypes = np.asarray(SEGMENT_PROTOTYPES)
    distance = np.linalg.norm(features[:, :, None, :] - prototypes, axis=3)
    logits = -distance / SEGMENT_TEMPERATURE
    prob = np.exp(logits - logits.max(axis=2, keepdims=True))
    prob /= prob.sum(axis=2, keepdims=True)
    smooth = np.stack(
        [
            ndimage.gaussian_filter(prob[:, :, k], SEGMENT_SMOOTH_SIGMA)
            for k in range(len(prototypes))
        ]
    )
    maps: np.ndarray = (smooth / smooth.sum(axis=0, keepdims=True)).astype(np.float32)
    return maps


_DOMAINS: dict[str, Callable[[str], np.ndarray | dict[str, np.ndarray]]] = {
    "photos": _photo,
    "edges": _edges,
    "cartoon": _cartoon,
    "pans": _pans,
    "segments": _segments,
}
DOMAINS: tuple[str, ...] = tuple(_DOMAINS)


def names() -> list[str]:
    """Every built-in name (without split), for messages and docs."""
    return [d + (f"_{g}" if g else "") for d in DOMAINS for g in ("", *GROUPS)]


def parse(name: str, *, train: bool, label: str) -> tuple[str, str | None, str]:
    """``cartoon_faces/val`` → ('cartoon', 'faces', 'val')."""
    base, _, split = name.partition("/")
    split = split or ("train" if train else "val")
    domain, _, group = base.partition("_")
    if domain not in _DOMAINS or (group and group not in GROUPS) or split not in SPLITS:
        from engine.spec.diagnostics import did_you_mean

        hint = did_you_mean(base, names()) if domain not in _DOMAINS or group else ""
        raise DataError(
            f"{label}: unknown built-in data 'builtin:{name}'{hint}; built-in names are "
            f"{', '.join(names())}, each optionally followed by /train, /val or /all"
        )
    return domain, group or None, split


def stems(group: str | None, split: str) -> list[str]:
    chosen = [s for s, g in PHOTOS.items() if group in (None, g)]
    if split == "all":
        return chosen
    return [s for s in chosen if (s in VAL) == (split == "val")]


def cache_root() -> Path:
    if os.environ.get("LOOM_CACHE"):
        base = Path(os.environ["LOOM_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]) / "loom"
    else:
        base = Path.home() / ".cache" / "loom"
    import skimage

    # skimage's __init__.pyi lists __version__ in __all__ but does not declare it.
    version = skimage.__version__  # type: ignore[attr-defined]
    return base / "builtin" / f"v{RECIPE_VERSION}-skimage{version}"


def materialize(name: str, *, train: bool, label: str) -> Path:
    """The folder holding built-in data ``name``, written on first use."""
    domain, group, split = parse(name, train=train, label=label)
    folder = cache_root() / domain / f"{group or 'all'}-{split}"
    if folder.is_dir():
        return folder
    wanted = stems(group, split)
    originals = [_original(domain, stem) for stem in wanted]
    _publish(folder, [f for files in originals for f in files])
    return folder


def _original(domain: str, stem: str) -> list[tuple[str, Path]]:
    """(relative name, file) of one photo's files in ``domain``, made once per cache."""
    store = cache_root() / "_made" / domain / stem
    if not store.is_dir():
        made = _DOMAINS[domain](stem)
        arrays = made if isinstance(made, dict) else {stem: made}
        _write_arrays(store, arrays)
    files = sorted(f for f in store.rglob("*") if f.is_file())
    return [(f.relative_to(store).as_posix(), f) for f in files]


def _write_arrays(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """8-bit images as PNG files, float arrays (probability maps) as ``.npy`` files."""
    from PIL import Image

    def fill(tmp: Path) -> None:
        for rel, array in arrays.items():
            path = tmp / f"{rel}.{'png' if array.dtype == np.uint8 else 'npy'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if array.dtype == np.uint8:
                Image.fromarray(array).save(path, compress_level=1)
            else:
                np.save(path, array)

    _atomic_folder(target, fill)


def _publish(target: Path, files: list[tuple[str, Path]]) -> None:
    def fill(tmp: Path) -> None:
        for rel, source in files:
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, path)
            except OSError:
                shutil.copyfile(source, path)

    _atomic_folder(target, fill)


def _atomic_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder, then rename it into place; a concurrent writer may win."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
