"""What a command applies: one trained network, from a run folder or a spec and a file.

A run folder (``RUN/spec.resolved.yaml`` and ``RUN/models/``) gives the spec that ran
and the newest export of each network, which holds the EMA weights when the run kept
an EMA (exports are written from it). A spec gives the architecture, and a weights
file (``--weights``) what it learned. Everything a caller needs to run the network —
its one image input, the output port, the size multiple and scale — is gathered here
once, so ``infer`` and ``export`` never look at the spec.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from engine.load import Spec, check_spec
from engine.spec.diagnostics import did_you_mean

if TYPE_CHECKING:  # torch is imported when a model is opened, not with this module
    from torch import nn

RESOLVED = "spec.resolved.yaml"
MODELS = "models"
_EXPORT = re.compile(r"(?P<net>.+)_iter_(?P<iter>\d+)\.(?P<ext>safetensors|pth)")


class ApplyError(Exception):
    """The model, its weights or an argument cannot be used; the message says why."""


@dataclass
class Model:
    """A network ready to run, and what is known about how to run it."""

    spec: Spec
    net: str  # the network's name in the spec
    module: nn.Module  # the compiled network, in eval mode, weights loaded
    weights: Path | None  # None: the spec's initialization (export of untrained nets)
    input: str  # the network's image input port
    channels: int  # its channel count
    port: str  # the output port applied
    multiple: int  # input sizes must be a multiple of this (1: any)
    scale: Fraction  # output size / input size
    #: The window length T of a video network (input N×T×C×H×W, the centre frame
    #: predicted); None for a network of single images.
    frames: int | None = None


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / RESOLVED).is_file()


def newest_export(run_dir: Path, net: str) -> Path:
    """The newest ``models/<net>_iter_N`` export of a run (safetensors before .pth)."""
    found: list[tuple[int, int, Path]] = []
    folder = run_dir / MODELS
    if folder.is_dir():
        for path in folder.iterdir():
            m = _EXPORT.fullmatch(path.name)
            if m and m["net"] == net:
                found.append((int(m["iter"]), m["ext"] == "safetensors", path))
    if not found:
        raise ApplyError(
            f"{run_dir}: no exported weights of network '{net}' in {folder} (a run exports "
            "at every checkpoint); give a weights file with --weights"
        )
    return max(found)[2]


def load_spec(source: Path, overrides: list[str] | None = None) -> Spec:
    """The spec of a run folder or a spec file; ApplyError with every problem."""
    path = source / RESOLVED if source.is_dir() else source
    if source.is_dir() and not path.is_file():
        raise ApplyError(f"{source} is not a run folder: it has no {RESOLVED}")
    if not path.is_file():
        raise ApplyError(f"{source}: no such spec file or run folder")
    spec, diags = check_spec(path, overrides or [])
    if spec is None and source.is_dir():
        spec = _beside_original(path, overrides or [])
    if spec is None:
        lines = [str(d) for d in diags.sorted() if d.severity == "error"]
        raise ApplyError(
            f"{path}: the spec is not valid:\n" + "\n".join(lines) + "\nIf it imports "
            "libraries that lay beside the original spec, give that spec and --weights"
        )
    return spec


def _beside_original(resolved: Path, overrides: list[str]) -> Spec | None:
    """The run's exact spec, read from a temporary copy next to the spec it was
    resolved from (named in its first line), so that libraries imported from beside
    that spec are found; None when there is no such spec or it still does not load."""
    try:
        text = resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    first = text.split("\n", 1)[0]
    if not first.startswith("# resolved from "):
        return None
    folder = Path(first.removeprefix("# resolved from ").strip()).parent
    if not folder.is_dir():
        return None
    copy = folder / f".{resolved.parent.name}.resolved-{os.getpid()}.yaml"
    try:
        copy.write_text(text, encoding="utf-8")
        spec, _ = check_spec(copy, overrides)
    except OSError:
        return None
    finally:
        copy.unlink(missing_ok=True)
    return spec


def choose_network(spec: Spec, net: str | None) -> str:
    """``net``, or the one network, or the one validation runs; else ask for --net."""
    names = list(spec.networks)
    if net is not None:
        if net not in spec.networks:
            raise ApplyError(
                f"no network '{net}'{did_you_mean(net, names)}; networks: {', '.join(names)}"
            )
        return net
    if len(names) == 1:
        return names[0]
    validation = spec.settings.validation
    if validation is not None:
        node = spec.training.graph.nodes.get(validation.output.split(".")[0], {})
        if node.get("kind") == "call" and node.get("target") in spec.networks:
            return str(node["target"])
    raise ApplyError(f"the spec has several networks ({', '.join(names)}); choose one with --net")


def open_model(
    source: str | Path,
    *,
    weights: str | Path | None = None,
    net: str | None = None,
    port: str | None = None,
    overrides: list[str] | None = None,
    need_weights: bool = True,
    windows: bool = False,
) -> Model:
    """Build the chosen network of ``source`` and load its weights (strictly).

    ``windows`` accepts a network whose one input is a window of frames (N×T×C×H×W,
    video SR), which ``infer`` runs frame by frame; other callers refuse it."""
    from engine.compile.build import check_shapes, compile_network
    from engine.compile.sizes import size_rule
    from engine.compile.weights import WeightsError, load_weights
    from engine.spec.diagnostics import SpecError

    source = Path(source)
    spec = load_spec(source, overrides)
    name = choose_network(spec, net)
    if weights is not None:
        weights_path: Path | None = Path(weights)
    elif is_run_folder(source):
        weights_path = newest_export(source, name)
    elif need_weights:
        raise ApplyError(
            f"{source} is a spec: give the trained weights with --weights FILE, or a run "
            "folder instead of the spec"
        )
    else:
        weights_path = None
    try:
        shapes = check_shapes(spec, batch=1, probe="cpu")
    except SpecError as exc:
        raise ApplyError("\n".join(str(d) for d in exc.diagnostics.errors)) from None
    inference = shapes.networks[name]
    ranks = (4, 5) if windows else (4,)
    image_inputs = {k: s for k, s in inference.input_shapes.items() if len(s) in ranks}
    if len(inference.input_shapes) != 1 or len(image_inputs) != 1:
        kinds = ", ".join(f"{k} {tuple(s[1:])}" for k, s in inference.input_shapes.items())
        if windows:
            accepted = "one image input (C×H×W) or one window of frames (T×C×H×W)"
        else:
            accepted = "one image input (C×H×W); networks of frame windows run in infer only"
        raise ApplyError(
            f"network '{name}' takes {kinds}: this command runs networks with {accepted}; "
            "networks of several inputs are not supported yet"
        )
    (input_name, shape), *_ = image_inputs.items()
    frames = int(shape[1]) if len(shape) == 5 else None
    module = compile_network(inference)
    if weights_path is not None:
        try:
            load_weights(module, weights_path, strict=True)
        except WeightsError as exc:
            raise ApplyError(str(exc)) from None
    module.eval()
    ports = list(module.output_ports)
    if port is None:
        port = ports[0]
    elif port not in ports:
        raise ApplyError(
            f"network '{name}' has no output port '{port}'{did_you_mean(port, ports)}; its "
            f"outputs: {', '.join(ports)}"
        )
    out = inference.outputs[port]
    if len(out) != 4:
        raise ApplyError(f"output '{port}' of network '{name}' is not an image (shape {out})")
    rule = size_rule(spec.networks[name], inference)
    if rule.fixed is not None:
        raise ApplyError(
            f"network '{name}' takes only {rule.fixed}×{rule.fixed} inputs (its layers "
            "fix the size): it cannot be applied to images of other sizes"
        )
    return Model(
        spec=spec,
        net=name,
        module=module,
        weights=weights_path,
        input=input_name,
        channels=int(shape[-3]),
        port=port,
        multiple=rule.multiple or 1,
        scale=Fraction(out[-1], shape[-1]),
        frames=frames,
    )
