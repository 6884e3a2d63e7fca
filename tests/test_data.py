"""The data pipeline as a user meets it: folders in, exact tensors out, clear errors.

Images are small and made in tmp_path; built-in data is made once per machine (cached).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from engine.data import DataError, make_dataset, make_loader
from engine.data.builtin import PHOTOS, VAL
from engine.data.datasets import DATASETS
from engine.data.imageio import read_image, to_tensor
from engine.data.kinds import KERNELS, KINDS
from engine.data.options import Kernel, Kind, folder_warnings, parse_options
from engine.data.resize import resize
from engine.spec.skeleton import DATASET


def noise_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze()


def save(path: Path, pixels: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)
    return path


def folder_of(tmp: Path, name: str, images: dict[str, np.ndarray]) -> Path:
    for stem, pixels in images.items():
        save(tmp / name / f"{stem}.png", pixels)
    return tmp / name


def sr(tmp: Path, **section):
    opts = {"type": "sr", **section}
    scale = opts.pop("scale", 2)
    train = opts.pop("train", True)
    multiple = opts.pop("multiple", 1)
    return make_dataset(opts, scale=scale, train=train, seed=0, multiple=multiple, spec_dir=tmp)


def as_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8).squeeze()


# -- built-in data ---------------------------------------------------------------------


def test_builtin_photos_split_into_train_and_val(tmp_path: Path) -> None:
    train = make_dataset(
        {"type": "single", "folder": "builtin:photos"}, scale=1, train=True, seed=0
    )
    val = make_dataset({"type": "single", "folder": "builtin:photos"}, scale=1, train=False, seed=0)
    named = make_dataset(
        {"type": "single", "folder": "builtin:photos/val"}, scale=1, train=True, seed=0
    )
    stems = lambda ds: {f.stem for f in ds.x.files}  # noqa: E731
    assert stems(val) == stems(named) == set(VAL)
    assert stems(train) == set(PHOTOS) - set(VAL)
    photo = val[0]["x"]
    assert photo.shape[0] == 3 and min(photo.shape[1:]) >= 256
    assert photo.std() > 0.1  # a real photograph, not a placeholder


def test_builtin_edges_pair_with_photos_by_stem() -> None:
    ds = make_dataset(
        {"type": "paired", "A": "builtin:edges", "B": "builtin:photos"},
        scale=1,
        train=False,
        seed=0,
    )
    sample = ds[0]
    edges, photo = sample["A"], sample["B"]
    assert edges.shape == photo.shape
    values = set(torch.unique(edges).tolist())
    assert values == {0.0, 1.0}  # black lines on white
    assert 0.02 < (edges == 0).float().mean() < 0.3


def test_builtin_cartoon_is_flat_colours_with_dark_outlines() -> None:
    photo = make_dataset(
        {"type": "single", "folder": "builtin:photos_faces/val"}, scale=1, train=False, seed=0
    )[0]["x"]
    cartoon = make_dataset(
        {"type": "single", "folder": "builtin:cartoon_faces/val"}, scale=1, train=False, seed=0
    )[0]["x"]
    assert cartoon.shape == photo.shape

    def colours(t: torch.Tensor) -> int:
        return len(np.unique(as_uint8(t).reshape(-1, 3), axis=0))

    assert colours(cartoon) * 5 < colours(photo)
    dark = cartoon.mean(0) < 0.2
    assert dark.float().mean() > 0.02  # outlines


def test_builtin_pans_are_exact_whole_pixel_camera_moves() -> None:
    ds = make_dataset(
        {"type": "frames", "hr": "builtin:pans", "frames": 7}, scale=1, train=False, seed=0
    )
    frames = ds[0]["lr"]  # scale 1: lr holds the window itself
    a, b, c = frames[0], frames[1], frames[2]

    def shift_between(x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        n = x.shape[-1]
        for dy in range(-6, 7):
            for dx in range(-6, 7):
                xs = x[:, max(dy, 0) : n + min(dy, 0), max(dx, 0) : n + min(dx, 0)]
                ys = y[:, max(-dy, 0) : n + min(-dy, 0), max(-dx, 0) : n + min(-dx, 0)]
                if torch.equal(xs, ys):
                    return dy, dx
        raise AssertionError("no whole-pixel shift maps one frame onto the next")

    assert shift_between(a, b) == shift_between(b, c) != (0, 0)
    assert torch.equal(ds[0]["hr"], frames[3])  # the middle frame is exact


def test_unknown_builtin_name_suggests_the_right_one() -> None:
    with pytest.raises(DataError, match=r"unknown built-in data 'builtin:photo' \(did you mean"):
        make_dataset({"type": "sr", "hr": "builtin:photo"}, scale=2, train=True, seed=0)


# -- sr ---------------------------------------------------------------------------------


def test_sr_lr_made_on_the_fly_is_the_bicubic_downscale_of_the_hr_crop(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(70, 90)})
    ds = sr(tmp_path, hr="hr", crop_size=32, scale=4, flip=False)
    s = ds[0]
    assert s["hr"].shape == (3, 32, 32) and s["lr"].shape == (3, 8, 8)
    expected = resize(s["hr"], (8, 8), "bicubic")
    assert torch.allclose(s["lr"], expected, atol=1e-6)
    pil = Image.fromarray(as_uint8(s["hr"])).resize((8, 8), Image.BICUBIC)
    assert (
        np.abs(np.asarray(pil, np.float32) / 255 - s["lr"].permute(1, 2, 0).numpy()).max() < 2 / 255
    )


def test_sr_lr_folder_crops_align_at_the_scale_under_flips_and_rotations(tmp_path: Path) -> None:
    lr = noise_image(20, 20)
    hr = np.kron(lr, np.ones((3, 3, 1), np.uint8))  # every LR pixel is a 3x3 HR block
    folder_of(tmp_path, "hr", {"0001": hr, "0002": hr[::-1].copy()})
    folder_of(tmp_path, "lr", {"0001x3": lr, "0002x3": lr[::-1].copy()})  # DIV2K names
    ds = sr(tmp_path, hr="hr", lr="lr", scale=3, crop_size=30, flip=True, rotate=True)
    seen = set()
    for i in range(40):
        s = ds[(i, i % 2)]
        assert s["lr"].shape == (3, 10, 10) and s["hr"].shape == (3, 30, 30)
        up = s["lr"].repeat_interleave(3, -1).repeat_interleave(3, -2)
        assert torch.equal(up, s["hr"])  # same place, same flips
        seen.add(tuple(s["hr"][0, :3, :3].flatten().tolist()))
    assert len(seen) > 20  # crops and orientations vary


def test_flips_and_rotations_apply_identically_to_paired_sides(tmp_path: Path) -> None:
    img = noise_image(16, 16)
    folder_of(tmp_path, "A", {"x": img})
    folder_of(tmp_path, "B", {"x": 255 - img})
    ds = make_dataset(
        {"type": "paired", "A": "A", "B": "B", "flip": True, "rotate": True},
        scale=1,
        train=True,
        seed=3,
        spec_dir=tmp_path,
    )
    original = to_tensor(img)
    dihedral = [original, original.flip(-1), original.flip(-2), original.transpose(-1, -2)]
    dihedral += [t.flip(-1).flip(-2) for t in dihedral[:1]] + [original.flip(-1).transpose(-1, -2)]
    found = set()
    for i in range(30):
        s = ds[(i, 0)]
        assert torch.allclose(s["A"] + s["B"], torch.ones_like(s["A"]))
        found.add(bytes(as_uint8(s["A"]).tobytes()))
    assert len(found) >= 5  # of the 8 orientations


def test_validation_is_deterministic_full_images_modcropped_to_scale_and_multiple(
    tmp_path: Path,
) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(70, 90)})
    ds = sr(tmp_path, hr="hr", crop_size=32, scale=2, train=False, multiple=8)
    s = ds[0]
    # the network's input (LR) must be a multiple of 8: LR 32x40 → HR 64x80
    assert s["lr"].shape == (3, 32, 40) and s["hr"].shape == (3, 64, 80)
    assert torch.equal(s["hr"], to_tensor(noise_image(70, 90)[:64, :80]))
    assert torch.equal(ds[0]["lr"], s["lr"])


def test_same_seed_epoch_and_index_give_the_same_sample(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(64, 64)})
    ds = sr(tmp_path, hr="hr", crop_size=16, flip=True, rotate=True)
    assert torch.equal(ds[(3, 0)]["hr"], ds[(3, 0)]["hr"])
    crops = {as_uint8(ds[(e, 0)]["hr"]).tobytes() for e in range(10)}
    assert len(crops) > 5


# -- paired, unpaired, single -------------------------------------------------------------


def test_side_by_side_ab_images_split_in_halves(tmp_path: Path) -> None:
    a, b = noise_image(32, 32, 1), noise_image(32, 32, 2)
    folder_of(tmp_path, "ab", {"x": np.concatenate([a, b], axis=1)})
    ds = make_dataset(
        {"type": "paired", "folder": "ab"}, scale=1, train=False, seed=0, spec_dir=tmp_path
    )
    s = ds[0]
    assert torch.equal(s["A"], to_tensor(a)) and torch.equal(s["B"], to_tensor(b))


def test_unpaired_draws_b_at_random_in_training_and_in_order_in_validation(tmp_path: Path) -> None:
    folder_of(tmp_path, "A", {f"a{i}": np.full((8, 8, 3), i, np.uint8) for i in range(3)})
    folder_of(tmp_path, "B", {f"b{i}": np.full((8, 8, 3), 100 + i, np.uint8) for i in range(5)})
    section = {"type": "unpaired", "A": "A", "B": "B"}
    train = make_dataset(section, scale=1, train=True, seed=0, spec_dir=tmp_path)
    val = make_dataset(section, scale=1, train=False, seed=0, spec_dir=tmp_path)
    assert len(train) == 5
    b_of = lambda s: round(float(s["B"][0, 0, 0]) * 255) - 100  # noqa: E731
    assert [b_of(val[i]) for i in range(5)] == [0, 1, 2, 3, 4]
    assert len({b_of(train[(e, 0)]) for e in range(20)}) >= 4


def test_weights_sample_folders_four_to_one(tmp_path: Path) -> None:
    folder_of(tmp_path, "scenery", {f"s{i}": np.zeros((8, 8, 3), np.uint8) for i in range(2)})
    folder_of(tmp_path, "faces", {f"f{i}": np.full((8, 8, 3), 255, np.uint8) for i in range(6)})
    folder_of(tmp_path, "photos", {"p": np.zeros((8, 8, 3), np.uint8)})
    ds = make_dataset(
        {"type": "unpaired", "A": "photos", "B": ["scenery", "faces"], "weights": [4, 1]},
        scale=1,
        train=True,
        seed=0,
        spec_dir=tmp_path,
    )
    faces = sum(float(ds[(e, 0)]["B"].mean()) for e in range(500))  # white = a face
    assert 0.14 < faces / 500 < 0.26  # 1 in 5, although faces has 3x the files


def test_single_folder_with_gray_channels_max_size_and_subset(tmp_path: Path) -> None:
    folder_of(tmp_path, "x", {f"{i:02d}": noise_image(8, 8, i) for i in range(6)})
    (tmp_path / "subset.txt").write_text("01\n03.png\n# comment\n05\n")
    ds = make_dataset(
        {"type": "single", "folder": "x", "channels": 1, "subset": "subset.txt", "max_size": 2},
        scale=1,
        train=False,
        seed=0,
        spec_dir=tmp_path,
    )
    assert [f.stem for f in ds.x.files] == ["01", "03"]
    luma = noise_image(8, 8, 1).astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    assert ds[0]["x"].shape == (1, 8, 8)
    assert np.abs(ds[0]["x"][0].numpy() * 255 - luma).max() <= 0.5 + 1e-3


# -- preprocess modes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "extra", "shape"),
    [
        ("crop", {"crop_size": 16}, (16, 16)),
        ("center_crop", {"crop_size": 16}, (16, 16)),
        ("resize_and_crop", {"load_size": 40, "crop_size": 32}, (32, 32)),
        ("resize", {"load_size": 24}, (24, 24)),
        ("scale_width", {"load_size": 30}, (16, 24)),  # 21x30, then to the multiple 8
        ("scale_width_and_crop", {"load_size": 30, "crop_size": 16}, (16, 16)),
        ("scale_shortside_and_center_crop", {"load_size": 20, "crop_size": 16}, (16, 16)),
        ("none", {}, (40, 56)),
    ],
)
def test_preprocess_modes_give_the_documented_sizes(
    tmp_path: Path, mode: str, extra: dict, shape: tuple[int, int]
) -> None:
    img = noise_image(42, 60)
    folder_of(tmp_path, "x", {"a": img})
    section = {"type": "single", "folder": "x", "preprocess": mode, "flip": False, **extra}
    ds = make_dataset(section, scale=1, train=True, seed=0, multiple=8, spec_dir=tmp_path)
    out = ds[0]["x"]
    assert tuple(out.shape[1:]) == shape
    if mode == "center_crop":
        assert torch.equal(out, to_tensor(img[13:29, 22:38]))
    if mode == "none":  # cropped to the network's multiple, not resampled
        assert torch.equal(out, to_tensor(img[:40, :56]))
    if mode == "resize":
        assert torch.allclose(out, resize(to_tensor(img), (24, 24)), atol=1e-6)


def test_lr_crop_size_sets_the_hr_crop(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(64, 64)})
    s = sr(tmp_path, hr="hr", lr_crop_size=12, scale=4)[0]
    assert s["lr"].shape == (3, 12, 12) and s["hr"].shape == (3, 48, 48)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"crop_size": 30}, r"crop_size 30 \(the HR crop\) is not a multiple of the scale 4"),
        ({"crop_size": 32, "lr_crop_size": 4}, r"crop_size 32 \(HR\) and lr_crop_size 4 disagree"),
        ({"A": "x"}, r"data.train.A: type 'sr' does not read 'A'"),
        ({"preprocess": "resize_and_crop", "crop_size": 8}, r"set load_size"),
        ({"preprocess": "zoom", "crop_size": 8}, r"unknown mode 'zoom'"),
        ({"weights": [1, 2]}, r"every side has one folder"),
        ({"crop_size": 8}, r"crop_size 8 does not fit the network.*multiple of 16; use 16"),
    ],
)
def test_bad_settings_name_the_option(tmp_path: Path, section: dict, message: str) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(64, 64)})
    with pytest.raises(DataError, match=message):
        sr(tmp_path, hr="hr", scale=4, multiple=4, **section)


def _example(tmp: Path, kind: str) -> dict:
    """A small section of dataset type ``kind`` on files written into ``tmp``."""
    frames = {f"clip/{t}": noise_image(16, 16, t) for t in range(3)}
    images = {"a": noise_image(16, 16, 1), "b": noise_image(16, 16, 2)}
    if kind == "sr_seg":
        seg_data(tmp, {"a": coordinate_map(16, 16)}, size=16)
        return {"hr": "hr", "seg": "seg", "seg_classes": 3}
    for name in ("hr", "A", "B", "folder"):
        folder_of(tmp, name, images)
    folder_of(tmp, "clips", frames)
    return {
        "sr": {"hr": "hr"},
        "paired": {"A": "A", "B": "B"},
        "unpaired": {"A": "A", "B": "B"},
        "single": {"folder": "folder"},
        "frames": {"hr": "clips"},
        "interp": {"folder": "clips"},
    }[kind]


def test_every_dataset_type_has_one_class() -> None:
    assert list(DATASETS) == list(KINDS)
    assert DATASET["properties"]["type"]["enum"] == list(KINDS) == list(get_args(Kind))


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_dataset_type_gives_the_tensors_it_provides(tmp_path: Path, kind: str) -> None:
    section = {"type": kind, "crop_size": 8, **_example(tmp_path, kind)}
    item = make_dataset(section, scale=2, train=True, seed=0, spec_dir=tmp_path)[0]
    assert set(item) == set(KINDS[kind].provides)


def test_the_resize_kernels_are_listed_once() -> None:
    assert get_args(Kernel) == KERNELS
    assert DATASET["properties"]["resize_kernel"]["enum"] == list(KERNELS)
    image = torch.rand(3, 12, 12)
    for kernel in KERNELS:  # each one is implemented
        assert resize(image, (5, 7), kernel).shape == (3, 5, 7)


def test_the_options_module_reads_a_section_without_torch() -> None:
    code = (
        "import sys\n"
        "from engine.data.options import parse_options\n"
        "parse_options({'type': 'sr', 'hr': 'x'}, train=True, scale=2)\n"
        "assert 'torch' not in sys.modules, sorted(sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"type": "zoom", "hr": "x"}, "type", r"data.train.type: unknown dataset type 'zoom'"),
        ({"hr": "x", "A": "y"}, "A", r"data.train.A: type 'sr' does not read 'A'"),
        ({"lr": "x"}, None, r"data.train: type 'sr' needs hr$"),
        (
            {"type": "paired", "A": "x", "B": "y", "folder": "z"},
            None,
            r"type 'paired' needs A and B, or folder \(side-by-side AB images\)",
        ),
        ({"type": "single", "folder": "x", "lr_crop_size": 8}, "lr_crop_size", r"no LR side"),
        ({"hr": "x", "crop_size": 32, "lr_crop_size": 4}, "lr_crop_size", r"disagree"),
        ({"hr": "x", "crop_size": 30}, "crop_size", r"data.train.crop_size 30 .*use 28"),
        ({"hr": "x", "preprocess": "zoom"}, "preprocess", r"unknown mode 'zoom'"),
        ({"hr": "x", "preprocess": "resize", "crop_size": 8}, "preprocess", r"set load_size"),
        ({"hr": "x", "preprocess": "center_crop"}, "preprocess", r"crops: set crop_size"),
        (
            {"hr": "x", "preprocess": "resize_and_crop", "load_size": 8, "crop_size": 16},
            "load_size",
            r"smaller than crop_size",
        ),
        ({"hr": "x", "preprocess": "resize", "load_size": 30}, "load_size", r"not a multiple"),
        (
            {"type": "paired", "A": "x", "B": "y", "degradations": [{"kind": "jpeg"}]},
            "degradations",
            r"only types sr, sr_seg, frames degrade",
        ),
        ({"hr": "x", "seg_classes": 3}, "seg_classes", r"only type sr_seg"),
        ({"type": "interp", "folder": "x", "frames": 5}, "frames", r"always reads 3 frames"),
        ({"hr": "x", "weights": [1, 2]}, "weights", r"every side has one folder"),
        ({"hr": ["x", "y"], "weights": [1, 2, 3]}, "weights", r"has 3 values but .*hr lists 2"),
    ],
)
def test_each_option_error_names_the_key_to_change(section: dict, key: str | None, message) -> None:
    with pytest.raises(DataError, match=message) as caught:
        parse_options({"type": "sr", **section}, train=True, scale=4)
    assert caught.value.key == key and caught.value.problems == (caught.value,)


def test_every_problem_of_a_section_is_reported_with_its_key() -> None:
    section = {"type": "sr", "hr": "x", "A": "y", "crop_size": 95, "seg_classes": 3}
    with pytest.raises(DataError) as caught:
        parse_options(section, train=True, scale=2)
    problems = caught.value.problems
    assert [p.key for p in problems] == ["A", "crop_size", "seg_classes"]
    assert str(caught.value) == "\n".join(str(p) for p in problems)
    assert str(problems[1]).startswith("data.train.crop_size 95 (the HR crop) is not a multiple")


def test_batch_size_and_workers_are_options_with_defaults() -> None:
    plain = parse_options({"type": "sr", "hr": "x"}, train=True, scale=2)
    assert (plain.batch_size, plain.workers) == (1, 0)
    given = parse_options(
        {"type": "sr", "hr": "x", "batch_size": 8, "workers": 3}, train=False, scale=2
    )
    assert (given.batch_size, given.workers) == (8, 3)


def test_folder_warnings_name_missing_folders_and_files(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(8, 8)})
    (tmp_path / "notes.txt").write_text("a\n")
    section = {
        "type": "sr",
        "hr": ["hr", "builtin:photos", "gone", "notes.txt"],
        "lr": "lost",
        "subset": "list.txt",
    }
    options = parse_options(section, train=True, scale=2)
    found = folder_warnings(options, tmp_path)
    assert [key for key, _ in found] == ["hr", "hr", "lr", "subset"]
    texts = [text for _, text in found]
    assert texts[0].startswith("data.train.hr[2]: folder 'gone' does not exist (looked in ")
    assert texts[1] == "data.train.hr[3]: 'notes.txt' is a file, not a folder of images"
    assert texts[2].startswith("data.train.lr: folder 'lost' does not exist")
    assert texts[3] == "data.train.subset: file 'list.txt' does not exist"
    # the dataset refuses the section with the same words
    with pytest.raises(DataError) as caught:
        make_dataset({**section, "hr": "gone"}, scale=2, train=True, seed=0, spec_dir=tmp_path)
    assert str(caught.value) == texts[0].replace("hr[2]", "hr") and caught.value.key == "hr"
    ok = parse_options({"type": "sr", "hr": ["hr", "builtin:photos"]}, train=True, scale=2)
    assert folder_warnings(ok, tmp_path) == []


# -- image files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "kw", "tolerance"),
    [
        (".png", {}, 0),
        (".bmp", {}, 0),
        (".tif", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".jpg", {"quality": 95, "subsampling": 0}, 4),
    ],
)
def test_formats_read_as_rgb(tmp_path: Path, suffix: str, kw: dict, tolerance: int) -> None:
    img = np.kron(noise_image(4, 4), np.ones((4, 4, 1), np.uint8))
    path = save(tmp_path / f"a{suffix}", img, **kw)
    out = read_image(path, 3)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() <= tolerance


def _png16(pixels: np.ndarray, filters: list[int]) -> bytes:
    """A 16-bit PNG written with the given row filters (to test every unfilter path)."""
    h, w, c = pixels.shape
    raw = pixels.astype(">u2").tobytes()
    stride, bpp = w * c * 2, c * 2
    rows = np.frombuffer(raw, np.uint8).reshape(h, stride).astype(np.int32)
    out = []
    for y in range(h):
        x = rows[y]
        up = rows[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        p = left + up - ul
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
        kind = filters[y % len(filters)]
        pred = [0, left, up, (left + up) // 2, paeth][kind]
        out.append(bytes([kind]) + ((x - pred) & 0xFF).astype(np.uint8).tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    header = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(out)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_png_keeps_full_precision(tmp_path: Path, channels: int) -> None:
    pixels = np.random.default_rng(0).integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(_png16(pixels, [0, 1, 2, 3, 4]))
    out = read_image(path, channels)
    assert out.dtype == np.uint16
    assert np.array_equal(out, pixels)
    assert torch.equal(to_tensor(out), torch.from_numpy(pixels.transpose(2, 0, 1)) / 65535.0)


def test_16_bit_gray_png_and_rgb_tiff(tmp_path: Path) -> None:
    import tifffile

    gray = np.random.default_rng(1).integers(0, 65536, (6, 7), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(read_image(tmp_path / "g.png", 1)[:, :, 0], gray)
    rgb = np.random.default_rng(2).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "c.tif", 3), rgb)
    as_rgb = read_image(tmp_path / "g.png", 3)
    assert as_rgb.shape == (6, 7, 3) and np.array_equal(as_rgb[:, :, 2], gray)


def test_rgba_composites_on_white_or_keeps_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half black
    path = save(tmp_path / "a.png", rgba)
    rgb = read_image(path, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0].tolist() == [127, 127, 127]
    assert np.array_equal(read_image(path, 4), rgba)
    opaque = read_image(save(tmp_path / "b.png", noise_image(2, 2)), 4)
    assert opaque[:, :, 3].min() == 255


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured(tmp_path: Path, orientation: int) -> None:
    img = Image.fromarray(noise_image(5, 8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif, quality=100, subsampling=0)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(read_image(path, 3), expected)


# -- bad data ---------------------------------------------------------------------------------


def _corpus(tmp: Path) -> Path:
    good = folder_of(tmp, "data", {f"good{i}": noise_image(40, 40, i) for i in range(3)})
    return good


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "zero.png").write_bytes(b""), r"corrupt image '.*zero.png' \(empty file"),
        (
            lambda d: (d / "junk.png").write_bytes(b"<html>not an image</html>"),
            r"corrupt image '.*junk.png' \(cannot identify image file\); .*on_bad_image: skip",
        ),
        (
            lambda d: save(d / "tiny.png", noise_image(10, 12)),
            r"image '.*tiny.png' is 12x10, smaller than crop_size 16 \(data.train.crop_size\)",
        ),
    ],
    ids=["zero_byte", "not_an_image", "tiny"],
)
def test_bad_files_are_named_when_the_dataset_is_made(tmp_path: Path, make, message) -> None:
    folder = _corpus(tmp_path)
    make(folder)
    with pytest.raises(DataError, match=message):
        sr(tmp_path, hr="data", crop_size=16)
    skipping = sr(tmp_path, hr="data", crop_size=16, on_bad_image="skip")
    assert len(skipping) == 3 and len(skipping.skipped) == 1


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "harm", "reason"),
    [
        ("cut.jpg", _truncate, "truncated file"),
        ("broken.png", _damage, "damaged data: checksum mismatch in IDAT"),
    ],
    ids=["truncated_jpeg", "damaged_png"],
)
def test_files_bad_inside_fail_on_reading_even_in_a_worker(
    tmp_path: Path, name: str, harm, reason: str
) -> None:
    folder = _corpus(tmp_path)
    harm(save(folder / name, noise_image(64, 64), quality=90))
    ds = sr(tmp_path, hr="data", crop_size=16)
    bad = [f.name for f in ds.hr.files].index(name)
    pattern = rf"corrupt image '.*{name}' \({reason}.*\); fix or remove the file"
    with pytest.raises(DataError, match=pattern):
        ds[bad]
    loader = make_loader(ds, batch_size=4, workers=2, seed=0, shuffle=False, drop_last=True)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert str(info.value).startswith("corrupt image") and "Traceback" not in str(info.value)
    skipping = sr(tmp_path, hr="data", crop_size=16, on_bad_image="skip")
    assert skipping[bad]["hr"].shape == (3, 16, 16) and len(skipping.skipped) == 1


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.train.hr: folder 'nowhere' does not exist"):
        sr(tmp_path, hr="nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"folder 'empty' has no images .*'notes.txt'"):
        sr(tmp_path, hr="empty")


def test_relative_folders_resolve_against_the_spec_folder_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder_of(tmp_path / "spec", "hr", {"a": noise_image(8, 8)})
    monkeypatch.chdir(tmp_path)
    assert len(sr(tmp_path / "spec", hr="hr")) == 1


def test_mismatched_pairs_are_listed(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {n: noise_image(16, 16) for n in ("a", "b", "c")})
    folder_of(tmp_path, "lr", {n: noise_image(8, 8) for n in ("a", "b", "z")})
    with pytest.raises(DataError, match=r"1 files in hr have no match by stem in lr: 'c'"):
        sr(tmp_path, hr="hr", lr="lr")
    ds = sr(tmp_path, hr="hr", lr="lr", on_bad_image="skip")
    assert len(ds) == 2 and len(ds.skipped) == 2
    save(tmp_path / "lr" / "c.png", noise_image(9, 8))
    (tmp_path / "lr" / "z.png").unlink()
    with pytest.raises(DataError, match=r"lr image '.*c.png' is 8x9 but its hr image .* 16x16"):
        sr(tmp_path, hr="hr", lr="lr")


def test_subset_lists_hr_stems_and_matches_lr_files_with_div2k_names(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {n: noise_image(16, 16) for n in ("0001", "0002", "0003")})
    folder_of(tmp_path, "lr", {f"{n}x2": noise_image(8, 8) for n in ("0001", "0002", "0003")})
    (tmp_path / "subset.txt").write_text("0001\n0003\n")
    ds = sr(tmp_path, hr="hr", lr="lr", subset="subset.txt")
    assert [f.stem for f in ds.hr.files] == ["0001", "0003"]
    assert [f.stem for f in ds.lr_of.values()] == ["0001x2", "0003x2"]


def test_paired_sizes_must_agree(tmp_path: Path) -> None:
    folder_of(tmp_path, "A", {"a": noise_image(16, 16)})
    folder_of(tmp_path, "B", {"a": noise_image(16, 18)})
    with pytest.raises(DataError, match=r"B image '.*a.png' is 18x16 but its A image"):
        make_dataset(
            {"type": "paired", "A": "A", "B": "B"}, scale=1, train=True, seed=0, spec_dir=tmp_path
        )


# -- loading -----------------------------------------------------------------------------------


def _loader_data(tmp: Path):
    folder_of(tmp, "hr", {f"{i}": noise_image(24, 24, i) for i in range(10)})
    return sr(tmp, hr="hr", crop_size=8, flip=True, rotate=True)


def _take(iterator, n: int) -> list[torch.Tensor]:
    return [next(iterator)["hr"] for _ in range(n)]


def test_resumed_loader_yields_the_same_next_batches(tmp_path: Path) -> None:
    ds = _loader_data(tmp_path)
    opts = dict(batch_size=4, workers=0, seed=7, shuffle=True, drop_last=False)
    original = make_loader(ds, **opts)
    it = iter(original)
    _take(it, 5)  # 3 batches per epoch: into the second epoch
    state = original.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 2)
    expected = _take(it, 4)
    resumed = make_loader(ds, **opts)
    resumed.load_state_dict(state)
    got = _take(iter(resumed), 4)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert [b.shape[0] for b in got] == [2, 4, 4, 2]  # the last batch of an epoch is short


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    ds = _loader_data(tmp_path)
    opts = dict(batch_size=3, seed=1, shuffle=True, drop_last=True)
    serial = _take(iter(make_loader(ds, workers=0, **opts)), 7)
    parallel_loader = make_loader(ds, workers=2, **opts)
    parallel = _take(iter(parallel_loader), 7)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    # a persistent-worker loader resumes from its own state when iterated again
    state = parallel_loader.state_dict()
    again = _take(iter(parallel_loader), 2)
    fresh = make_loader(ds, workers=0, **opts)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again, _take(iter(fresh), 2), strict=True))


def test_a_dataset_smaller_than_a_batch_fills_it_with_distinct_crops(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(40, 40), "b": noise_image(40, 40, 1)})
    ds = sr(tmp_path, hr="hr", crop_size=8)
    batch = next(
        iter(make_loader(ds, batch_size=5, workers=0, seed=0, shuffle=True, drop_last=True))
    )
    assert batch["hr"].shape == (5, 3, 8, 8)
    assert len({as_uint8(t).tobytes() for t in batch["hr"]}) == 5


def test_images_of_different_sizes_in_a_batch_get_a_clear_error(tmp_path: Path) -> None:
    folder_of(tmp_path, "hr", {"a": noise_image(16, 16), "b": noise_image(16, 24)})
    ds = sr(tmp_path, hr="hr", train=True)
    loader = make_loader(ds, batch_size=2, workers=0, seed=0, shuffle=False, drop_last=True)
    with pytest.raises(DataError, match=r"different sizes in one batch .*batch_size: 1"):
        next(iter(loader))


def test_resume_refuses_a_changed_dataset(tmp_path: Path) -> None:
    ds = _loader_data(tmp_path)
    state = make_loader(
        ds, batch_size=4, workers=0, seed=0, shuffle=True, drop_last=True
    ).state_dict()
    other = make_loader(ds, batch_size=2, workers=0, seed=0, shuffle=True, drop_last=True)
    with pytest.raises(DataError, match=r"batch_size 4 → 2"):
        other.load_state_dict(state)


def test_frames_windows_give_lr_stacks_and_the_hr_centre_frame(tmp_path: Path) -> None:
    frames = {
        f"clip{c}/{t:03d}": noise_image(24, 24, 10 * c + t) for c in range(2) for t in range(5)
    }
    folder_of(tmp_path, "hr", frames)
    section = {"type": "frames", "hr": "hr", "frames": 3, "crop_size": 16, "flip": False}
    ds = make_dataset(section, scale=2, train=True, seed=0, spec_dir=tmp_path)
    assert len(ds) == 6  # 3 windows in each 5-frame clip
    s = ds[(0, 4)]
    assert s["lr"].shape == (3, 3, 8, 8) and s["hr"].shape == (3, 16, 16)
    assert torch.allclose(s["lr"][1], resize(s["hr"], (8, 8)), atol=1e-6)
    val = make_dataset(
        {**section, "preprocess": "none"}, scale=2, train=False, seed=0, spec_dir=tmp_path
    )
    assert torch.equal(val[1]["hr"], to_tensor(frames["clip0/002"]))


def test_frames_lr_folders_pair_by_stem_and_must_be_the_hr_size_over_the_scale(
    tmp_path: Path,
) -> None:
    hr = {f"clip/{t:03d}": noise_image(24, 24, t) for t in range(3)}
    folder_of(tmp_path, "hr", hr)
    folder_of(tmp_path, "lr", {f"clip/{t:03d}x2": noise_image(12, 12, 9 + t) for t in range(3)})
    section = {"type": "frames", "hr": "hr", "lr": "lr", "preprocess": "none"}
    s = make_dataset(section, scale=2, train=False, seed=0, spec_dir=tmp_path)[0]
    assert s["lr"].shape == (3, 3, 12, 12) and s["hr"].shape == (3, 24, 24)
    assert torch.equal(s["lr"][0], to_tensor(noise_image(12, 12, 9)))
    save(tmp_path / "lr" / "clip" / "001x2.png", noise_image(10, 12))
    with pytest.raises(
        DataError, match=r"lr image '.*001x2.png' is 12x10 but its hr image .* must be 12x12"
    ):
        make_dataset(section, scale=2, train=False, seed=0, spec_dir=tmp_path)


# -- sr_seg: SFTGAN's segmentation probability maps -------------------------------------------


def coordinate_map(h: int, w: int) -> np.ndarray:
    """A 3-class probability map whose channels say where each pixel came from:
    (y / D, x / D, the rest), D = h + w, HxWxC."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / (h + w)
    return np.stack([y, x, 1 - y - x], axis=2)


def coordinate_image(h: int, w: int) -> np.ndarray:
    """RGB: R = 4y, G = 4x (h, w <= 64)."""
    y, x = np.mgrid[0:h, 0:w] * 4
    return np.stack([y, x, np.zeros_like(x)], axis=2).astype(np.uint8)


def seg_data(tmp: Path, maps: dict[str, np.ndarray], size: int = 24) -> None:
    folder_of(tmp, "hr", {stem: coordinate_image(size, size) for stem in maps})
    (tmp / "seg").mkdir(exist_ok=True)
    for name, array in maps.items():
        np.save(tmp / "seg" / f"{name}.npy", array)


def sr_seg(tmp: Path, **section):
    return sr(tmp, type="sr_seg", hr="hr", seg="seg", seg_classes=3, **section)


def test_seg_maps_are_cut_flipped_and_rotated_with_the_hr_crop(tmp_path: Path) -> None:
    size = 24
    seg_data(tmp_path, {"a": coordinate_map(size, size)})  # .npy, H x W x C
    save(tmp_path / "hr" / "b.png", coordinate_image(size, size))
    # SFTGAN's own files: NAME_bic.pth, 1 x C x H x W (here float16)
    tensor = torch.from_numpy(coordinate_map(size, size).transpose(2, 0, 1)[None]).half()
    torch.save(tensor, tmp_path / "seg" / "b_bic.pth")
    ds = sr_seg(tmp_path, crop_size=12, scale=2, flip=True, rotate=True)
    assert len(ds) == 2
    corners = set()
    for i in range(40):
        s = ds[(i, i % 2)]
        seg, hr = s["seg"], s["hr"]
        assert seg.shape == (3, 12, 12) and s["lr"].shape == (3, 6, 6)
        assert torch.allclose(seg.sum(0), torch.ones(12, 12), atol=1e-6)
        y, x = (torch.round(hr[c] * 255 / 4) for c in (0, 1))
        assert torch.equal(torch.round(seg[0] * 2 * size), y)  # same place, same orientation
        assert torch.equal(torch.round(seg[1] * 2 * size), x)
        corners.add((int(y[0, 0]), int(x[0, 0]), int(y[0, 1]), int(x[0, 1])))
    assert len(corners) > 20  # crops and orientations vary


def test_seg_maps_a_few_pixels_short_use_the_part_they_cover(tmp_path: Path) -> None:
    # SFTGAN's segmentation script cuts images to a multiple of 8 before segmenting
    seg_data(tmp_path, {"a": coordinate_map(20, 22)}, size=24)
    s = sr_seg(tmp_path, scale=2, train=False)[0]
    assert s["hr"].shape == (3, 20, 22) and s["seg"].shape == (3, 20, 22)
    assert torch.equal(s["hr"], to_tensor(coordinate_image(24, 24)[:20, :22]))


def _torch_save(path: Path, value) -> None:
    torch.save(value, path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: np.save(d / "bad.npy", coordinate_map(24, 30)),
            r"seg map '.*bad.npy' is 30x24 but its hr image '.*bad.png' is 24x24; a probability "
            r"map must have its HR image's size",
        ),
        (
            lambda d: np.save(d / "bad.npy", np.full((5, 24, 24), 0.2, np.float32)),
            r"probability map '.*bad.npy' has shape \(5, 24, 24\), but a map of seg_classes 3",
        ),
        (
            lambda d: (d / "bad.npy").write_bytes(b"not an array"),
            r"corrupt probability map '.*bad.npy' \(not a .npy file: no NUMPY header\); fix or "
            r"remove the file",
        ),
        (
            lambda d: _torch_save(d / "bad.pth", {"seg": torch.zeros(3, 24, 24)}),
            r"corrupt probability map '.*bad.pth' \(it holds a dict, not a tensor\)",
        ),
        (lambda d: None, r"1 files in hr have no match by stem in seg: 'bad'"),
    ],
    ids=["wrong_size", "wrong_classes", "not_npy", "dict_in_pth", "missing"],
)
def test_bad_seg_maps_are_named_when_the_dataset_is_made(tmp_path: Path, make, message) -> None:
    seg_data(tmp_path, {f"good{i}": coordinate_map(24, 24) for i in range(2)})
    save(tmp_path / "hr" / "bad.png", coordinate_image(24, 24))
    make(tmp_path / "seg")
    with pytest.raises(DataError, match=message):
        sr_seg(tmp_path, crop_size=8)
    skipping = sr_seg(tmp_path, crop_size=8, on_bad_image="skip")
    assert len(skipping) == 2 and len(skipping.skipped) == 1


def _with(value: float, where: tuple[int, int, int] = (5, 7, 1)) -> np.ndarray:
    m = coordinate_map(24, 24)
    m[where] = value
    return m


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_with(np.nan), r"probability map '.*bad.npy' contains NaN or infinite values"),
        (_with(-0.5), r"probability map '.*bad.npy' has negative values \(down to -0.5\)"),
        (
            coordinate_map(24, 24) * 3,
            r"probability map '.*bad.npy' does not sum to 1 over its 3 channels \(sums from 3 "
            r"to 3\).*softmax",
        ),
    ],
    ids=["nan", "negative", "scores"],
)
def test_seg_map_values_are_checked_when_read(tmp_path: Path, bad: np.ndarray, message) -> None:
    seg_data(tmp_path, {"bad": bad, "good": coordinate_map(24, 24)})
    ds = sr_seg(tmp_path, crop_size=8)
    with pytest.raises(DataError, match=message):
        ds[0]
    skipping = sr_seg(tmp_path, crop_size=8, on_bad_image="skip")
    assert skipping[0]["seg"].shape == (3, 8, 8) and len(skipping.skipped) == 1


def test_seg_maps_are_renormalized_and_resized_as_probabilities(tmp_path: Path) -> None:
    m = coordinate_map(24, 24)
    m[:, :, 2] += 0.005  # within the tolerance of float16 storage and rounding
    seg_data(tmp_path, {"a": m})
    s = sr_seg(tmp_path, preprocess="resize", load_size=16, scale=2, train=False)[0]
    assert s["seg"].shape == (3, 16, 16) and s["seg"].min() >= 0
    assert torch.allclose(s["seg"].sum(0), torch.ones(16, 16), atol=1e-5)


def test_builtin_segments_are_deterministic_soft_probabilities() -> None:
    from engine.data.builtin import _segments

    section = {"type": "sr_seg", "hr": "builtin:photos", "seg": "builtin:segments"}
    ds = make_dataset(section, scale=4, train=False, seed=0, multiple=2)
    assert [f.stem for f in ds.hr.files] == sorted(VAL)
    cached = np.load(ds.seg_of[ds.hr.files[0]])  # chelsea
    assert cached.shape == (8, 300, 451) and cached.dtype == np.float32
    assert np.abs(cached.sum(0) - 1).max() < 1e-5
    assert np.array_equal(cached, _segments("chelsea"))  # the recipe is deterministic
    assert cached.max(0).mean() < 0.95  # soft, not one-hot
    assert (np.bincount(cached.argmax(0).ravel(), minlength=8) > 0.01 * cached[0].size).sum() >= 4
    s = ds[0]
    assert s["seg"].shape == (8, 296, 448) and s["hr"].shape == (3, 296, 448)
    expected = to_tensor(cached.transpose(1, 2, 0)[:296, :448])
    assert torch.allclose(s["seg"], expected, atol=1e-6)


def test_sr_seg_on_builtin_data_loads_batches(tmp_path: Path) -> None:
    section = {"type": "sr_seg", "hr": "builtin:photos", "seg": "builtin:segments", "crop_size": 32}
    ds = make_dataset(section, scale=4, train=True, seed=0)
    assert len(ds) == len(PHOTOS) - len(VAL)
    loader = make_loader(ds, batch_size=4, workers=0, seed=0, shuffle=True, drop_last=True)
    batch = next(iter(loader))
    assert batch["seg"].shape == (4, 8, 32, 32) and batch["lr"].shape == (4, 3, 8, 8)
    assert torch.allclose(batch["seg"].sum(1), torch.ones(4, 32, 32), atol=1e-5)


