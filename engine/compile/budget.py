"""Will the networks fit? Memory checked before anything is allocated.

A conv with 10⁹ output channels is one line of YAML and 108 GB of weights. Two checks
stop such a spec with a located error, naming the node and the figure, instead of a
traceback from the allocator:

* :func:`check_declared` (``validate``, no torch): per network, a floor on its
  parameters counted from the sizes the spec writes — a conv's ``out`` × kernel² × its
  input's channels where those are known (a network input, or a layer's ``out``
  passed through channel-keeping blocks), a linear's ``out``, the ``shape`` of a
  ``parameter``, ``buffer`` or ``constant`` (tensors built with the network too). A
  network above :data:`MAX_PARAMETERS` (10¹⁰, or the ``LOOM_MAX_PARAMETERS``
  environment variable) is refused: training it needs about
  16 bytes a parameter (weights, gradients and Adam's two moments, fp32), 160 GB,
  more than any one accelerator holds, and every process of a run holds all of it.
  The floor never exceeds the real count, so nothing real is refused by mistake.
* :func:`check_memory` (``run``, after the meta shape pass, before the networks are
  built): ``inspect``'s figures at the configured batch — parameters and activations
  per node — give an estimate of the memory training takes, compared with what the
  device has free (CUDA's free memory; on the CPU the RAM the system calls available,
  plus free swap, within a container's limit).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.spec.diagnostics import Diagnostics, Loc

if TYPE_CHECKING:
    import torch

    from engine.graph.model import Network, Source

MAX_PARAMETERS = 10**10
ENV_MAX_PARAMETERS = "LOOM_MAX_PARAMETERS"
#: ``LOOM_MEMORY_CHECK=0`` starts a run the estimate refuses (it is an estimate: swap
#: the system does not report, memory another process is about to free).
ENV_MEMORY_CHECK = "LOOM_MEMORY_CHECK"
BYTES = 4  # fp32 weights, gradients and optimizer moments
#: Moments each optimizer keeps per parameter (Adam's two); others not listed keep one.
MOMENTS = {"adam": 2, "adamw": 2, "adamax": 2, "nadam": 2, "radam": 2, "sparseadam": 2}

#: Blocks whose output has their (first) input's channels: a conv's ``out`` reaches
#: the next conv through them, so its size is known without torch.
_KEEPS_CHANNELS = frozenset(
    [
        "abs",
        "act",
        "add",
        "adaptive_pool",
        "channel_attention",
        "clamp",
        "crop_to",
        "div",
        "drop_path",
        "dropout",
        "exp",
        "flow_warp",
        "identity",
        "log",
        "mean_shift",
        "multiply",
        "norm",
        "pad",
        "pad_to_multiple",
        "pool",
        "pow",
        "residual",
        "roll",
        "scale",
        "self_attention",
        "softmax",
        "sqrt",
        "sub",
        "upsample",
    ]
)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _size(value: Any) -> int:
    """Values in a ``shape``: the product of its positive integers (1 for anything else)."""
    if not isinstance(value, list):
        return 0
    return math.prod(max(_int(v) or 1, 1) for v in value)


def parameter_floor(network: Network) -> tuple[int, dict[str, int], dict[str, int]]:
    """(floor of the network's parameters, each leaf's floor, the input channels known
    for each leaf) from the sizes the spec writes."""
    import networkx as nx

    graph = network.graph
    # (an input declared with no number of channels is reported by the schema)
    channels = {k: v for k, v in network.inputs.items() if (_int(v) or 0) > 0}
    floors: dict[str, int] = {}
    reads: dict[str, int] = {}
    order = nx.topological_sort(graph) if nx.is_directed_acyclic_graph(graph) else graph.nodes
    for name in order:
        attrs = graph.nodes[name]
        if attrs.get("kind") != "block":
            continue
        params, block = attrs.get("params", {}), attrs.get("block")
        groups: list[list[Source]] = next(iter(attrs.get("ports", {}).values()), [[]])
        seen = sum(channels.get(s.node, 0) for s in groups[0]) if groups else 0
        known = max(seen, 1)  # unknown inputs count one channel: still a floor
        reads[name] = seen
        out = _int(params.get("out"))
        kernel = max(_int(params.get("kernel", 3)) or 1, 1)
        if block in ("conv", "deconv") and out is not None and out > 0:
            split = max(_int(params.get("groups", 1)) or 1, 1) if block == "conv" else 1
            floors[name] = out * max(known // split, 1) * kernel**2
        elif block == "linear" and out is not None and out > 0:
            floors[name] = out * known
        elif block in ("parameter", "buffer", "constant"):
            floors[name] = _size(params.get("shape"))
        if out is not None and block in ("conv", "deconv", "linear"):
            channels[name] = out
        elif block in _KEEPS_CHANNELS and seen:
            channels[name] = seen
        elif block == "pixel_shuffle" and seen and _int(params.get("scale")):
            channels[name] = seen // max(_int(params["scale"]) or 1, 1) ** 2
        elif block == "pixel_unshuffle" and seen and _int(params.get("scale")):
            channels[name] = seen * (_int(params["scale"]) or 1) ** 2
    return sum(floors.values()), floors, reads


def max_parameters() -> tuple[int | None, str | None]:
    """(the ceiling, or None when the environment's value is not a number; the problem)."""
    written = os.environ.get(ENV_MAX_PARAMETERS)
    if written is None:
        return MAX_PARAMETERS, None
    try:
        value = float(written)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1:
        return None, f"{ENV_MAX_PARAMETERS}={written!r} is not a positive number of parameters"
    return int(value), None


def check_declared(networks: dict[str, Network | None], diags: Diagnostics) -> None:
    """``validate``'s check: a network whose parameters, counted from the sizes the spec
    writes, pass the ceiling is refused at its largest node (see the module doc)."""
    ceiling, problem = max_parameters()
    if ceiling is None:
        diags.error(Loc(ENV_MAX_PARAMETERS), f"{problem} (e.g. 1e10)")
        return
    for name, network in networks.items():
        if network is None:
            continue
        total, floors, reads = parameter_floor(network)
        if total <= ceiling or not floors:
            continue
        node = max(floors, key=floors.__getitem__)
        attrs = network.graph.nodes[node]
        wide = f" (it reads {count(reads[node])} channels)" if reads[node] > 10**4 else ""
        diags.error(
            attrs.get("loc") or network.loc,
            f"network '{name}' has at least {count(total)} parameters "
            f"({size(total * BYTES)} of fp32 weights, about {size(total * 16)} to train with "
            f"Adam), more than the {count(ceiling)} a network may have "
            f"({ENV_MAX_PARAMETERS}); node '{node}' ({attrs.get('block')}) alone has at "
            f"least {count(floors[node])}{wide}: lower its sizes",
        )


# ------------------------------------------------------------------- at run time


@dataclass(frozen=True)
class Part:
    """One network's share of the estimate."""

    network: str
    params: int
    bytes_per_param: int
    activations: int  # bytes, at the configured batch, every call of the network
    biggest: tuple[str, int, Loc | None, str]  # node, parameters, place, block
    busiest: tuple[str, int, Loc | None, str]  # node, activation bytes, place, block

    @property
    def total(self) -> int:
        return self.params * self.bytes_per_param + self.activations


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes free for this process on ``device``, what that is in words); None when
    it cannot be told."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)} ({device})"
    if device.type != "cpu":
        return None
    found = _ram_available()
    if found is None:
        return None
    limit = _container_room()
    if limit is not None and limit < found:
        return limit, "left within this container's memory limit"
    return found, "of RAM available (with free swap) on this machine"


def _ram_available() -> int | None:
    """RAM the system can give without swapping others out, plus free swap: psutil
    where installed, else Linux's /proc/meminfo, else POSIX's available pages."""
    try:
        import psutil  # type: ignore[import-untyped]  # optional, without stubs
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available + psutil.swap_memory().free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        fields = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0]) * 1024
        if "MemAvailable" in fields:
            return fields["MemAvailable"] + fields.get("SwapFree", 0)
    if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def _container_room() -> int | None:
    """Bytes left under a cgroup's memory limit (v2, then v1); None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # v1 writes a huge number for "none"
            return max(int(limit) - usage, 0)
    return None


def processes_sharing(device: torch.device) -> int:
    """How many processes of this run share ``device``'s memory: every local process
    for the CPU (torchrun's LOCAL_WORLD_SIZE), one per GPU."""
    if device.type != "cpu":
        return 1
    try:
        return max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def count(n: float) -> str:
    """1234567 → '1.23M' (parameters)."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:g}"


def size(n: float) -> str:
    """Bytes in powers of 1000, as ``inspect`` prints them: '108.00 GB'."""
    for scale, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:g} B"
