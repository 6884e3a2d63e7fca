"""What an option file asks for, in Loom's terms, and the spec that says it.

The readers of each format (``trainner.py``, ``basicsr.py``) fill one :class:`Plan`;
the builders here turn it into the spec dict for its task: super-resolution with an
optional GAN (ESRGAN, SRGAN, PSNR models), pix2pix, CycleGAN or White-box
Cartoonization. The graphs are those of the shipped specs of the same families, so an
imported spec reads like ``specs/esrgan.yaml`` with the user's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["sr", "pix2pix", "cyclegan", "wbc"]


@dataclass
class Net:
    """A network: a library block (``use``) with its parameters, or inline ``nodes``."""

    lib: str
    use: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    in_nc: int = 3
    nodes: dict[str, Any] | None = None
    outputs: dict[str, str] | None = None
    pretrained: dict[str, Any] | None = None

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nodes is not None:
            out["inputs"] = {"x": self.in_nc}
            if self.params:
                out["params"] = self.params
            out["nodes"] = self.nodes
            out["outputs"] = self.outputs or {"out": list(self.nodes)[-1]}
        else:
            out["use"] = self.use
            out["inputs"] = {"x": self.in_nc}
            if self.params:
                out["params"] = self.params
        if self.pretrained:
            out["pretrained"] = self.pretrained
        return out


@dataclass
class Term:
    """One loss of the generator's step: its graph node, block, parameters and weight."""

    name: str
    block: str
    weight: float
    params: dict[str, Any] = field(default_factory=dict)
    pair: bool = True  # reads (output, target); False: the output alone (tv)


@dataclass
class Gan:
    type: str = "vanilla"
    weight: float = 1.0
    relativistic: bool = False
    gp_weight: float | None = None  # WGAN-GP's penalty in the D step


@dataclass
class Optim:
    type: str = "adam"
    lr: float = 1e-4
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    task: Task
    name: str
    scale: int = 1
    nets: dict[str, Net] = field(default_factory=dict)
    terms: list[Term] = field(default_factory=list)
    gan: Gan | None = None
    optim: dict[str, Optim] = field(default_factory=dict)
    scheduler: dict[str, Any] | None = None
    iterations: int = 0
    seed: int | None = None
    precision: str | None = None
    ema: float | None = None
    clip: dict[str, float] | None = None
    g_every: int = 1  # the generator steps once every N iterations (D update ratio)
    g_start: int = 0  # the generator waits N iterations (D warm-up)
    accumulate: int = 1
    data: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    logging: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    # pix2pix: the direction; CycleGAN: cycle and identity weights, pool; WBC: scales.
    reverse: bool = False
    cycle: Term | None = None
    identity: float = 0.0
    pool_size: int = 50
    scales: dict[str, float] = field(default_factory=dict)
    description: str = ""


def _step(optimizer: str, minimize: dict[str, Any], plan: Plan, *, g: bool) -> dict[str, Any]:
    step: dict[str, Any] = {"optimizer": optimizer, "minimize": minimize}
    if g and plan.g_every > 1:
        step["every"] = plan.g_every
    if g and plan.g_start > 0:
        step["start"] = plan.g_start
    if plan.accumulate > 1:
        step["accumulate"] = plan.accumulate
    return step


def _loss(term: Term, pred: str, target: str) -> dict[str, Any]:
    return {"loss": term.block, "in": [pred, target] if term.pair else pred, **term.params}


def _sr_graph(plan: Plan, inp: str, target: str, *, conditional: bool) -> tuple[Any, ...]:
    """The graph of one generator and an optional discriminator: SR and pix2pix."""
    graph: dict[str, Any] = {"fake": {"call": "G", "in": inp}}
    g_min: dict[str, Any] = {}
    for term in plan.terms:
        graph[term.name] = _loss(term, "fake", target)
        g_min[term.name] = term.weight
    d_min: dict[str, Any] = {}
    if plan.gan is not None:
        gan = plan.gan
        real, fake_d, fake = (
            ([inp, target], [inp, "fake_d"], [inp, "fake"])
            if conditional
            else (target, "fake_d", "fake")
        )
        kind = "wgan" if gan.gp_weight is not None else gan.type
        common = {"type": kind, **({"relativistic": True} if gan.relativistic else {})}
        graph["fake_d"] = {"op": "detach", "in": "fake"}
        graph["d_real"] = {"call": "D", "in": real}
        graph["d_fake"] = {"call": "D", "in": fake_d}
        graph["d_fake_g"] = {"call": "D", "in": fake}
        graph["d_loss"] = {
            "loss": "gan",
            "in": {"fake": "d_fake", "real": "d_real"},
            **common,
            "target": "discriminator",
        }
        g_in: Any = {"fake": "d_fake_g", "real": "d_real"} if gan.relativistic else "d_fake_g"
        graph["g_gan"] = {"loss": "gan", "in": g_in, **common, "target": "generator"}
        g_min["g_gan"] = gan.weight
        d_min["d_loss"] = 1.0
        if gan.gp_weight is not None:
            graph["interp"] = {"op": "interpolate", "in": {"real": target, "fake": "fake_d"}}
            graph["d_interp"] = {"call": "D", "in": "interp"}
            graph["gp"] = {"loss": "gradient_penalty", "in": ["d_interp", "interp"]}
            d_min["gp"] = gan.gp_weight
    steps = [_step("G", g_min, plan, g=True)]
    if d_min:
        steps.append(_step("D", d_min, plan, g=False))
    return graph, steps


def _cyclegan_graph(plan: Plan) -> tuple[Any, ...]:
    gan = plan.gan or Gan(type="lsgan")
    cycle = plan.cycle or Term("cycle", "l1", 10.0)
    kind = {"type": gan.type}
    graph: dict[str, Any] = {
        "fake_B": {"call": "G_A", "in": "data.A"},
        "rec_A": {"call": "G_B", "in": "fake_B"},
        "fake_A": {"call": "G_B", "in": "data.B"},
        "rec_B": {"call": "G_A", "in": "fake_A"},
    }
    g_min: dict[str, Any] = {"gan_A": gan.weight, "gan_B": gan.weight}
    graph["g_A"] = {"call": "D_A", "in": "fake_B"}
    graph["g_B"] = {"call": "D_B", "in": "fake_A"}
    graph["gan_A"] = {"loss": "gan", "in": "g_A", **kind, "target": "generator"}
    graph["gan_B"] = {"loss": "gan", "in": "g_B", **kind, "target": "generator"}
    graph["cycle_A"] = {"loss": cycle.block, "in": ["rec_A", "data.A"], **cycle.params}
    graph["cycle_B"] = {"loss": cycle.block, "in": ["rec_B", "data.B"], **cycle.params}
    g_min["cycle_A"] = g_min["cycle_B"] = cycle.weight
    if plan.identity > 0:
        graph["idt_A"] = {"call": "G_A", "in": "data.B"}
        graph["idt_B"] = {"call": "G_B", "in": "data.A"}
        graph["identity_A"] = {"loss": cycle.block, "in": ["idt_A", "data.B"], **cycle.params}
        graph["identity_B"] = {"loss": cycle.block, "in": ["idt_B", "data.A"], **cycle.params}
        g_min["identity_A"] = g_min["identity_B"] = cycle.weight * plan.identity
    graph["pool_B"] = {"op": "image_pool", "in": "fake_B", "size": plan.pool_size}
    graph["pool_A"] = {"op": "image_pool", "in": "fake_A", "size": plan.pool_size}
    graph["dA_real"] = {"call": "D_A", "in": "data.B"}
    graph["dA_fake"] = {"call": "D_A", "in": "pool_B"}
    graph["dB_real"] = {"call": "D_B", "in": "data.A"}
    graph["dB_fake"] = {"call": "D_B", "in": "pool_A"}
    for d, real, fake in (("d_A", "dA_real", "dA_fake"), ("d_B", "dB_real", "dB_fake")):
        graph[d] = {
            "loss": "gan",
            "in": {"fake": fake, "real": real},
            **kind,
            "target": "discriminator",
        }
    steps = [
        _step("G", g_min, plan, g=True),
        _step("D", {"d_A": 1.0, "d_B": 1.0}, plan, g=False),
    ]
    return graph, steps


