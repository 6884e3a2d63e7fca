"""``run``: train a spec with one Accelerator, from start or from a checkpoint.

The pieces live in their own modules — the step program (program.py), optimizers and
schedules (optim.py), phases (phases.py), checkpoints (checkpoint.py), reporting
(report.py), validation (validate.py); this module wires them together in a fixed,
recorded order and owns the loop.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from blocks.registry import REGISTRY
from engine.compile.build import check_shapes
from engine.compile.network import materialize
from engine.compile.weights import export, load_weights
from engine.graph.training import gradient_networks
from engine.load import Spec, load_spec
from engine.spec.diagnostics import Diagnostics, SpecError
from engine.train import checkpoint as ckpt
from engine.train.optim import apply_lr, build_optimizer, build_schedule, named_parameters, select
from engine.train.phases import Phase, phase_at, phases_of
from engine.train.program import Program
from engine.train.report import Reporter
from engine.train.validate import Tiled, evaluate


class TrainingError(Exception):
    """Training stopped; the message says why and what was saved."""


@dataclass
class RunResult:
    run_dir: Path
    iteration: int
    interrupted: bool = False
    best: dict[str, float] = field(default_factory=dict)
    networks: dict[str, nn.Module] = field(default_factory=dict)  # trained (EMA when enabled)


@dataclass
class _Optimizer:
    name: str
    optimizer: torch.optim.Optimizer
    params: list[str]  # qualified names it owns
    networks: frozenset[str]
    schedule: Any
    clip: dict[str, float]
    micro: int = 0  # batches accumulated toward the next step


class _Stop:
    """Ctrl-C asks the loop to save and stop at the end of the iteration; twice aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Stop:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run(
    spec_or_path: Spec | str | Path,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    resume: str | None = None,
    stream: TextIO | None = None,
    live: bool | None = None,
    datasets: dict[str, Any] | None = None,
) -> RunResult:
    """Train a spec. ``datasets`` ({"train": ds, "val": ds}) replaces the data section (tests)."""
    spec = (
        spec_or_path
        if isinstance(spec_or_path, Spec)
        else load_spec(spec_or_path, tuple(overrides))
    )
    return _Run(
        spec, Path(out) if out else Path("runs") / spec.name, resume, stream, live, datasets
    ).go()


