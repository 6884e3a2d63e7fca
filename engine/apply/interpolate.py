"""``interpolate``: a weighted blend of models trained from the same start.

Network interpolation (ESRGAN's, and the traiNNer guide's advice for WBC: train several
models from one pretrained model, then blend them) computes, per tensor,
``Σ wᵢ · Tᵢ`` with weights summing to 1 — for two models ``(1 − α)·A + α·B``. The sum
is taken in float64 and cast back, so α = 0 and α = 1 give A and B exactly. Integer
tensors (BatchNorm's ``num_batches_tracked``, step counters) are not blended: A's are
copied. Models whose keys or shapes differ are refused with the differences named:
blending them would be meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.apply.source import ApplyError, choose_network, is_run_folder, load_spec, newest_export
from engine.compile.weights import LIST_LIMIT, StateDict, WeightsError, read_state_dict

#: How far the weights' sum may be from 1.
SUM_TOLERANCE = 1e-6


@dataclass
class Blend:
    state: StateDict
    sources: list[Path]
    weights: list[float]


def resolve_file(source: str | Path, net: str | None = None) -> Path:
    """A weights file as given, or a run folder's newest export of ``net``."""
    path = Path(source)
    if is_run_folder(path):
        return newest_export(path, choose_network(load_spec(path), net))
    if not path.is_file():
        raise ApplyError(f"{source}: no such weights file or run folder")
    return path


def blend_weights(count: int, alpha: float | None, weights: list[float] | None) -> list[float]:
    """The weight of each of ``count`` models: from ``alpha`` (two models) or given."""
    if weights is not None:
        if alpha is not None:
            raise ApplyError("give --alpha (two models) or --weights (one per model), not both")
        if len(weights) != count:
            raise ApplyError(f"--weights gives {len(weights)} weights for {count} models")
        if abs(math.fsum(weights) - 1) > SUM_TOLERANCE:
            raise ApplyError(
                f"--weights sum to {math.fsum(weights):g}, not 1: a blend must keep the "
                "models' scale"
            )
        return list(weights)
    if count != 2:
        raise ApplyError(f"--alpha blends two models; for {count}, give --weights W1 … W{count}")
    if alpha is None:
        raise ApplyError("give --alpha (the weight of the second model, 0 … 1)")
    if not 0 <= alpha <= 1:
        raise ApplyError(f"--alpha {alpha:g} is outside 0 … 1 (0 gives A, 1 gives B)")
    return [1 - alpha, alpha]


def differences(states: list[StateDict], names: list[str]) -> list[str]:
    """What keeps ``states`` from being blended: keys one lacks, shapes or kinds that differ."""
    first, problems = states[0], []
    for state, name in zip(states[1:], names[1:], strict=True):
        only_a = [k for k in first if k not in state]
        only_b = [k for k in state if k not in first]
        if only_a:
            problems.append(f"in {names[0]}, not in {name}: " + _listed(only_a))
        if only_b:
            problems.append(f"in {name}, not in {names[0]}: " + _listed(only_b))
        shapes = [
            f"{k} {tuple(first[k].shape)} vs {tuple(state[k].shape)}"
            for k in first
            if k in state and first[k].shape != state[k].shape
        ]
        if shapes:
            problems.append(f"other shape ({names[0]} vs {name}): " + _listed(shapes))
        kinds = [
            f"{k} {first[k].dtype} vs {state[k].dtype}"
            for k in first
            if k in state
            and first[k].shape == state[k].shape
            and first[k].is_floating_point() != state[k].is_floating_point()
        ]
        if kinds:
            problems.append("float in one, integer in the other: " + _listed(kinds))
    return problems


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LIST_LIMIT])
    return shown + (f" … and {len(items) - LIST_LIMIT} more" if len(items) > LIST_LIMIT else "")


def interpolate(
    sources: list[str | Path],
    *,
    alpha: float | None = None,
    weights: list[float] | None = None,
    net: str | None = None,
) -> Blend:
    """Blend the weights of ``sources`` (files or run folders)."""
    if len(sources) < 2:
        raise ApplyError("interpolate needs at least two models")
    ws = blend_weights(len(sources), alpha, weights)
    paths = [resolve_file(s, net) for s in sources]
    try:
        states = [read_state_dict(p) for p in paths]
    except WeightsError as exc:
        raise ApplyError(str(exc)) from None
    bad = [
        f"{p}: {k} is not a tensor"
        for p, s in zip(paths, states, strict=True)
        for k, v in s.items()
        if not isinstance(v, torch.Tensor)
    ]
    problems = bad or differences(states, [str(p) for p in paths])
    if problems:
        raise ApplyError(
            "cannot interpolate models that differ:\n  " + "\n  ".join(problems) + "\nBlend "
            "models of the same architecture and settings, trained from the same start"
        )
    out: StateDict = {}
    for key, a in states[0].items():
        if not a.is_floating_point():
            out[key] = a.clone()
            continue
        total = torch.zeros(a.shape, dtype=torch.float64)
        for w, state in zip(ws, states, strict=True):
            total += w * state[key].to(torch.float64)
        out[key] = total.to(a.dtype)
    return Blend(out, paths, ws)


def save(blend: Blend, out: Path) -> Path:
    """Write the blend as ``.safetensors`` (with its recipe as metadata) or ``.pth``."""
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in blend.state.items()}
    if suffix == ".safetensors":
        import safetensors.torch

        recipe = " + ".join(
            f"{w:g}*{p.name}" for w, p in zip(blend.weights, blend.sources, strict=True)
        )
        safetensors.torch.save_file(
            state, out, metadata={"format": "pt", "loom.interpolated": recipe}
        )
    elif suffix in (".pth", ".pt"):
        torch.save(state, out)
    else:
        raise ApplyError(f"--out {out}: write .safetensors or .pth, not '{suffix or out.name}'")
    return out