# -- interp: frame interpolation triplets (RIFE) -----------------------------------------------


def ramp_frames(tmp: Path, n: int = 7, size: int = 16) -> Path:
    """One sequence whose frame t is the same noise plus t (so frames are told apart
    by their mean, and the same geometry leaves a constant difference)."""
    base = np.random.default_rng(0).integers(0, 200, (size, size, 3), dtype=np.uint8)
    return folder_of(tmp, "clips", {f"clip/{t:03d}": base + t for t in range(n)})


def interp(tmp: Path, train: bool = True, **section):
    opts = {"type": "interp", "folder": "clips", **section}
    return make_dataset(opts, scale=4, train=train, seed=0, spec_dir=tmp)  # scale ignored


def frame_index(t: torch.Tensor, first: torch.Tensor) -> int:
    return round(float((t - first).mean()) * 255)


def test_interp_gives_f0_mid_f1_with_identical_geometry(tmp_path: Path) -> None:
    ramp_frames(tmp_path)
    ds = interp(tmp_path, crop_size=8, flip=True, rotate=True)
    assert len(ds) == 5  # windows of 3 in 7 frames
    for i in range(20):
        s = ds[(i, 2)]
        assert {k: tuple(v.shape) for k, v in s.items()} == {k: (3, 8, 8) for k in s}
        # the same crop, flips and rotation: the frames differ by a constant
        assert torch.allclose(s["mid"] - s["f0"], torch.full_like(s["mid"], 1 / 255), atol=1e-6)
        assert torch.allclose(s["f1"] - s["mid"], torch.full_like(s["mid"], 1 / 255), atol=1e-6)