class _Run:
    def __init__(
        self,
        spec: Spec,
        run_dir: Path,
        resume: str | None,
        stream: TextIO | None,
        live: bool | None,
        datasets: dict[str, Any] | None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.spec = spec
        self.data = spec.data
        self.train_cfg = self.data["train"]
        self.total = int(self.train_cfg["iterations"])
        self.run_dir = run_dir
        precision = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[
            self.train_cfg.get("precision", "fp32")
        ]
        logging = self.data.get("logging") or {}
        tensorboard = bool(logging.get("tensorboard"))
        if tensorboard:
            try:
                import tensorboard as _  # noqa: F401
            except ImportError:
                raise TrainingError(
                    "logging.tensorboard is true but the tensorboard package is not installed: "
                    "pip install tensorboard (or set logging.tensorboard: false)"
                ) from None
        # One run per Accelerator: forget an earlier run's settings in this process
        # (precision, trackers); the process group, if any, is kept.
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),  # so torchrun on CPUs gives a gloo process group
            log_with="tensorboard" if tensorboard else None,
            project_dir=str(run_dir),
            mixed_precision=precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.main = self.accelerator.is_main_process
        self.seed = int(self.train_cfg.get("seed", 0))
        set_seed(self.seed)
        if self.train_cfg.get("tf32"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.reporter = Reporter(
            run_dir,
            spec.name,
            self.total,
            int(logging.get("every", 50)),
            main=self.main,
            stream=stream or sys.stdout,
            live=live,
        )
        if tensorboard:
            self.accelerator.init_trackers(spec.name)
            self.reporter.tracker = self.accelerator.log
        self.resume = resume
        self.datasets = datasets
        self.best: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up
    def _networks(self) -> None:
        shapes = check_shapes(self.spec, batch=1)
        self.shapes = shapes
        device = self.accelerator.device
        self.networks: dict[str, nn.Module] = {}
        problems = Diagnostics()
        for name, net in self.spec.networks.items():
            module = materialize(shapes.networks[name], device)
            section = self.data["networks"][name]
            pretrained = section.get("pretrained")
            if pretrained:
                self._pretrained(name, module, pretrained, problems)
            if not net.trainable:
                module.requires_grad_(False).eval()
            if self.train_cfg.get("channels_last"):
                module = module.to(memory_format=torch.channels_last)
            if self.train_cfg.get("compile"):
                module = torch.compile(module)
            self.networks[name] = module
        self._ops_and_losses(problems)
        if problems.errors:
            raise SpecError(problems)

    def _pretrained(
        self, name: str, module: nn.Module, pretrained: dict[str, Any], problems: Diagnostics
    ) -> None:
        strict = pretrained.get("strict", True)
        try:
            report = load_weights(module, self._path(pretrained["path"]), strict=strict)
        except Exception as exc:  # any failure to read or fit the file is about this key
            hint = (
                f"\n(to load only the keys that fit: networks.{name}.pretrained.strict: false)"
                if strict
                else ""
            )
            where = self.spec.doc.loc(("networks", name, "pretrained", "path"))
            problems.error(where, f"network {name}: pretrained weights not loaded: {exc}{hint}")
            return
        self.reporter.log(
            f"network {name}: pretrained weights from {pretrained['path']}: {report.summary()}"
        )

    def _ops_and_losses(self, problems: Diagnostics) -> None:
        """Build the graph's ops and losses. A block that fails to build (a weights file
        it cannot find) is reported at its parameter in the spec, with every other such
        failure; warnings are logged to train.log."""
        g = self.spec.training.graph
        self.ops: dict[str, nn.Module] = {}
        self.losses: dict[str, nn.Module] = {}
        device = self.accelerator.device
        for name, attrs in g.nodes(data=True):
            if attrs["kind"] not in ("op", "loss"):
                continue
            info = REGISTRY.get(attrs["target"])
            kwargs = dict(attrs["params"])
            if "in_ch" in info.signature.parameters:
                first = next(iter(attrs["ports"].values()))[0]
                kwargs["in_ch"] = sum(self.shapes.values[s][1] for s in first)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    module = info.factory(**kwargs).to(device)
                except (OSError, ValueError) as exc:
                    self._node_problem(name, attrs, exc, problems)
                    continue
            for warning in caught:
                self.reporter.log(
                    f"warning: graph node '{name}' ({attrs['target']}, {attrs['loc']}): "
                    f"{warning.message}"
                )
            (self.ops if attrs["kind"] == "op" else self.losses)[name] = module

    def _node_problem(
        self, name: str, attrs: dict[str, Any], exc: Exception, problems: Diagnostics
    ) -> None:
        param = getattr(exc, "param", None)
        path = ("graph", name, param) if param else ("graph", name)
        message = f"graph node '{name}' ({attrs['target']}): {exc}"
        written = self.spec.expressions.get(path, "")
        variable = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", written.strip())
        if variable:
            message += (
                f"\n(here {param} is {written}: set it from the command line with the "
                f"override params.{variable[1]}=VALUE)"
            )
        problems.error(self.spec.doc.loc(path) or attrs["loc"], message)

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() or path.exists() else self.spec.path.parent / path

    def _optimizers(self) -> None:
        params = named_parameters(self.networks)
        self.params = params
        self.plateau: dict[str, dict[str, Any]] = {}
        self.optimizers: dict[str, _Optimizer] = {}
        for name, section in (self.data.get("optimizers") or {}).items():
            optimizer, owned = build_optimizer(name, section, params)
            networks = frozenset(n.split(".", 1)[0] for n in owned)
            scheduler = section.get("scheduler") or {}
            if scheduler.get("type") == "plateau":
                self.plateau[name] = {
                    "factor": 1.0,
                    "best": None,
                    "bad": 0,
                    "metric": scheduler.get("metric", "psnr"),
                    "mode": scheduler.get("mode", "max"),
                    "patience": int(scheduler.get("patience", 2)),
                    "gamma": float(scheduler.get("gamma", 0.5)),
                }
            self.optimizers[name] = _Optimizer(
                name,
                optimizer,
                owned,
                networks,
                build_schedule(section.get("scheduler"), self.total),
                dict(section.get("clip") or {}),
            )

    def _data(self) -> None:
        from engine.data import make_loader

        section = self.data.get("data") or {}
        scale = int(self.data.get("scale", 1))
        if self.datasets is not None:
            train_ds, self.val_ds = self.datasets["train"], self.datasets.get("val")
        else:
            from engine.data import make_dataset

            train_ds = make_dataset(
                section["train"],
                scale=scale,
                train=True,
                seed=self.seed,
                spec_dir=self.spec.path.parent,
            )
            val = section.get("val")
            self.val_ds = (
                make_dataset(
                    val,
                    scale=scale,
                    train=False,
                    seed=self.seed,
                    multiple=self.val_multiple,
                    spec_dir=self.spec.path.parent,
                )
                if val
                else None
            )
        # Every process reads the same global batch (batch_size × processes) and keeps
        # its own slice: the run then sees exactly the samples a single process with the
        # global batch would, and every process resumes from the same data position.
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        train = section.get("train") or {}
        self.loader = make_loader(
            train_ds,
            batch_size=int(train.get("batch_size", 1)) * self.world,
            workers=int(train.get("workers", 0)),
            seed=self.seed,
            shuffle=True,
            drop_last=True,
            pin_memory=self.accelerator.device.type == "cuda",
        )

    @functools.cached_property
    def val_multiple(self) -> int:
        """The input size multiple of the network validation runs (probed on meta)."""
        from engine.compile.inspect import size_rule

        output = (self.data.get("validation") or {}).get("output")
        if not isinstance(output, str):
            return 1
        attrs = self.spec.training.graph.nodes.get(output.split(".")[0], {})
        if attrs.get("kind") != "call" or attrs["target"] not in self.shapes.networks:
            return 1
        target = attrs["target"]
        rule = size_rule(self.spec.networks[target], self.shapes.networks[target])
        return rule.multiple or 1

    def _prepare(self) -> None:
        """Networks then optimizers, in spec order: the order is recorded in train.log."""
        names = list(self.networks)
        opt_names = list(self.optimizers)
        prepared = self.accelerator.prepare(
            *[self.networks[n] for n in names], *[self.optimizers[n].optimizer for n in opt_names]
        )
        prepared = prepared if isinstance(prepared, tuple) else (prepared,)
        for n, module in zip(names, prepared[: len(names)], strict=True):
            self.networks[n] = module
        for n, opt in zip(opt_names, prepared[len(names) :], strict=True):
            self.optimizers[n].optimizer = opt
        self.reporter.log(
            "prepared with accelerate, in order: networks "
            + ", ".join(names)
            + "; optimizers "
            + ", ".join(opt_names)
            + f"; device {self.accelerator.device}, processes {self.accelerator.num_processes}, "
            f"precision {self.accelerator.mixed_precision}",
            console=False,
        )
        ema = self.train_cfg.get("ema") or {}
        self.ema_decay = float(ema.get("decay", 0.999))
        self.ema_start = int(ema.get("start", 0))
        self.ema = {
            n: copy.deepcopy(_unwrap(self.networks[n])).eval().requires_grad_(False)
            for n in ema.get("networks") or []
        }

    # ------------------------------------------------------------------- state
    def _state(self, iteration: int, rng: dict[str, Any], data_state: Any) -> dict[str, Any]:
        state = {
            "iteration": iteration,
            "networks": {n: _unwrap(m).state_dict() for n, m in self.networks.items()},
            "ema": {n: m.state_dict() for n, m in self.ema.items()},
            "optimizers": {n: o.optimizer.state_dict() for n, o in self.optimizers.items()},
            "micro": {n: o.micro for n, o in self.optimizers.items()},
            "ops": {n: m.state_dict() for n, m in self.ops.items()},
            "rng": rng,
            "data": data_state,
            "best": dict(self.best),
            "bad": self.bad,
            "plateau": {n: dict(p) for n, p in self.plateau.items()},
        }
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        return state

    def _restore(self, state: dict[str, Any]) -> int:
        for n, sd in state["networks"].items():
            _unwrap(self.networks[n]).load_state_dict(sd)
        for n, sd in state["ema"].items():
            if n in self.ema:
                self.ema[n].load_state_dict(sd)
        for n, sd in state["optimizers"].items():
            self.optimizers[n].optimizer.load_state_dict(sd)
            self.optimizers[n].micro = state["micro"][n]
        for n, sd in state["ops"].items():
            self.ops[n].load_state_dict(sd)
        if "scaler" in state and getattr(self.accelerator, "scaler", None) is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["data"])
        ckpt.set_rng_state(state["rng"])
        self.best = dict(state["best"])
        self.bad = int(state["bad"])
        for name, saved in state.get("plateau", {}).items():
            self.plateau[name].update(saved)
        return int(state["iteration"])

    def _save(self, iteration: int, rng: dict[str, Any], data_state: Any) -> Path | None:
        if not self.main:
            return None
        section = self.data.get("checkpoints") or {}
        meta = {
            "spec": self.spec.name,
            "hash": self.spec.hash,
            "shapes": ckpt.shapes_of({n: _unwrap(m) for n, m in self.networks.items()}),
        }
        path = ckpt.save(
            self.run_dir / "checkpoints",
            iteration,
            self._state(iteration, rng, data_state),
            meta,
            keep=int(section.get("keep", 3)),
        )
        for name, module in self.networks.items():
            weights = self.ema.get(name, _unwrap(module))
            export(weights, self.run_dir / "models" / f"{name}_iter_{iteration:08d}.safetensors")
            export(weights, self.run_dir / "models" / f"{name}_iter_{iteration:08d}.pth")
        self.reporter.checkpoint(path)
        return path

    # -------------------------------------------------------------------- loop
    def go(self) -> RunResult:
        try:
            return self._go()
        finally:
            self.reporter.close()
            self.accelerator.end_training()

    def _go(self) -> RunResult:
        self._write_spec()
        self._networks()
        self._optimizers()
        self._data()
        self._prepare()
        self.bad = 0
        self.phases = phases_of(self.train_cfg)
        reach = gradient_networks(self.spec.training, self.spec.networks)
        self.program = Program(
            self.spec.training,
            self.networks,
            self.ops,
            self.losses,
            reach,
            autocast=self.accelerator.autocast,
        )
        start = 0
        if self.resume:
            found = ckpt.find(self.resume, self.run_dir)
            if found is not None:
                start = self._restore(
                    ckpt.load(found, {n: _unwrap(m) for n, m in self.networks.items()})
                )
                self.reporter.log(f"resumed from {found} at iteration {start}")
            elif self.resume != "auto":
                raise TrainingError(f"--resume {self.resume}: nothing to resume")
            else:
                self.reporter.log(f"--resume auto: no checkpoint in {self.run_dir}; starting fresh")
        return self._loop(start)

    def _write_spec(self) -> None:
        if not self.main:
            return
        from ruamel.yaml import YAML

        self.run_dir.mkdir(parents=True, exist_ok=True)
        yaml = YAML()
        yaml.default_flow_style = None
        with (self.run_dir / "spec.resolved.yaml").open("w", encoding="utf-8") as handle:
            handle.write(f"# resolved from {self.spec.path}\n# sha256: {self.spec.hash}\n")
            yaml.dump(self.spec.data, handle)

    def _loop(self, start: int) -> RunResult:
        checkpoints = self.data.get("checkpoints") or {}
        save_every = int(checkpoints.get("every", 0)) or self.total
        validation = self.data.get("validation") or {}
        val_every = int(validation.get("every", 0))
        max_bad = int(self.train_cfg.get("max_bad_steps", 10))
        batches = self._batches()
        phase: Phase | None = None
        iteration = start
        with _Stop() as stop:
            while iteration < self.total:
                rng, data_state = ckpt.rng_state(), self.loader.state_dict()
                if stop.requested:
                    self._save(iteration, rng, data_state)
                    self.reporter.log(
                        f"interrupted: saved iteration {iteration}; continue with --resume auto"
                    )
                    return self._result(iteration, interrupted=True)
                current = phase_at(self.phases, iteration)
                if current is not phase:
                    phase = current
                    self._enter_phase(phase)
                batch = {
                    k: v[self.rank :: self.world].to(self.accelerator.device, non_blocking=True)
                    for k, v in next(batches).items()
                }
                losses = self._iteration(iteration, phase, batch)
                if losses is None:
                    self.bad += 1
                    if self.bad > max_bad:
                        path = self._save(iteration, rng, data_state)
                        raise TrainingError(
                            f"{self.bad} iterations in a row had a NaN or infinite loss; "
                            f"stopped at iteration {iteration}. The last good state is saved "
                            f"in {path}. Lower the learning rate, check the data, or use "
                            "precision: fp32."
                        )
                else:
                    self.bad = 0
                iteration += 1
                lrs = {n: o.optimizer.param_groups[0]["lr"] for n, o in self.optimizers.items()}
                self.reporter.progress(iteration, phase.name, losses or {}, lrs)
                if val_every and (iteration % val_every == 0 or iteration == self.total):
                    self._validate(iteration, phase.name, validation)
                if iteration % save_every == 0 or iteration == self.total:
                    self._save(iteration, ckpt.rng_state(), self.loader.state_dict())
        return self._result(iteration)

    def _result(self, iteration: int, interrupted: bool = False) -> RunResult:
        trained = {n: self.ema.get(n, _unwrap(m)) for n, m in self.networks.items()}
        return RunResult(self.run_dir, iteration, interrupted, dict(self.best), trained)

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield from self.loader

    def _enter_phase(self, phase: Phase) -> None:
        self.frozen = {
            id(self.params[n]) for glob in phase.frozen for n in select(glob, self.params)
        }
        # Frozen parameters stop recording gradients, so DDP sees them as unused.
        trainable = {n for n, net in self.spec.networks.items() if net.trainable}
        for name, param in self.params.items():
            if name.split(".", 1)[0] in trainable:
                param.requires_grad_(id(param) not in self.frozen)
        self.phase_lr = {}
        for name, lr in phase.lr.items():
            self.phase_lr[name] = lr / float(self.data["optimizers"][name]["lr"])
        self.plans_cache: dict[tuple[int, ...], Any] = {}
        self.reporter.log(
            f"phase {phase.name}: iterations {phase.start}..{phase.end}"
            + (f", frozen {', '.join(phase.frozen)}" if phase.frozen else "")
        )

    def _iteration(
        self, iteration: int, phase: Phase, batch: dict[str, torch.Tensor]
    ) -> dict[str, float] | None:
        for opt in self.optimizers.values():
            plateau = self.plateau.get(opt.name, {}).get("factor", 1.0)
            apply_lr(
                opt.optimizer, opt.schedule(iteration), self.phase_lr.get(opt.name, 1.0) * plateau
            )
        active = tuple(i for i, s in enumerate(phase.steps) if s.active(iteration, phase.start))
        if active not in self.plans_cache:
            # A loss weighted by a constant 0 is not computed at all (CycleGAN's identity).
            self.plans_cache[active] = [
                self.program.plan(
                    phase.steps[i].optimizer,
                    {k: w for k, w in phase.steps[i].weights.items() if w != 0},
                    self.optimizers[phase.steps[i].optimizer].networks,
                )
                for i in active
            ]
        plans = self.plans_cache[active]
        self.program.start_iteration(batch)
        logged: dict[str, float] = {}
        healthy = True
        for index, step_index in enumerate(active):
            step = phase.steps[step_index]
            opt = self.optimizers[step.optimizer]
            weights = step.weight_values(iteration, phase.start, self.total)
            values = self.program.run_step(index, plans)
            total = sum(weights[k] * v for k, v in values.items())
            for k, v in values.items():
                logged[k] = float(v.detach())
            if not isinstance(total, torch.Tensor) or not torch.isfinite(total.detach()):
                healthy = False
                opt.optimizer.zero_grad(set_to_none=True)
                opt.micro = 0
                continue
            inputs = [self.params[n] for n in opt.params if id(self.params[n]) not in self.frozen]
            if inputs:
                self.accelerator.backward(
                    total / step.accumulate,
                    inputs=inputs,
                    retain_graph=self.program.retain_graph(index, plans),
                )
            self.program.mark_backward(plans[index])
            opt.micro += 1
            if opt.micro >= step.accumulate:
                self._step(opt, iteration)
        return logged if healthy else None

    def _step(self, opt: _Optimizer, iteration: int) -> None:
        if opt.clip.get("norm"):
            self.accelerator.clip_grad_norm_([self.params[n] for n in opt.params], opt.clip["norm"])
        if opt.clip.get("value"):
            self.accelerator.clip_grad_value_(
                [self.params[n] for n in opt.params], opt.clip["value"]
            )
        opt.optimizer.step()
        opt.optimizer.zero_grad(set_to_none=True)
        opt.micro = 0
        self.program.bump(opt.networks)
        for name in opt.networks & set(self.ema):
            decay = 0.0 if iteration < self.ema_start else self.ema_decay
            with torch.no_grad():
                live = _unwrap(self.networks[name]).state_dict()
                for key, value in self.ema[name].state_dict().items():
                    if value.dtype.is_floating_point:
                        value.mul_(decay).add_(live[key].detach(), alpha=1 - decay)
                    else:
                        value.copy_(live[key])

    # -------------------------------------------------------------- validation
    def _validate(self, iteration: int, phase: str, section: dict[str, Any]) -> None:
        if self.val_ds is None or not self.main:
            return
        networks = {n: self.ema.get(n, _unwrap(m)) for n, m in self.networks.items()}
        tile = section.get("tile")
        if tile:
            multiple = self.val_multiple
            networks = {n: Tiled(m, int(tile), multiple=multiple) for n, m in networks.items()}
        for module in networks.values():
            module.eval()
        for op in self.ops.values():
            op.eval()
        program = Program(
            self.spec.training,
            networks,
            self.ops,
            self.losses,
            {},
            autocast=self.accelerator.autocast,
        )
        device = self.accelerator.device

        def run_graph(batch: dict[str, torch.Tensor], targets: list[str]) -> dict[str, Any]:
            program.start_iteration(batch)
            plan = program.plan("validation", dict.fromkeys(targets, 1.0), frozenset())
            plan.weights = {}
            program.run_step(0, [plan])
            return {n: e.outputs for n, e in program.cache.items()}

        def batches() -> Iterator[dict[str, torch.Tensor]]:
            for i in range(len(self.val_ds)):
                yield {k: v[None].to(device) for k, v in self.val_ds[i].items()}

        scale = int(self.data.get("scale", 1))
        crop = section.get("crop_border")
        values = evaluate(
            run_graph,
            batches(),
            output=section["output"],
            target=section.get("target"),
            source=section.get("input"),
            metrics=list(section.get("metrics") or ["psnr", "ssim"]),
            crop=scale if crop is None else int(crop),
            y_channel=bool(section.get("y_channel", False)),
            samples=int(section.get("samples", 2)),
            sample_dir=self.run_dir / "samples",
            iteration=iteration,
        )
        for module in self.networks.values():
            module.train()
        for op in self.ops.values():
            op.train()
        for key, value in values.items():
            if math.isfinite(value) and not key.endswith("_bicubic"):  # baselines do not improve
                better = max if key in ("psnr", "ssim") else min
                self.best[key] = better(self.best.get(key, value), value)
        self._plateau(values)
        self.reporter.validation(iteration, phase, values, self.best)

    def _plateau(self, values: dict[str, float]) -> None:
        """ReduceLROnPlateau: scale the lr down when the metric stops improving."""
        for name, p in self.plateau.items():
            value = values.get(p["metric"])
            if value is None:
                continue
            better = p["best"] is None or (
                value > p["best"] if p["mode"] == "max" else value < p["best"]
            )
            if better:
                p["best"], p["bad"] = value, 0
                continue
            p["bad"] += 1
            if p["bad"] > p["patience"]:
                p["factor"] *= p["gamma"]
                p["bad"] = 0
                self.reporter.log(
                    f"optimizer {name}: {p['metric']} has not improved; lr × {p['gamma']}"
                )


def _unwrap(module: nn.Module) -> nn.Module:
    """The network itself, inside DDP's and torch.compile's wrappers."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner
