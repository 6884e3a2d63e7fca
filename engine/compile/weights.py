"""Weight files in and out of compiled networks.

Reading never runs pickled code: ``.pth``/``.pt`` go through
``torch.load(weights_only=True)``, which rebuilds tensors and plain containers only,
and ``.safetensors`` holds no code at all. What is read is unwrapped from the usual
containers (``params_ema``, ``params``, ``state_dict``, ``model``), converted from older
community layouts when the network is an RRDBNet, and matched against the network key
by key; :class:`LoadReport` says what was missing, unexpected or of another shape.

Layouts (the key names inside a weight file):

* ``loom`` — the network's own ``state_dict`` keys, which are its node names.
* ``esrgan`` — ESRGAN's "new" layout (BasicSR, Real-ESRGAN): ``conv_first``,
  ``body.N.rdbM.convK``, ``conv_body``, ``conv_up1`` …, ``conv_hr``, ``conv_last``.
  Loom's RRDBNet has exactly these names.
* ``esrgan_old`` — the original ESRGAN repository's ``nn.Sequential`` layout. With
  ``n`` upsampling stages (``upsample, conv, lrelu`` each) the indices are::

      model.0                       conv_first
      model.1.sub.N.RDBM.convK.0    body.N.rdbM.convK
      model.1.sub.{nb}              conv_body
      model.{3k}, k = 1 … n         conv_up{k}
      model.{3n + 2}                conv_hr
      model.{3n + 4}                conv_last

  n = 2 at x4 (3, 6, 8, 10), 3 at x8 (3, 6, 9, 11, 13). Real-ESRGAN's x2 and x1 models
  pixel-unshuffle their input and keep the two x4 stages, so they are n = 2 as well;
  an old-style x2 model without unshuffle has n = 1 (3, 5, 7).
* ``compact`` — Real-ESRGAN's SRVGGNetCompact, ``body.0`` … ``body.{2·num_conv+2}``;
  Loom's ``SRVGGNetCompact`` has exactly these names.
* ``pan`` — the original PAN repository's names (``SCPA_trunk.N.PAConv.k2``,
  ``upconv1``, ``att1.conv``, ``HRconv1`` …); Loom's ``PAN`` has exactly these names.
* ``pan_trainner`` — traiNNer's PAN (``SCPA_trunk.N.PACnv.k2``, ``upsample.{1, 2.conv,
  4, 6, …}``); read and written through :mod:`engine.compile.layouts_pan`.

Files read as ``esrgan_old`` or in BSRGAN/RealSR's names (``RRDB_trunk``, ``trunk_conv``,
``upconv1``, ``HRconv``) are renamed to the ``esrgan`` layout before matching.

Re-parameterized convs that a network computes from its branches instead of training
them (SPAN's ``eval_conv``, see :mod:`engine.compile.reparam`) are written by every
export, and a file's copy is checked against its branches and left out when loading.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import safetensors.torch
import torch
from torch import nn

from engine.compile import layouts_pan, reparam
from engine.compile.keymap import KeyMap, KeyMapError, apply_key_map

Layout = Literal["loom", "esrgan", "esrgan_old", "compact", "pan", "pan_trainner"]
#: The layouts a file can be read in: the network's own names, or an older ESRGAN one.
SourceLayout = Literal["loom", "esrgan_old", "bsrgan", "pan_trainner"]
StateDict = dict[str, torch.Tensor]
Shape = tuple[int, ...]

#: Keys under which training tools nest the weights, most useful first: the EMA copy
#: is what Real-ESRGAN and BasicSR run at inference.
CONTAINERS = ("params_ema", "params", "state_dict", "model")
SAFETENSORS = (".safetensors",)
PICKLED = (".pth", ".pt", ".pkl")  # .pkl: RIFE publishes flownet.pkl (a torch.save file)
LIST_LIMIT = 8  # keys shown per kind in an error message

#: The keys that make a network (or a file) an RRDBNet in the ``esrgan`` layout.
RRDBNET_KEYS = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight")
COMPACT_KEYS = ("body.0.weight", "body.1.weight")


class WeightsError(Exception):
    """A weight file cannot be read, or does not fit the network (``strict=True``)."""


class ShapePair(NamedTuple):
    """A key's shape in the network and in the file (``()`` for a value not a tensor)."""

    network: Shape
    file: Shape


@dataclass
class LoadReport:
    """What :func:`load_weights` did, key by key (keys in the network's names)."""

    source: str
    layout: SourceLayout  # the names the file was written in
    loaded: list[str] = field(default_factory=list)
    missing: dict[str, Shape] = field(default_factory=dict)  # network keys not in the file
    unexpected: dict[str, Shape] = field(default_factory=dict)  # file keys not in the network
    mismatched: dict[str, ShapePair] = field(default_factory=dict)
    renamed: int = 0  # file keys renamed (or left out) by a key map

    @property
    def ok(self) -> bool:
        """Every key of the network was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        head = f"{self.source}: {len(self.loaded)} tensors fit the network"
        if self.layout != "loom":
            head += f" (read in the {self.layout} layout)"
        if self.ok:
            return head
        lines = [head + "; " + self.summary()]
        lines += _section(
            "missing (in the network, not in the file)",
            [f"{k} {s}" for k, s in self.missing.items()],
        )
        lines += _section(
            "unexpected (in the file, not in the network)",
            [f"{k} {s}" for k, s in self.unexpected.items()],
        )
        lines += _section(
            "other shape (network vs file)",
            [f"{k}: {p.network} vs {p.file}" for k, p in self.mismatched.items()],
        )
        return "\n".join(lines)

    def summary(self) -> str:
        renamed = f", {self.renamed} renamed by the key map" if self.renamed else ""
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} of another shape{renamed}"
        )


def _section(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    shown = [f"    {item}" for item in items[:LIST_LIMIT]]
    if len(items) > LIST_LIMIT:
        shown.append(f"    … and {len(items) - LIST_LIMIT} more")
    return [f"  {title}:", *shown]


# --------------------------------------------------------------------- reading
def read_state_dict(path: str | Path) -> StateDict:
    """The tensors of a ``.pth``/``.pt`` or ``.safetensors`` file, without running code."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS:
        try:
            tensors = safetensors.torch.load_file(path, device="cpu")
        except safetensors.SafetensorError as exc:
            raise WeightsError(
                _refusal(path, f"damaged or not a safetensors file ({exc})")
            ) from None
        return _unwrap(tensors, str(path))
    if suffix not in PICKLED:
        raise WeightsError(
            f"{path}: unknown weight file type '{suffix}'; "
            f"Loom reads {', '.join(SAFETENSORS + PICKLED)}"
        )
    return _unwrap(load_pickled(path), str(path))


#: torch's text for a pickle that would import something: "... GLOBAL posix.system ...".
_GLOBAL = re.compile(r"GLOBAL (\S+)")
_OPERAND = re.compile(r"Unsupported operand (\d+)")