def _wbc_graph(plan: Plan) -> tuple[Any, ...]:
    gan = plan.gan or Gan(type="lsgan", weight=0.02)
    s = plan.scales
    kind = {"type": gan.type}
    graph: dict[str, Any] = {
        "fake": {"call": "G", "in": "data.A"},
        "out_d": {"op": "detach", "in": "fake.out"},
    }
    gf = {"radius": 5, "eps": 0.05}  # the surface filter; WBC's 0.2 on [-1, 1] images
    graph["surf_out"] = {"op": "guided_filter", "in": "fake.out", **gf}
    graph["surf_out_d"] = {"op": "guided_filter", "in": "out_d", **gf}
    graph["surf_real"] = {"op": "guided_filter", "in": "data.B", **gf}
    graph["ds_fake_g"] = {"call": "D_surface", "in": "surf_out"}
    graph["ds_fake"] = {"call": "D_surface", "in": "surf_out_d"}
    graph["ds_real"] = {"call": "D_surface", "in": "surf_real"}
    graph["surface_g"] = {"loss": "gan", "in": "ds_fake_g", **kind, "target": "generator"}
    graph["surface_d"] = {
        "loss": "gan",
        "in": {"fake": "ds_fake", "real": "ds_real"},
        **kind,
        "target": "discriminator",
    }
    graph["tex"] = {"op": "color_shift", "in": ["fake.out", "data.B"]}
    graph["tex_d"] = {"op": "color_shift", "in": ["out_d", "data.B"]}
    graph["dt_fake_g"] = {"call": "D_texture", "in": "tex.x"}
    graph["dt_fake"] = {"call": "D_texture", "in": "tex_d.x"}
    graph["dt_real"] = {"call": "D_texture", "in": "tex_d.y"}
    graph["texture_g"] = {"loss": "gan", "in": "dt_fake_g", **kind, "target": "generator"}
    graph["texture_d"] = {
        "loss": "gan",
        "in": {"fake": "dt_fake", "real": "dt_real"},
        **kind,
        "target": "discriminator",
    }
    g_min: dict[str, Any] = {
        "surface_g": s.get("surface", 0.2) * gan.weight,
        "texture_g": s.get("texture", 1.0) * gan.weight,
    }
    for term in plan.terms:
        if term.name.startswith("structure"):
            graph["superpixels"] = {
                "op": "superpixel",
                "in": "fake.out",
                "method": "slic",
                "segments": 200,
                "coloring": "adaptive",
            }
            graph[term.name] = _loss(term, "fake.out", "superpixels")
        else:
            graph[term.name] = _loss(term, "fake.out", "data.A")
        g_min[term.name] = term.weight
    d_min = {"surface_d": s.get("surface", 0.2), "texture_d": s.get("texture", 1.0)}
    steps = [_step("D", d_min, plan, g=False), _step("G", g_min, plan, g=True)]
    return graph, steps


def build_spec(plan: Plan) -> dict[str, Any]:
    """The spec dict of ``plan``, sections in the order the shipped specs use."""
    spec: dict[str, Any] = {"spec": 1, "name": plan.name}
    if plan.description:
        spec["description"] = plan.description
    if plan.task == "sr":
        spec["scale"] = plan.scale
    libs = list(dict.fromkeys(n.lib for n in plan.nets.values()))
    spec["imports"] = libs
    spec["networks"] = {name: net.spec() for name, net in plan.nets.items()}
    if plan.task == "sr":
        graph, steps = _sr_graph(plan, "data.lr", "data.hr", conditional=False)
    elif plan.task == "pix2pix":
        inp, target = ("data.B", "data.A") if plan.reverse else ("data.A", "data.B")
        graph, steps = _sr_graph(plan, inp, target, conditional=True)
    elif plan.task == "cyclegan":
        graph, steps = _cyclegan_graph(plan)
    else:
        graph, steps = _wbc_graph(plan)
    spec["graph"] = graph
    spec["optimizers"] = _optimizers(plan, {s["optimizer"] for s in steps})
    train: dict[str, Any] = {"iterations": plan.iterations}
    if plan.seed is not None:
        train["seed"] = plan.seed
    if plan.precision:
        train["precision"] = plan.precision
    if plan.ema is not None:
        generators = [n for n in plan.nets if n.startswith("G")]
        train["ema"] = {"networks": generators, "decay": plan.ema}
    train["phases"] = [{"name": "main", "steps": steps}]
    spec["train"] = train
    if plan.data:
        spec["data"] = plan.data
    if plan.validation and "val" in plan.data:
        spec["validation"] = plan.validation
    if plan.logging:
        spec["logging"] = plan.logging
    if plan.checkpoints:
        spec["checkpoints"] = plan.checkpoints
    return spec


def _optimizers(plan: Plan, used: set[str]) -> dict[str, Any]:
    nets = {
        "G": [n for n in plan.nets if n.startswith("G")],
        "D": [n for n in plan.nets if n.startswith("D")],
    }
    out: dict[str, Any] = {}
    for name in ("G", "D"):
        if name not in used or not nets[name]:
            continue
        opt = plan.optim.get(name) or Optim()
        params: Any = nets[name][0] if len(nets[name]) == 1 else nets[name]
        entry: dict[str, Any] = {"type": opt.type, "params": params, "lr": opt.lr, **opt.options}
        if plan.clip and name == "G":  # the generator's gradients, as the peers clip
            entry["clip"] = plan.clip
        if plan.scheduler:
            entry["scheduler"] = plan.scheduler
        out[name] = entry
    return out
