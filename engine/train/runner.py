"""``run``: train a spec with one Accelerator, from start or from a checkpoint.

The pieces live in their own modules: set-up (setup.py), the step program
(program.py), schedules (schedules.py), EMA (ema.py), checkpoint state (state.py),
validation rounds (validator.py), reporting (report.py). This module opens the run,
prepares everything with Accelerate in a fixed, recorded order, and owns the loop.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from engine.compile.budget import processes_sharing
from engine.compile.build import check_shapes
from engine.compile.memory import check_memory
from engine.compile.network import unwrap
from engine.compile.sizes import size_rule
from engine.data.errors import worker_killed
from engine.graph.training import gradient_networks
from engine.load import Spec, load_spec
from engine.settings import PhaseSettings, TrainSettings
from engine.spec.diagnostics import Diagnostics, SpecError
from engine.train import checkpoint as ckpt
from engine.train import state, trackers
from engine.train.ema import Ema
from engine.train.optim import apply_lr, hold_delayed, named_parameters
from engine.train.program import Program, StepPlan
from engine.train.report import Reporter
from engine.train.resume import Decision, ResumePolicy, ResumeRefused, decide
from engine.train.runfolder import (
    RunFolderError,
    check_free_space,
    disk_error,
    is_disk_error,
    open_run,
)
from engine.train.setup import (
    OptimizerRun,
    build_datasets,
    build_graph_modules,
    build_networks,
    build_optimizers,
    parameter_selector,
)
from engine.train.validator import Validator

#: Skipped files listed on the console (train.log lists them all).
SKIPPED_SHOWN = 10


class TrainingError(Exception):
    """Training stopped; the message says why and what was saved."""


@dataclass
class RunResult:
    run_dir: Path
    iteration: int
    interrupted: bool = False
    best: dict[str, float] = field(default_factory=dict)
    networks: dict[str, nn.Module] = field(default_factory=dict)  # trained (EMA when enabled)


class _Stop:
    """A stop request: save at the end of the iteration and exit 0.

    Ctrl-C (SIGINT), SIGTERM (what torchrun sends every rank after a Ctrl-C, and what
    schedulers send before killing a job) and SIGUSR1 (SLURM's ``--signal`` pre-kill
    warning) all ask for it; a second Ctrl-C aborts at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = self.requested or name

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _main_process() -> bool:
    """Rank 0 of a launch (torchrun and accelerate set RANK), before any process group."""
    return os.environ.get("RANK", "0") == "0"


def run(
    spec_or_path: Spec | str | Path,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    resume: str | None = None,
    resume_changes: Sequence[str] = (),
    resume_from_other: bool = False,
    overwrite: bool = False,
    keep_models: int | None = None,
    stream: TextIO | None = None,
    live: bool | None = None,
    datasets: dict[str, Any] | None = None,
) -> RunResult:
    """Train a spec. ``datasets`` ({"train": ds, "val": ds}) replaces the data section (tests).

    The run folder is locked for this run (one writer at a time); a folder that holds
    an earlier run is refused unless ``resume`` continues it or ``overwrite`` moves it
    aside. ``resume_changes`` and ``resume_from_other`` say which differences from the
    checkpoint's spec the resume may take (engine/train/resume.py).
    """
    spec = (
        spec_or_path
        if isinstance(spec_or_path, Spec)
        else load_spec(spec_or_path, tuple(overrides))
    )
    run_dir = Path(out) if out else Path("runs") / spec.name
    policy = ResumePolicy.parse(resume_changes, resume_from_other)
    with open_run(run_dir, resume=resume, overwrite=overwrite, main=_main_process()) as folder:
        trainer = prepare(spec, run_dir, stream=stream, live=live, datasets=datasets)
        trainer.keep_models = keep_models
        try:
            for note in folder.notes:
                trainer.reporter.log(note)
            return trainer.train(resume, policy)
        except RuntimeError as exc:  # torch reports a dead worker wherever the loop is
            killed = worker_killed(exc)
            if killed is None:
                raise
            raise killed from exc
        finally:
            trainer.close()