def load_pickled(path: Path) -> Any:
    """``torch.load`` of tensors and plain containers only; every refusal is Loom's own
    message naming the file and why: unsafe (it would run code), damaged (empty or
    truncated), or of another format. torch's advice to turn the protection off never
    reaches the user."""
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols says nothing useful
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if found := _GLOBAL.search(text):
            why = (
                f"unsafe: it would import and run '{found[1]}' when loaded (a pickled "
                "object, not tensors)"
            )
        elif found := _OPERAND.search(text):
            why = (
                f"unsafe or damaged: its pickle uses an instruction ({found[1]}) that only "
                "files able to run code need"
            )
        elif "invalid load key" in text:
            why = _other_format(path)
        else:
            why = "unsafe or damaged: it holds something other than tensors and plain containers"
    except (EOFError, RuntimeError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise WeightsError(f"{path}: cannot be read ({exc.strerror})") from None
        size = path.stat().st_size if path.is_file() else 0
        why = (
            "damaged: the file is empty"
            if size == 0
            else (f"damaged: truncated or corrupted ({size} bytes; {_short(exc)})")
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        why = _other_format(path)
    raise WeightsError(_refusal(path, why))


def _refusal(path: Path, why: str) -> str:
    if why.startswith("unsafe"):
        advice = (
            "Loom reads tensors only and never runs code from a weights file; if the file "
            "comes from a source you trust, re-save its tensors as a plain dict or as "
            ".safetensors"
        )
    else:
        advice = "Nothing was loaded from it; copy or export the file again"
    return f"{path}: refused as {why}. {advice}"


def _other_format(path: Path) -> str:
    head = path.read_bytes()[:16] if path.is_file() else b""
    if len(head) >= 9 and head[8:9] == b"{":
        return "another format: it looks like a .safetensors file (rename it to .safetensors)"
    return f"another format: not a PyTorch weights file (it starts with {head[:8]!r})"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def _unwrap(obj: Any, source: str) -> StateDict:
    """The weights inside the containers training tools save."""
    while isinstance(obj, Mapping):
        inner = next((k for k in CONTAINERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = obj[inner]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: holds a {type(obj).__name__}, not a dict of tensors")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


# ------------------------------------------------------------------ ESRGAN names
_NEW_RDB = re.compile(r"body\.(\d+)\.rdb([1-3])\.conv([1-5])")
_OLD_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB([1-3])\.conv([1-5])\.0")
_OLD_TOP = re.compile(r"model\.(\d+)")
_OLD_SUB = re.compile(r"model\.1\.sub\.(\d+)")
_BSRGAN_RENAMES = (
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB([1-3])\."), r"body.\1.rdb\2."),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv(\d)\."), r"conv_up\1."),
    (re.compile(r"^HRconv\."), "conv_hr."),
)


def _old_names(n_up: int, nb: int) -> dict[str, str]:
    """New-layout module names outside the RDBs → their ``esrgan_old`` names."""
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{nb}"}
    for k in range(1, n_up + 1):
        names[f"conv_up{k}"] = f"model.{3 * k}"
    names["conv_hr"] = f"model.{3 * n_up + 2}"
    names["conv_last"] = f"model.{3 * n_up + 4}"
    return names


def _rename_modules(state: StateDict, rename: Callable[[str], str]) -> StateDict:
    """Apply ``rename`` to the module part of every key (``conv_hr`` of ``conv_hr.bias``)."""
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[f"{rename(module)}.{param}" if module else key] = value
    return out


def esrgan_to_old(state: StateDict) -> StateDict:
    """``esrgan`` layout → ``esrgan_old`` (the original ESRGAN repository's)."""
    nb = 1 + max((int(m[1]) for k in state if (m := _NEW_RDB.match(k))), default=-1)
    n_up = sum(1 for k in state if re.fullmatch(r"conv_up\d+\.weight", k))
    names = _old_names(n_up, nb)

    def rename(module: str) -> str:
        if m := _NEW_RDB.fullmatch(module):
            return f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0"
        return names.get(module, module)

    return _rename_modules(state, rename)


def esrgan_from_old(state: StateDict) -> StateDict:
    """``esrgan_old`` layout → ``esrgan``; the tail indices give the upsampling stages."""
    modules = {k.rpartition(".")[0] for k in state}
    tail = sorted({int(m[1]) for k in modules if (m := _OLD_TOP.fullmatch(k))} - {0})
    n_up = (tail[-1] - 4) // 3 if tail else 0
    expected = [*(3 * k for k in range(1, n_up + 1)), 3 * n_up + 2, 3 * n_up + 4]
    if tail != expected:
        raise WeightsError(
            f"old ESRGAN layout with layers model.{tail} after model.0: expected model.3k "
            "for each upsampling stage k = 1 … n, then model.3n+2 (HR conv) and "
            "model.3n+4 (last conv), e.g. [3, 6, 8, 10] at x4"
        )
    nb = max((int(m[1]) for k in modules if (m := _OLD_SUB.fullmatch(k))), default=0)
    names = {old: new for new, old in _old_names(n_up, nb).items()}

    def rename(module: str) -> str:
        if m := _OLD_RDB.fullmatch(module):
            return f"body.{m[1]}.rdb{m[2]}.conv{m[3]}"
        return names.get(module, module)

    return _rename_modules(state, rename)


def esrgan_from_bsrgan(state: StateDict) -> StateDict:
    """BSRGAN/RealSR names (``RRDB_trunk``, ``trunk_conv``, ``upconvK``, ``HRconv``) →
    ``esrgan``."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in _BSRGAN_RENAMES:
            key = pattern.sub(replacement, key)
        out[key] = value
    return out


def _source_layout(state: Mapping[str, Any], target: Mapping[str, Any]) -> SourceLayout:
    """The layout a file's keys are in; RRDBNet and PAN have other layouts to convert."""
    if layouts_pan.is_pan(target):
        return "pan_trainner" if layouts_pan.is_trainner(state) else "loom"
    if not all(k in target for k in RRDBNET_KEYS):
        return "loom"
    return _older_esrgan(state) or "loom"


def _older_esrgan(state: Mapping[str, Any]) -> SourceLayout | None:
    """The older ESRGAN layout a file is in (the original's, BSRGAN's), if any."""
    if "RRDB_trunk.0.RDB1.conv1.weight" in state:
        return "bsrgan"
    if "model.0.weight" in state and any(_OLD_RDB.fullmatch(k.rpartition(".")[0]) for k in state):
        return "esrgan_old"
    return None


_TO_ESRGAN: dict[str, Callable[[StateDict], StateDict]] = {
    "esrgan_old": esrgan_from_old,
    "bsrgan": esrgan_from_bsrgan,
}


# --------------------------------------------------------------------- loading
def load_weights(
    module: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, Any],
    *,
    strict: bool = True,
    key_map: KeyMap = (),
) -> LoadReport:
    """Load weights into a compiled network and report how they fitted.

    ``strict=True`` loads nothing unless every key fits, and raises :class:`WeightsError`
    listing the missing, unexpected and mis-shaped keys. ``strict=False`` loads the keys
    that fit and reports the rest. A file that cannot be read, holds pickled objects
    other than tensors, or is in the old ESRGAN layout with layers in no known order
    raises :class:`WeightsError` either way. ``key_map`` renames the file's keys first
    (:mod:`engine.compile.keymap`: a file trained as another network).
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        state = _unwrap(path_or_state_dict, source)
    else:
        source = str(path_or_state_dict)
        state = read_state_dict(path_or_state_dict)
    renamed = 0
    if key_map:
        # A key map for an ESRGAN file is written in the new layout's names, whatever
        # layout the file is in (SRFlow's encoder from any ESRGAN generator).
        older = _older_esrgan(state)
        if older is not None:
            state = _TO_ESRGAN[older](state)
        try:
            state, renamed = apply_key_map(state, key_map)
        except KeyMapError as exc:
            raise WeightsError(f"{source}: {exc}") from None
    target = module.state_dict()
    layout = _source_layout(state, target)
    if layout in _TO_ESRGAN:
        state = _TO_ESRGAN[layout](state)
    elif layout == "pan_trainner":
        try:
            state = layouts_pan.from_trainner(state)
        except layouts_pan.PanLayoutError as exc:
            raise WeightsError(f"{source}: {exc}") from None
    state = _from_old_spectral_norm(state, target)
    state = _with_implied(module, state)
    state = _without_derived(module, state, source, strict=strict)
    report = _match(source, layout, state, target)
    report.renamed = renamed
    if strict and not report.ok:
        raise WeightsError(
            f"{report}\nNothing was loaded. Pass strict=False to load the keys that fit, "
            "or build the network with the settings the file was trained with."
        )
    fitting = {k: state[k] for k in report.loaded}
    module.load_state_dict(fitting, strict=False)
    return report


def _with_implied(module: nn.Module, state: StateDict) -> StateDict:
    """The file's state with the keys its values imply (an actnorm with trained values
    is initialized): modules that have such keys say so by ``implied_state``."""
    out = dict(state)
    for prefix, sub in module.named_modules():
        fill = getattr(sub, "implied_state", None)
        if callable(fill):
            fill(out, f"{prefix}." if prefix else "")
    return out


def _without_derived(
    module: nn.Module, state: StateDict, source: str, *, strict: bool
) -> StateDict:
    """The file's state without the merged convs the network computes from branches.

    spandrel recomputes SPAN's eval_conv from the branches whenever it runs, so the
    stored copy never changes an output; a copy that disagrees with its branches still
    means the file is not what it claims (a tool that runs eval_conv alone would compute
    something else), which ``strict=True`` refuses.
    """
    try:
        state, disagree = reparam.drop_derived(module, state)
    except reparam.ReparamError as exc:
        raise WeightsError(f"{source}: {exc}") from None
    if disagree and strict:
        raise WeightsError(
            f"{source}: {len(disagree)} merged conv(s) disagree with the branches they "
            f"are computed from: {', '.join(disagree[:LIST_LIMIT])}. Loom loads the "
            "branches and recomputes them at export (as spandrel does when it runs); pass "
            "strict=False to load the file that way."
        )
    return state


#: torch.nn.utils.spectral_norm's keys (``conv1.weight_orig``, ``weight_u``,
#: ``weight_v``: Real-ESRGAN's U-Net discriminator, BasicSR) → the parametrization's.
_OLD_SPECTRAL_NORM = (("_orig", "original"), ("_u", "0._u"), ("_v", "0._v"))


def _from_old_spectral_norm(state: StateDict, target: Mapping[str, Any]) -> StateDict:
    """Rename old-style spectral-norm keys to the network's parametrization keys.

    Both store the raw weight and the two power-iteration vectors with the same
    meaning, so the network computes the same normalized weight in eval mode. A key is
    renamed only when the network has the new name and not the old one.
    """
    renamed: StateDict = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        for suffix, new in _OLD_SPECTRAL_NORM:
            if leaf.endswith(suffix):
                name = f"parametrizations.{leaf[: -len(suffix)]}.{new}"
                candidate = f"{head}.{name}" if head else name
                if candidate in target and key not in target:
                    key = candidate
                break
        renamed[key] = value
    return renamed


def _match(
    source: str, layout: SourceLayout, state: Mapping[str, Any], target: Mapping[str, torch.Tensor]
) -> LoadReport:
    report = LoadReport(source, layout)
    for key, want in target.items():
        if key not in state:
            report.missing[key] = tuple(want.shape)
            continue
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            got_shape = tuple(got.shape) if isinstance(got, torch.Tensor) else ()
            report.mismatched[key] = ShapePair(tuple(want.shape), got_shape)
            continue
        report.loaded.append(key)
    for key, value in state.items():
        if key not in target:
            report.unexpected[key] = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    return report


# --------------------------------------------------------------------- writing
def _check_layout(state: StateDict, layout: Layout) -> None:
    required = {"esrgan": RRDBNET_KEYS, "esrgan_old": RRDBNET_KEYS, "compact": COMPACT_KEYS}
    need = required.get(layout, ())
    absent = [k for k in need if k not in state]
    if absent:
        what = "an RRDBNet" if layout.startswith("esrgan") else "an SRVGGNetCompact"
        raise WeightsError(
            f"layout '{layout}' is for {what}, but the network has no "
            f"{', '.join(repr(k) for k in absent)}; export it with layout 'loom'"
        )
    if layout == "compact":
        other = [k for k in state if not re.fullmatch(r"body\.\d+\.(weight|bias)", k)]
        if other:
            raise WeightsError(
                f"layout 'compact' holds only body.N weights, but the network also has "
                f"{', '.join(other[:LIST_LIMIT])}; export it with layout 'loom'"
            )


def export(module: nn.Module, path: str | Path, layout: Layout = "loom") -> Path:
    """Write a network's weights as a plain dict of tensors in ``layout``'s key names.

    ``.safetensors`` or ``.pth``/``.pt`` by the file's suffix; no wrapping container,
    nothing but tensors, so chaiNNer/spandrel and the original tools load the file.
    """
    if layout not in get_args(Layout):
        raise WeightsError(f"unknown layout '{layout}'; choose one of {list(get_args(Layout))}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS + PICKLED:
        raise WeightsError(
            f"{path}: cannot tell the format from '{suffix}'; "
            f"use one of {', '.join(SAFETENSORS + PICKLED)}"
        )
    # Own, contiguous CPU copies: safetensors refuses shared or strided storage.
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()
    }
    _check_layout(state, layout)
    try:
        state.update(reparam.derived_weights(module, state))
    except reparam.ReparamError as exc:
        raise WeightsError(str(exc)) from None
    if layout == "esrgan_old":
        state = esrgan_to_old(state)
    elif layout in ("pan", "pan_trainner"):
        try:
            state = layouts_pan.to_layout(state, layout)
        except layouts_pan.PanLayoutError as exc:
            raise WeightsError(str(exc)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in SAFETENSORS:
        safetensors.torch.save_file(state, path, metadata={"format": "pt", "layout": layout})
    else:
        torch.save(state, path)
    return path
