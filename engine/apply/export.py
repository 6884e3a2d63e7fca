"""``export``: a trained network as ONNX, safetensors with metadata, or ``.pth``.

* **ONNX** through torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``,
  which needs onnxscript) at opset :data:`OPSET`: 18 is the exporter's own default and
  every onnxruntime since 1.14 runs it. Height and width are dynamic (multiples of the
  network's size multiple), the batch too. ``fp16`` exports a half-precision graph. The
  file is then run by onnxruntime on a random input of another size than the traced
  one and compared with PyTorch; the largest difference is reported.
* **safetensors**: the weights with metadata a loader can act on: the spec's name and
  sha256, the network, its output port, scale, input channels and size multiple.
* **.pth**: a plain dict of tensors in the canonical layout where one exists
  (ESRGAN's, Real-ESRGAN's compact, PAN's), which chaiNNer/spandrel load.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from engine.apply.source import ApplyError, Model
from engine.compile import layouts_pan
from engine.compile.weights import COMPACT_KEYS, RRDBNET_KEYS, Layout, WeightsError, export

Format = Literal["onnx", "safetensors", "pth"]
OPSET = 18
SUFFIX = {"onnx": ".onnx", "safetensors": ".safetensors", "pth": ".pth"}
#: Largest difference accepted between onnxruntime and PyTorch (fp32, fp16).
TOLERANCE = {False: 1e-4, True: 2e-2}


@dataclass
class ExportResult:
    path: Path
    layout: str | None = None
    max_abs_diff: float | None = None  # ONNX: onnxruntime vs PyTorch
    checked_size: tuple[int, int] | None = None


def default_path(model: Model, fmt: Format) -> Path:
    return Path(f"{model.spec.name}_{model.net}{SUFFIX[fmt]}")


def canonical_layout(state: dict[str, Any]) -> Layout:
    """The community layout a network's weights match (their names already are it)."""
    if all(k in state for k in RRDBNET_KEYS):
        return "esrgan"
    if all(k in state for k in COMPACT_KEYS) and all(
        re.fullmatch(r"body\.\d+\.(weight|bias)", k) for k in state
    ):
        return "compact"
    if layouts_pan.is_pan(state):
        return "pan"
    return "loom"


def metadata(model: Model, layout: str) -> dict[str, str]:
    return {
        "format": "pt",
        "layout": layout,
        "loom.spec": model.spec.name,
        "loom.spec_sha256": model.spec.hash,
        "loom.network": model.net,
        "loom.output_port": model.port,
        "loom.scale": str(model.scale),
        "loom.input_channels": str(model.channels),
        "loom.size_multiple": str(model.multiple),
    }


def export_model(
    model: Model,
    fmt: Format,
    out: Path | None = None,
    *,
    layout: Layout | None = None,
    fp16: bool = False,
    check: bool = True,
    log: Callable[[str], None] = print,
) -> ExportResult:
    path = out or default_path(model, fmt)
    module = model.module
    if fmt == "onnx":
        return export_onnx(model, path, fp16=fp16, check=check)
    if fp16:
        raise ApplyError("--fp16 is for ONNX; safetensors and .pth keep the trained precision")
    chosen = layout or canonical_layout(module.state_dict())
    try:
        if fmt == "pth":
            export(module, path.with_suffix(path.suffix or ".pth"), chosen)
            return ExportResult(path, chosen)
        _safetensors(module, path, chosen, metadata(model, chosen))
    except WeightsError as exc:
        raise ApplyError(str(exc)) from None
    return ExportResult(path, chosen)


def _safetensors(module: nn.Module, path: Path, layout: Layout, meta: dict[str, str]) -> None:
    """weights.export's tensors (derived convs included), saved with ``meta``."""
    import safetensors.torch

    with tempfile.TemporaryDirectory() as tmp:
        temp = Path(tmp) / "weights.safetensors"
        export(module, temp, layout)
        state = safetensors.torch.load_file(temp)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, path, metadata=meta)


class _Port(nn.Module):
    """The network as ONNX sees it: one positional image in, one port out."""

    def __init__(self, net: nn.Module, input: str, port: str) -> None:
        super().__init__()
        self.net, self.input, self.port = net, input, port

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(**{self.input: x})
        return y[self.port] if isinstance(y, dict) else y  # type: ignore[no-any-return]


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def export_onnx(model: Model, path: Path, *, fp16: bool, check: bool) -> ExportResult:
    """ONNX with dynamic batch, height and width; checked with onnxruntime."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ApplyError("ONNX export needs onnxscript: pip install onnxscript") from None
    module = model.module
    wrapper = _Port(module, model.input, model.port).eval()
    dtype = torch.float16 if fp16 else torch.float32
    m = model.multiple
    size = _round_up(32, m)
    example = torch.rand(1, model.channels, size, size, dtype=dtype)
    dim = torch.export.Dim
    if m > 1:
        h, w = m * dim("h_blocks", min=1, max=8192 // m), m * dim("w_blocks", min=1, max=8192 // m)
    else:
        h, w = dim("height", min=2, max=8192), dim("width", min=2, max=8192)
    shapes = {"x": {0: dim("batch", min=1, max=256), 2: h, 3: w}}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        wrapper.to(dtype)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["input"],
            output_names=[model.port],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many kinds; say which network failed
        raise ApplyError(f"ONNX export of network '{model.net}' failed: {_first(exc)}") from None
    finally:
        wrapper.float()
    result = ExportResult(path)
    if check:
        result.max_abs_diff, result.checked_size = verify_onnx(model, path, fp16=fp16)
        if result.max_abs_diff > TOLERANCE[fp16]:
            raise ApplyError(
                f"{path}: onnxruntime and PyTorch differ by {result.max_abs_diff:.3g} "
                f"(more than {TOLERANCE[fp16]:g}); the file was written but do not trust it"
            )
    return result


def verify_onnx(model: Model, path: Path, *, fp16: bool) -> tuple[float, tuple[int, int]]:
    """Largest |onnxruntime − PyTorch fp32| on a random input unlike the traced one."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]
    except ImportError:
        raise ApplyError(
            "checking the ONNX file needs onnxruntime (pip install onnxruntime), or pass --no-check"
        ) from None
    m = model.multiple
    h, w = _round_up(24, m) + m, _round_up(40, m)
    x = torch.rand(1, model.channels, h, w, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = x.half().numpy() if fp16 else x.numpy()
    [got] = session.run(None, {session.get_inputs()[0].name: feed})
    module = model.module
    with torch.inference_mode():
        want = _Port(module, model.input, model.port)(x)
    diff = (torch.from_numpy(got).float() - want.float()).abs().max()
    return float(diff), (h, w)


def _first(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