def test_interp_reverse_swaps_the_inputs_and_frame_skip_spreads_them(tmp_path: Path) -> None:
    ramp_frames(tmp_path)
    base = to_tensor(np.random.default_rng(0).integers(0, 200, (16, 16, 3), dtype=np.uint8))
    ds = interp(tmp_path, reverse=True, frame_skip=[1, 3], flip=False)
    seen = set()
    for e in range(60):
        s = ds[(e, 0)]
        f0, mid, f1 = (frame_index(s[k], base) for k in ("f0", "mid", "f1"))
        assert f0 - mid == mid - f1 != 0  # the middle frame is the target
        seen.add(f0 - mid)
    assert seen == {-3, -2, -1, 1, 2, 3}  # skips 1 to 3, either direction
    val = interp(tmp_path, train=False, reverse=True, frame_skip=2)
    s = val[1]  # validation: no reversal, the given skip, windows in order
    assert [frame_index(s[k], base) for k in ("f0", "mid", "f1")] == [1, 3, 5]
    with pytest.raises(DataError, match=r"data.train.frames: type interp always reads 3 frames"):
        interp(tmp_path, frames=5)


def test_interp_subset_lists_sequences_as_vimeo_lists_do(tmp_path: Path) -> None:
    for clip in ("00001/0001", "00001/0002", "00002/0001"):
        folder_of(tmp_path, "clips", {f"{clip}/im{t}": noise_image(8, 8, t) for t in (1, 2, 3)})
    (tmp_path / "tri_trainlist.txt").write_text("00001/0002\n00002/0001\n")
    ds = interp(tmp_path, subset="tri_trainlist.txt", flip=False)
    assert len(ds) == 2
    assert [f.parent.name for f in ds.hr.files] == ["0002"] * 3 + ["0001"] * 3
    assert torch.equal(ds[(0, 1)]["mid"], to_tensor(noise_image(8, 8, 2)))


def test_interp_on_builtin_pans_has_the_exact_middle_frame(tmp_path: Path) -> None:
    val = make_dataset({"type": "interp", "folder": "builtin:pans"}, scale=1, train=False, seed=0)
    assert len(val) == len(VAL) * 4 * 5  # 4 pans of 7 frames per photo, 5 windows each
    s = val[0]
    chosen, _ = val.window(0, np.random.default_rng(0))
    assert torch.equal(s["mid"], to_tensor(read_image(chosen[1], 3)))
    # a constant-speed pan: f0 → mid and mid → f1 are the same whole-pixel shift
    n = s["mid"].shape[-1]
    moves = []
    for a, b in ((s["f0"], s["mid"]), (s["mid"], s["f1"])):
        moves.append(
            next(
                (dy, dx)
                for dy in range(-6, 7)
                for dx in range(-6, 7)
                if torch.equal(
                    a[:, max(dy, 0) : n + min(dy, 0), max(dx, 0) : n + min(dx, 0)],
                    b[:, max(-dy, 0) : n + min(-dy, 0), max(-dx, 0) : n + min(-dx, 0)],
                )
            )
        )
    assert moves[0] == moves[1] != (0, 0)
    train = make_dataset(
        {"type": "interp", "folder": "builtin:pans", "crop_size": 64, "reverse": True},
        scale=1,
        train=True,
        seed=0,
    )
    batch = next(
        iter(make_loader(train, batch_size=4, workers=0, seed=0, shuffle=True, drop_last=True))
    )
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        k: (4, 3, 64, 64) for k in ("f0", "f1", "mid")
    }


# -- specs using the new types ------------------------------------------------------------------

ONE_STEP = """\
optimizers:
  G: {type: adam, params: G, lr: 1.0e-4}
train:
  iterations: 10
  phases: [{name: main, steps: [{optimizer: G, minimize: {pix: 1.0}}]}]
"""

SFT_SPEC = """\
spec: 1
name: tiny_sft
scale: 2
networks:
  G:
    inputs: {lr: 3, seg: 8}
    nodes:
      cond: {block: conv, in: seg, out: 4, kernel: 2, stride: 2}   # HR map → LR grid
      head: {block: conv, in: [lr, cond], out: 12}
      up: {block: pixel_shuffle, in: head, scale: 2}
      tail: {block: conv, in: up, out: 3}
    outputs: {sr: tail}
graph:
  fake: {call: G, in: {lr: data.lr, seg: data.seg}}
  pix: {loss: l1, in: [fake.sr, data.hr]}
data:
  train: {type: sr_seg, hr: "builtin:photos", seg: "builtin:segments", crop_size: 32, batch_size: 2}
  val: {type: sr_seg, hr: "builtin:photos", seg: "builtin:segments"}
"""

INTERP_SPEC = """\
spec: 1
name: tiny_interp
networks:
  G:
    inputs: {f0: 3, f1: 3}
    nodes:
      mix: {block: conv, in: [f0, f1], out: 3}
    outputs: {mid: mix}
graph:
  fake: {call: G, in: {f0: data.f0, f1: data.f1}}
  pix: {loss: l1, in: [fake.mid, data.mid]}
data:
  train: {type: interp, folder: "builtin:pans", crop_size: 48, batch_size: 2, reverse: true}
  val: {type: interp, folder: "builtin:pans"}
"""

# Video SR: a window of LR frames, (N, T, C, h, w), around the HR centre frame.
FRAMES_SPEC = """\
spec: 1
name: tiny_frames
scale: 2
networks:
  G:
    inputs: {x: 3}
    nodes:
      out: {block: conv, in: x, out: 3}
    outputs: {y: out}
graph:
  fake: {call: G, in: data.hr}
  pix: {loss: l1, in: [fake.y, data.hr]}
data:
  train: {type: frames, hr: "builtin:pans", crop_size: 32, batch_size: 2, frames: 5}
"""


@pytest.mark.parametrize(
    ("text", "shapes"),
    [
        (
            SFT_SPEC,
            {"data.lr": (2, 3, 16, 16), "data.hr": (2, 3, 32, 32), "data.seg": (2, 8, 32, 32)},
        ),
        (
            SFT_SPEC.replace("crop_size: 32", "lr_crop_size: 16"),
            {"data.lr": (2, 3, 16, 16), "data.hr": (2, 3, 32, 32), "data.seg": (2, 8, 32, 32)},
        ),
        (INTERP_SPEC, {f"data.{k}": (2, 3, 48, 48) for k in ("f0", "f1", "mid")}),
        (
            FRAMES_SPEC,
            {
                "data.lr": (2, 5, 3, 16, 16),
                "data.hr": (2, 3, 32, 32),
                "data.hr_frames": (2, 5, 3, 32, 32),
            },
        ),
    ],
    ids=["sr_seg", "sr_seg_lr_crop", "interp", "frames"],
)
def test_specs_with_the_new_types_validate_and_match_their_batches(
    tmp_path: Path, text: str, shapes: dict
) -> None:
    from engine.compile.build import check_shapes
    from engine.load import check_spec

    path = tmp_path / "spec.yaml"
    path.write_text(text + ONE_STEP, encoding="utf-8")
    spec, diags = check_spec(path)
    assert spec is not None, [str(d) for d in diags]
    assert check_shapes(spec).data == shapes
    section = spec.data["data"]["train"]
    ds = make_dataset(section, scale=int(spec.data.get("scale", 1)), train=True, seed=0)
    loader = make_loader(ds, batch_size=2, workers=0, seed=0, shuffle=True, drop_last=True)
    batch = next(iter(loader))
    assert {f"data.{k}": tuple(v.shape) for k, v in batch.items()} == shapes


def test_inspect_probes_a_condition_map_at_its_ratio_to_the_image(tmp_path: Path) -> None:
    """SFTGAN's G takes the LR image and the map at the HR size: sizes are probed in pairs."""
    from engine.compile.build import check_shapes
    from engine.compile.inspect import size_rule
    from engine.load import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(SFT_SPEC + ONE_STEP, encoding="utf-8")
    spec = load_spec(path)
    reference = check_shapes(spec).networks["G"]
    assert reference.input_shapes["seg"][-1] == 2 * reference.input_shapes["lr"][-1]
    rule = size_rule(spec.networks["G"], reference)
    assert (rule.multiple, rule.smallest, rule.fixed) == (1, 1, None)