def _accelerator(train: TrainSettings, run_dir: Path, tracked: Sequence[str]) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed

    # One run per Accelerator: forget an earlier run's settings in this process
    # (precision, trackers); the process group, if any, is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # so torchrun on CPUs gives a gloo process group
        log_with=list(tracked) or None,
        project_config=ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(trackers.logging_dir(run_dir))
        ),
        mixed_precision={"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[train.precision],
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(train.seed)
    if train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator


def prepare(
    spec: Spec,
    run_dir: Path,
    *,
    stream: TextIO | None = None,
    live: bool | None = None,
    datasets: dict[str, Any] | None = None,
    data: bool = True,
) -> Trainer:
    """A run set up to its first iteration (benchmarks call this and then step it)."""
    train = spec.settings.train
    if train is None:
        raise TrainingError(f"{spec.path}: the spec has no 'train:' section; nothing to run")
    logging = spec.settings.logging
    accelerator = _accelerator(train, run_dir, logging.trackers)
    main = accelerator.is_main_process
    try:
        reporter = Reporter(
            run_dir, spec.name, train.iterations, logging.every, main=main,
            stream=stream or sys.stdout, live=live,
        )  # fmt: skip
    except OSError as exc:
        accelerator.end_training()
        if not is_disk_error(exc):
            raise
        raise RunFolderError(disk_error(exc, run_dir, "Nothing was written.")) from None
    try:
        reporter.tracker = trackers.start(accelerator, run_dir, spec.name, spec.data)
    except Exception as exc:  # a tracker's own failure: no login, no server, a bad folder
        reporter.close()
        accelerator.end_training()
        raise TrainingError(
            f"logging.trackers: {', '.join(logging.trackers)} could not start: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    try:
        return Trainer(spec, run_dir, accelerator, reporter, datasets, data=data)
    except BaseException:
        reporter.close()
        accelerator.end_training()
        raise


class Trainer:
    """A prepared run: its parts, the phase schedule, and the loop."""

    def __init__(
        self,
        spec: Spec,
        run_dir: Path,
        accelerator: Any,
        reporter: Reporter,
        datasets: dict[str, Any] | None,
        *,
        data: bool = True,
    ) -> None:
        assert spec.settings.train is not None
        self.spec = spec
        self.train_settings: TrainSettings = spec.settings.train
        self.total = self.train_settings.iterations
        self.run_dir = run_dir
        self.accelerator = accelerator
        self.reporter = reporter
        self.main = bool(accelerator.is_main_process)
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        device = accelerator.device
        self.shapes = check_shapes(spec, batch=1)
        check_memory(spec, device, processes_sharing(device))  # before anything is built
        problems = Diagnostics()
        networks = build_networks(spec, self.shapes, device, self.reporter.log, problems)
        self.ops, self.losses = build_graph_modules(
            spec, self.shapes, device, self.reporter.log, problems
        )
        _check_lpips(spec, problems)
        if problems.errors:
            raise SpecError(problems)
        self.params = named_parameters(networks)
        self.select = parameter_selector(spec, self.params)
        optimizers = build_optimizers(spec, self.params, self.select)
        self._val_multiple: int | None = None
        train_ds, val_ds = (None, None)
        if datasets is not None:
            train_ds, val_ds = datasets["train"], datasets.get("val")
        elif data:
            with warnings.catch_warnings(record=True) as caught:  # a folder's symlink loop
                warnings.simplefilter("always")
                train_ds, val_ds = build_datasets(
                    spec, seed=self.train_settings.seed, val_multiple=self.val_multiple
                )
            for warning in caught:
                self.reporter.log(f"warning: {warning.message}")
        _log_skipped(self.reporter, {"data.train": train_ds, "data.val": val_ds})
        self.loader = None if train_ds is None else self._loader(train_ds)
        self.networks, optimizers = self._prepare(networks, optimizers)
        self.optimizers = optimizers
        self.ema = Ema(self.train_settings.ema, self.networks)
        self.validator = None
        if spec.settings.validation is not None and val_ds is not None:
            self.validator = Validator(
                spec, spec.settings.validation, val_ds, run_dir / "samples",
                multiple=self.val_multiple, autocast=accelerator.autocast,
                warn=lambda text: self.reporter.log(f"warning: {text}"),
            )  # fmt: skip
        self.program = Program(
            spec.training,
            self.networks,
            self.ops,
            self.losses,
            gradient_networks(spec.training, spec.networks),
            autocast=accelerator.autocast,
        )
        self.bad = 0
        self.frozen: set[int] = set()
        self.phase_lr: dict[str, float] = {}
        self.plans_cache: dict[tuple[int, ...], list[StepPlan]] = {}
        self.keep_models: int | None = None  # models/ keeps as many saves as checkpoints/
        self.last_save_bytes = 0

    # ------------------------------------------------------------------ set-up
    def _loader(self, dataset: Any) -> Any:
        from engine.data import make_loader

        # Every process reads the same global batch (batch_size × processes) and keeps
        # its own slice: the run then sees exactly the samples a single process with the
        # global batch would, and every process resumes from the same data position.
        options = self.spec.settings.data.train
        return make_loader(
            dataset,
            batch_size=(options.batch_size if options is not None else 1) * self.world,
            workers=options.workers if options is not None else 0,
            seed=self.train_settings.seed,
            shuffle=True,
            drop_last=True,
            pin_memory=self.accelerator.device.type == "cuda",
            on_skip=lambda reason: self.reporter.log(
                f"data.train: skipped a bad file while training (on_bad_image: skip): {reason}"
            ),
        )

    def val_multiple(self) -> int:
        """The input size multiple of the network validation runs (probed once, lazily)."""
        if self._val_multiple is None:
            self._val_multiple = 1
            validation = self.spec.settings.validation
            if validation is not None:
                attrs = self.spec.training.graph.nodes.get(validation.output.split(".")[0], {})
                target = attrs.get("target")
                if attrs.get("kind") == "call" and target in self.shapes.networks:
                    rule = size_rule(self.spec.networks[target], self.shapes.networks[target])
                    # The multiple of the input validation feeds (SRFlow's LR, not the HR
                    # its flow transforms).
                    fed = [
                        port
                        for port, groups in attrs.get("ports", {}).items()
                        if [[s.node for s in group] for group in groups] == [[validation.input]]
                    ]
                    self._val_multiple = (rule.multiple_of(fed[0]) if fed else rule.multiple) or 1
        return self._val_multiple

    def _prepare(
        self, networks: dict[str, nn.Module], optimizers: dict[str, OptimizerRun]
    ) -> tuple[dict[str, nn.Module], dict[str, OptimizerRun]]:
        """Networks then optimizers, in spec order: the order is recorded in train.log."""
        names, opt_names = list(networks), list(optimizers)
        prepared = self.accelerator.prepare(
            *[networks[n] for n in names], *[optimizers[n].optimizer for n in opt_names]
        )
        prepared = prepared if isinstance(prepared, tuple) else (prepared,)
        networks = dict(zip(names, prepared[: len(names)], strict=True))
        for n, opt in zip(opt_names, prepared[len(names) :], strict=True):
            optimizers[n].optimizer = opt
        self.reporter.log(
            "prepared with accelerate, in order: networks "
            + ", ".join(names)
            + "; optimizers "
            + ", ".join(opt_names)
            + f"; device {self.accelerator.device}, processes {self.accelerator.num_processes}, "
            f"precision {self.accelerator.mixed_precision}",
            console=False,
        )
        return networks, optimizers

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()
        self.reporter.close()
        self.accelerator.end_training()

    # ------------------------------------------------------------------- state
    def _parts(self) -> state.Parts:
        return state.Parts(
            self.networks,
            self.ema,
            self.optimizers,
            self.ops,
            self.loader,
            getattr(self.accelerator, "scaler", None),
        )

    def _counters(self, iteration: int) -> state.Counters:
        best = self.validator.best if self.validator is not None else {}
        return state.Counters(iteration, dict(best), self.bad)

    def _resume(self, resume: str | None, policy: ResumePolicy) -> int:
        if not resume:
            self._write_spec()
            return 0
        found = ckpt.find(resume, self.run_dir, note=self.reporter.log)
        if found is None:
            if resume != "auto":
                raise TrainingError(f"--resume {resume}: nothing to resume")
            self.reporter.log(f"--resume auto: no checkpoint in {self.run_dir}; starting fresh")
            self._write_spec()
            return 0
        meta = ckpt.read_meta(found)
        parts = self._parts()
        ckpt.check_shapes(found, meta, parts.plain_networks())  # never takeable: first
        try:
            decision = decide(
                checkpoint=str(found),
                old=meta.get("resolved"),
                old_name=str(meta.get("spec", self.spec.name)),
                old_hash=str(meta.get("hash", "")),
                new=self.spec.data,
                new_name=self.spec.name,
                new_hash=self.spec.hash,
                iteration=int(meta.get("iteration", 0)),
                iterations=self.total,
                policy=policy,
            )
        except ResumeRefused as exc:
            raise ckpt.CheckpointError(str(exc)) from None
        loaded = ckpt.load(found, parts.plain_networks())
        try:
            counters = state.restore(parts, loaded)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ckpt.CheckpointError(
                f"{found}: its state does not fit this run ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); resume with the spec "
                "that wrote it, or start a new run"
            ) from None
        self.bad = counters.bad
        if self.validator is not None:
            self.validator.best = dict(counters.best)
        self.last_save_bytes = ckpt.bytes_of(found)
        self.reporter.log(f"resumed from {found} at iteration {counters.iteration}")
        for line in decision.lines():
            self.reporter.log(line)
        if decision.changed or not (self.run_dir / "spec.resolved.yaml").is_file():
            self._write_spec(counters.iteration, found, decision)
        return counters.iteration

    def _write_spec(
        self, iteration: int = 0, found: Path | None = None, decision: Decision | None = None
    ) -> None:
        """``spec.resolved.yaml`` for a fresh run; a resume that takes changes writes
        ``spec.resolved.iter_N.yaml`` beside it, never over it."""
        if not self.main:
            return
        target = self.run_dir / "spec.resolved.yaml"
        notes: list[str] = []
        if found is not None and target.is_file():
            target = self.run_dir / f"spec.resolved.iter_{iteration:08d}.yaml"
            n = 2
            while target.exists():
                target = self.run_dir / f"spec.resolved.iter_{iteration:08d}-{n}.yaml"
                n += 1
            notes = [f"resumed from {found} at iteration {iteration}, taking:"]
            notes += [f"  {line}" for line in (decision.lines() if decision else [])]
        try:
            _write_spec(self.spec, target, notes)
        except OSError as exc:
            if not is_disk_error(exc):
                raise
            raise RunFolderError(disk_error(exc, self.run_dir, "Nothing was trained.")) from None
        if found is not None:
            self.reporter.log(f"the spec this run continues with is in {target}")

    def _kept(self) -> str:
        """What a failed save leaves: the newest complete checkpoint, named."""
        folder = self.run_dir / "checkpoints"
        latest = ckpt.checkpoints(folder)
        if not latest:
            return "No checkpoint of this run was kept."
        return (
            f"The last complete checkpoint, {latest[0]}, is kept; free space (or make the "
            "folder writable) and continue with --resume auto."
        )

    def _save(self, iteration: int, rng: dict[str, Any], data_state: Any) -> Path | None:
        if not self.main:
            return None
        parts, counters = self._parts(), self._counters(iteration)
        try:
            check_free_space(
                self.run_dir,
                self.last_save_bytes,
                f"Stopped at iteration {iteration} without saving it. {self._kept()}",
            )
            path = state.save(
                self.spec, self.run_dir, parts, counters, rng, data_state,
                keep_models=self.keep_models,
            )  # fmt: skip
        except OSError as exc:
            if not is_disk_error(exc):
                raise
            message = disk_error(
                exc, self.run_dir, f"Iteration {iteration} was not saved. {self._kept()}"
            )
            self.reporter.log(message, console=False)
            raise RunFolderError(message) from None
        self.last_save_bytes = ckpt.bytes_of(path) + sum(
            f["bytes"] for f in ckpt.read_meta(path).get("exports", {}).values()
        )
        self.reporter.checkpoint(path)
        return path

    def _agree(self, requested: bool) -> bool:
        """Whether any process was asked to stop: every rank stops at the same iteration,
        so one checkpoint is written, whichever rank the signal reached first."""
        if self.world == 1:
            return requested
        import torch.distributed as dist

        flag = torch.tensor([int(requested)], device=self.accelerator.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # -------------------------------------------------------------------- loop
    def train(self, resume: str | None = None, policy: ResumePolicy | None = None) -> RunResult:
        if self.loader is None:
            raise TrainingError("the run was prepared without data")
        start = self._resume(resume, policy or ResumePolicy())
        checkpoints = self.spec.settings.checkpoints
        save_every = checkpoints.every or self.total
        validation = self.spec.settings.validation
        val_every = validation.every if validation is not None else 0
        batches = _endless(self.loader)
        phase: PhaseSettings | None = None
        iteration = start
        with _Stop() as stop:
            while iteration < self.total:
                rng, data_state = ckpt.rng_state(), self.loader.state_dict()
                if self._agree(stop.requested is not None):
                    self._save(iteration, rng, data_state)
                    why = stop.requested or "another process was asked to stop"
                    self.reporter.log(
                        f"interrupted: saved iteration {iteration} ({why}); continue with "
                        "--resume auto"
                    )
                    return self._result(iteration, interrupted=True)
                current = self.train_settings.phase_at(iteration)
                if current is not phase:
                    phase = current
                    self.enter_phase(phase)
                batch = {
                    k: v[self.rank :: self.world].to(self.accelerator.device, non_blocking=True)
                    for k, v in next(batches).items()
                }
                losses = self.iteration(iteration, phase, batch)
                self._count_bad(losses is None, iteration, rng, data_state)
                iteration += 1
                lrs = {n: o.optimizer.param_groups[0]["lr"] for n, o in self.optimizers.items()}
                self.reporter.progress(iteration, phase.name, losses or {}, lrs)
                if val_every and (iteration % val_every == 0 or iteration == self.total):
                    self._validate(iteration, phase.name)
                if iteration % save_every == 0 or iteration == self.total:
                    self._save(iteration, ckpt.rng_state(), self.loader.state_dict())
        return self._result(iteration)

    def _count_bad(self, bad: bool, iteration: int, rng: dict[str, Any], data: Any) -> None:
        if not bad:
            self.bad = 0
            return
        self.bad += 1
        if self.bad > self.train_settings.max_bad_steps:
            path = self._save(iteration, rng, data)
            raise TrainingError(
                f"{self.bad} iterations in a row had a NaN or infinite loss; "
                f"stopped at iteration {iteration}. The last good state is saved "
                f"in {path}. Lower the learning rate, check the data, or use "
                "precision: fp32."
            )

    def _result(self, iteration: int, interrupted: bool = False) -> RunResult:
        for opt in self.optimizers.values():  # the trained networks hold no gradients
            opt.optimizer.zero_grad(set_to_none=True)
        trained = {n: self.ema.get(n, unwrap(m)) for n, m in self.networks.items()}
        best = dict(self.validator.best) if self.validator is not None else {}
        return RunResult(self.run_dir, iteration, interrupted, best, trained)

    def enter_phase(self, phase: PhaseSettings) -> None:
        self.frozen = {id(self.params[n]) for sel in phase.frozen for n in self.select(sel)}
        # Frozen parameters stop recording gradients, so DDP sees them as unused.
        trainable = {n for n, net in self.spec.networks.items() if net.trainable}
        for name, param in self.params.items():
            if name.split(".", 1)[0] in trainable:
                param.requires_grad_(id(param) not in self.frozen)
        self.phase_lr = {name: lr / self.spec.settings.optimizers[name].lr for name, lr in phase.lr}
        self.plans_cache = {}
        self.reporter.log(
            f"phase {phase.name}: iterations {phase.start}..{phase.end}"
            + (f", frozen {', '.join(phase.frozen)}" if phase.frozen else "")
        )

    def _plans(self, phase: PhaseSettings, active: tuple[int, ...]) -> list[StepPlan]:
        if active not in self.plans_cache:
            # A loss weighted by a constant 0 is not computed at all (CycleGAN's identity).
            self.plans_cache[active] = [
                self.program.plan(
                    phase.steps[i].optimizer,
                    {k: w for k, w in phase.steps[i].weights if w != 0},
                    self.optimizers[phase.steps[i].optimizer].networks,
                )
                for i in active
            ]
        return self.plans_cache[active]

    def iteration(
        self, iteration: int, phase: PhaseSettings, batch: dict[str, torch.Tensor]
    ) -> dict[str, float] | None:
        """One iteration of ``phase``: its active steps in order; None when a loss was bad."""
        for opt in self.optimizers.values():
            apply_lr(
                opt.optimizer,
                opt.schedule(iteration),
                self.phase_lr.get(opt.name, 1.0),
                iteration=iteration,
            )
        active = tuple(i for i, s in enumerate(phase.steps) if s.active(iteration, phase.start))
        plans = self._plans(phase, active)
        self.program.start_iteration(batch)
        logged: dict[str, float] = {}
        healthy = True
        for index, step_index in enumerate(active):
            step = phase.steps[step_index]
            opt = self.optimizers[step.optimizer]
            weights = step.weight_values(iteration, phase.start)
            values = self.program.run_step(index, plans)
            total = sum(weights[k] * v for k, v in values.items())
            finite = False
            if isinstance(total, torch.Tensor):  # one read-back for the losses and their sum
                scalars = [v.detach().reshape(()) for v in (*values.values(), total)]
                *read, whole = torch.stack(scalars).tolist()
                logged.update(zip(values, read, strict=True))
                finite = math.isfinite(whole)
            if not finite:
                healthy = False
                opt.optimizer.zero_grad(set_to_none=True)
                opt.micro = 0
                continue
            if opt.micro == 0:
                # The last step's gradients are dropped here, as its next accumulation
                # starts, not right after that step: on the CPU, freeing them at the end
                # of the iteration let the allocator return the whole emptied heap to the
                # system and fault it back in at the next one. The memory check counts
                # gradients as held throughout.
                opt.optimizer.zero_grad(set_to_none=True)
            inputs = [self.params[n] for n in opt.params if id(self.params[n]) not in self.frozen]
            if inputs:
                self.accelerator.backward(
                    total / step.accumulate if step.accumulate > 1 else total,
                    inputs=inputs,
                    retain_graph=self.program.retain_graph(index, plans),
                )
            self.program.mark_backward(plans[index])
            opt.micro += 1
            if opt.micro >= step.accumulate:
                self._step(opt, iteration)
        return logged if healthy else None

    def _step(self, opt: OptimizerRun, iteration: int) -> None:
        hold_delayed(opt.optimizer, iteration)
        if opt.clip_norm:
            self.accelerator.clip_grad_norm_([self.params[n] for n in opt.params], opt.clip_norm)
        if opt.clip_value:
            self.accelerator.clip_grad_value_([self.params[n] for n in opt.params], opt.clip_value)
        opt.optimizer.step()
        opt.micro = 0  # the gradients go when the next accumulation starts (iteration)
        self.program.bump(opt.networks)
        self.ema.update(opt.networks, self.networks, iteration)

    def _validate(self, iteration: int, phase: str) -> None:
        if self.validator is None or not self.main:
            return
        networks = {n: self.ema.get(n, unwrap(m)) for n, m in self.networks.items()}
        values = self.validator(iteration, networks, self.ops, self.losses, self.accelerator.device)
        for name, opt in self.optimizers.items():
            said = opt.schedule.observe(values)
            if said:
                self.reporter.log(f"optimizer {name}: {said}")
        self.reporter.validation(iteration, phase, values, self.validator.best)


def _check_lpips(spec: Spec, problems: Diagnostics) -> None:
    """LPIPS's backbone is found (or fetched) at start-up, not at the first validation."""
    validation = spec.settings.validation
    if validation is None or "lpips" not in validation.metrics:
        return
    from engine.metrics import lpips

    try:
        lpips.prepare()
    except lpips.LpipsError as exc:
        where = spec.doc.loc(("validation", "metrics", validation.metrics.index("lpips")))
        problems.error(where or spec.doc.key_loc(("validation",)), f"validation.metrics: {exc}")


def _log_skipped(reporter: Reporter, datasets: dict[str, Any]) -> None:
    """List the files each dataset left out (``on_bad_image: skip``) in train.log, and
    the first few on the console."""
    for where, dataset in datasets.items():
        skipped: list[str] = getattr(dataset, "skipped", None) or []
        if not skipped:
            continue
        reporter.log(f"{where}: skipped {len(skipped)} bad files (on_bad_image: skip):")
        for i, reason in enumerate(skipped):
            reporter.log(f"  {reason}", console=i < SKIPPED_SHOWN)
        if len(skipped) > SKIPPED_SHOWN:
            reporter.log(f"  and {len(skipped) - SKIPPED_SHOWN} more, all listed in train.log")


def _write_spec(spec: Spec, path: Path, notes: Sequence[str] = ()) -> None:
    """The resolved spec with its hash, written under a temporary name then renamed."""
    from ruamel.yaml import YAML

    path.parent.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    yaml.default_flow_style = None
    temp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(f"# resolved from {spec.path}\n# sha256: {spec.hash}\n")
            handle.writelines(f"# {line}\n" for line in notes)
            yaml.dump(spec.data, handle)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _endless(loader: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader
