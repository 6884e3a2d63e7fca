"""BasicSR and traiNNer-redux YAML option files into a :class:`Plan`.

Both write ``network_g``/``network_d`` with a ``type``, ``datasets.train`` with
``dataroot_gt``/``dataroot_lq`` and ``gt_size``, ``train.optim_g``, ``train.scheduler``
and ``train.total_iter``. Losses are ``pixel_opt``/``perceptual_opt``/``gan_opt``
sections (BasicSR, older redux) or a ``losses:`` list (newer redux).
"""

from __future__ import annotations

from typing import Any

from engine.importer import networks
from engine.importer.common import (
    iterations_list,
    name_of,
    number_list,
    restart_schedule,
    take_int,
    take_logger,
    take_number,
)
from engine.importer.plan import Gan, Optim, Plan, Term
from engine.importer.source import OptionFile
from engine.spec.yamlio import Path

PIXEL = {
    "l1loss": "l1",
    "mseloss": "mse",
    "l2loss": "mse",
    "charbonnierloss": "charbonnier",
}
OTHER = {
    "mssimloss": "ms_ssim",
    "msssimloss": "ms_ssim",
    "ssimloss": "ssim",
    "colorloss": "color",
    "lumaloss": "luma",
    "fftloss": "fft",
    "ffloss": "fft",
}
CRITERION = {"l1": "l1", "l2": "l2", "mse": "l2", "charbonnier": "l1", "fro": "l2"}
GAN = {"vanilla": "vanilla", "lsgan": "lsgan", "hinge": "hinge", "wgan": "wgan"}
RELATIVISTIC = {"esrganmodel", "realesrganmodel"}


def read_basicsr(opts: OptionFile) -> Plan:
    scale = take_int(opts, ("scale",), 4) or 1
    opts.take("name")
    model = str(opts.take("model_type", default="")).lower()
    if model and not model.endswith(("srmodel", "ganmodel", "esrnetmodel", "realesrgan")):
        raise opts.fail(("model_type",), f"model type '{model}' is not imported (SR models only)")
    crop = _crop(opts, scale)
    plan = Plan(task="sr", name=name_of(opts.get("name"), "imported"), scale=scale)
    _, plan.nets["G"] = networks.basicsr_generator(opts, scale)
    _losses(opts, plan, relativistic=model in RELATIVISTIC)
    if plan.gan is not None:
        plan.nets["D"] = networks.basicsr_discriminator(opts, crop)
    else:
        opts.skip(("network_d",), "no GAN loss is set (gan_opt), so no discriminator trains")
        opts.skip(("train", "optim_d"), "no GAN loss is set, so no discriminator trains")
    _training(opts, plan)
    _data(opts, plan, scale)
    _pretrained(opts, plan)
    _logging(opts, plan)
    return plan


def _crop(opts: OptionFile, scale: int) -> int:
    lq = opts.get("datasets", "train", "lq_size")
    if lq is not None:
        return int(take_int(opts, ("datasets", "train", "lq_size")) or 32) * scale
    return int(take_int(opts, ("datasets", "train", "gt_size"), 128) or 128)


def _weight(opts: OptionFile, path: Path, key: str = "loss_weight") -> float | None:
    return take_number(opts, (*path, key), 1.0)


def _section_loss(opts: OptionFile, plan: Plan, path: Path, relativistic: bool) -> None:
    """One loss: a ``*_opt`` section or an item of ``losses:``."""
    kind = str(opts.take(*path, "type", default="")).lower()
    opts.take(*path, "reduction")
    if kind in PIXEL:
        weight = _weight(opts, path)
        params: dict[str, Any] = {}
        eps = take_number(opts, (*path, "eps"))
        if kind == "charbonnierloss" and eps is not None:
            params["eps"] = eps
        if weight:
            plan.terms.append(Term(_unique(plan, "pix"), PIXEL[kind], weight, params))
        return
    if kind == "perceptualloss":
        weight = take_number(opts, (*path, "perceptual_weight"))
        if weight is None:
            weight = _weight(opts, path)
        layers = opts.take(*path, "layer_weights", default={"conv5_4": 1.0})
        crit = str(opts.take(*path, "criterion", default="l1")).lower()
        if crit not in CRITERION:
            opts.note((*path, "criterion"), f"criterion '{crit}' has no Loom form; written as l1")
        elif crit in ("charbonnier", "fro"):
            opts.note((*path, "criterion"), f"criterion '{crit}' is written as {CRITERION[crit]}")
        vgg = str(opts.take(*path, "vgg_type", default="vgg19")).lower()
        if vgg != "vgg19":
            opts.note((*path, "vgg_type"), f"'{vgg}': Loom's perceptual loss uses VGG19")
        params = {
            "layers": {str(k): float(v) for k, v in dict(layers).items()},
            "criterion": CRITERION.get(crit, "l1"),
        }
        if opts.take(*path, "use_input_norm") is False:
            params["normalize"] = False
        if opts.take(*path, "range_norm"):
            opts.note((*path, "range_norm"), "Loom's images are in [0, 1]; no range norm needed")
        style = take_number(opts, (*path, "style_weight"))
        if style:
            plan.terms.append(
                Term(_unique(plan, "style"), "style", style, {"layers": params["layers"]})
            )
        if weight:
            plan.terms.append(Term(_unique(plan, "fea"), "perceptual", weight, params))
        return
    if kind == "ganloss":
        gan_type = str(opts.take(*path, "gan_type", default="vanilla")).lower()
        weight = _weight(opts, path) or 0.0
        for key, default in (("real_label_val", 1.0), ("fake_label_val", 0.0)):
            value = take_number(opts, (*path, key))
            if value is not None and value != default:
                opts.note((*path, key), f"Loom's GAN losses use the labels 1 and 0, not {value}")
        if gan_type not in GAN:
            raise opts.fail(
                (*path, "gan_type"), f"GAN type '{gan_type}': Loom has {', '.join(GAN)}"
            )
        if weight:
            plan.gan = Gan(GAN[gan_type], weight, relativistic)
        return
    if kind in OTHER:
        weight = _weight(opts, path)
        if weight:
            plan.terms.append(Term(_unique(plan, OTHER[kind]), OTHER[kind], weight))
        for key in ("criterion", "alpha"):
            opts.skip((*path, key), f"Loom's {OTHER[kind]} loss has no '{key}'")
        return
    weight = number(opts.get(*path, "loss_weight"))
    if weight == 0:  # switched off in the file: nothing to train
        opts.take(*path)
        return
    opts.skip(path, f"loss '{kind}' has no Loom loss block (see docs/blocks.md)")
    opts.take(*path)


def number(value: Any) -> float | None:
    from engine.importer.common import number as parse

    return parse(value)


def _unique(plan: Plan, base: str) -> str:
    names = {t.name for t in plan.terms}
    if base not in names:
        return base
    i = 2
    while f"{base}{i}" in names:
        i += 1
    return f"{base}{i}"


def _losses(opts: OptionFile, plan: Plan, *, relativistic: bool) -> None:
    t: Path = ("train",)
    train = opts.get(*t, default={})
    if isinstance(train.get("losses"), list):
        for i in range(len(train["losses"])):
            _section_loss(opts, plan, (*t, "losses", i), relativistic)
    for key in [k for k in train if k.endswith("_opt") and k not in ("optim_g", "optim_d")]:
        if isinstance(train[key], dict):
            _section_loss(opts, plan, (*t, key), relativistic)
    plan.g_every = take_int(opts, (*t, "net_d_iters"), 1) or 1
    plan.g_start = take_int(opts, (*t, "net_d_init_iters"), 0) or 0


def _optimizer(opts: OptionFile, path: Path) -> Optim:
    kind = str(opts.take(*path, "type", default="Adam")).lower()
    if kind not in ("adam", "adamw", "sgd", "rmsprop", "radam", "nadam"):
        opts.note((*path, "type"), f"optimizer '{kind}' is not imported; written as adam")
        kind = "adam"
    lr = take_number(opts, (*path, "lr"), 1e-4) or 1e-4
    options: dict[str, Any] = {}
    betas = number_list(opts, (*path, "betas"))
    if betas:
        options["betas"] = betas
    wd = take_number(opts, (*path, "weight_decay"))
    if wd:
        options["weight_decay"] = wd
    for key in ("eps", "momentum"):
        value = take_number(opts, (*path, key))
        if value is not None:
            options[key] = value
    return Optim(kind, lr, options)


def _scheduler(opts: OptionFile, plan: Plan) -> dict[str, Any] | None:
    s: Path = ("train", "scheduler")
    kind = opts.get(*s, "type")
    if kind is None:
        return None
    k = str(opts.take(*s, "type")).lower()
    gamma = take_number(opts, (*s, "gamma"))
    milestones = number_list(opts, (*s, "milestones")) or []
    restarts = number_list(opts, (*s, "restarts")) or []
    weights = number_list(opts, (*s, "restart_weights")) or []
    total = plan.iterations
    if k == "multisteplr" or (k == "multisteprestartlr" and not restarts):
        out: dict[str, Any] = {"type": "multistep", "milestones": iterations_list(milestones)}
        if gamma is not None:
            out["gamma"] = gamma
        return out
    if k == "multisteprestartlr":
        return restart_schedule(
            opts, (*s, "type"), kind="multistep_restarts", total=total,
            milestones=milestones, restarts=restarts, weights=weights, gamma=gamma,
        )  # fmt: skip
    if k in ("cosineannealingrestartlr", "cosineannealinglr"):
        periods = number_list(opts, (*s, "periods"))
        if k == "cosineannealinglr":
            periods = [take_number(opts, (*s, "T_max"), total) or total]
        eta = take_number(opts, (*s, "eta_min"), 0.0) or 0.0
        lr = plan.optim.get("G", Optim()).lr
        return restart_schedule(
            opts, (*s, "type"), kind="cosine_restarts", total=total, milestones=[],
            restarts=[], weights=weights, gamma=None, eta_min=eta / lr if lr else 0.0,
            periods=periods or [total],
        )  # fmt: skip
    opts.skip((*s, "type"), f"scheduler '{kind}' is not imported; the learning rate stays constant")
    return None


def _training(opts: OptionFile, plan: Plan) -> None:
    t: Path = ("train",)
    plan.optim["G"] = _optimizer(opts, (*t, "optim_g"))
    if plan.gan is not None:
        plan.optim["D"] = _optimizer(opts, (*t, "optim_d"))
    total = take_int(opts, (*t, "total_iter"))
    if total is None:
        raise opts.fail(t, "no 'total_iter': how many iterations to train")
    plan.iterations = total
    seed = take_int(opts, ("manual_seed",))
    plan.seed = seed
    plan.scheduler = _scheduler(opts, plan)
    warmup = take_int(opts, (*t, "warmup_iter"))
    if warmup and warmup > 0:
        plan.scheduler = {**(plan.scheduler or {"type": "constant"}), "warmup": warmup}
    ema = take_number(opts, (*t, "ema_decay"))
    if ema:
        plan.ema = ema
    if opts.get("use_amp"):
        opts.take("use_amp")
        plan.precision = "bf16" if opts.take("amp_bf16") else "fp16"
    else:
        opts.take("amp_bf16")
    if opts.get("use_channels_last") is not None:
        opts.skip(("use_channels_last",), "set train.channels_last: true for channels_last")
    clip = opts.get(*t, "grad_clip")
    if clip is False:
        opts.take(*t, "grad_clip")
    elif clip is not None:
        opts.skip(
            (*t, "grad_clip"),
            "redux's automatic clipping has no value; set optimizers.G.clip: {norm: N}",
        )
    accum = take_int(opts, ("datasets", "train", "accum_iter"))
    if accum and accum > 1:
        plan.accumulate = accum


def _folders(opts: OptionFile, path: Path) -> Any:
    value = opts.take(*path)
    if isinstance(value, list):
        return [str(v) for v in value]
    return None if value is None else str(value)


def _dataset(opts: OptionFile, section: str, scale: int) -> dict[str, Any] | None:
    b: Path = ("datasets", section)
    if not isinstance(opts.get(*b), dict):
        return None
    opts.take(*b, "name")
    kind = str(opts.take(*b, "type", default="PairedImageDataset")).lower()
    hr = _folders(opts, (*b, "dataroot_gt"))
    if hr is None:
        raise opts.fail(b, "no HR images: give dataroot_gt")
    out: dict[str, Any] = {"type": "sr", "hr": hr}
    backend = str(opts.get(*b, "io_backend", "type", default="disk")).lower()
    if backend == "disk":
        opts.take(*b, "io_backend")
    else:
        opts.skip((*b, "io_backend"), f"'{backend}' storage is not read by Loom; use image folders")
    if kind in ("pairedimagedataset",):
        lr = _folders(opts, (*b, "dataroot_lq"))
        if lr is not None:
            out["lr"] = lr
    elif kind in ("realesrgandataset", "realesrganpaireddataset"):
        opts.note(
            (*b, "type"),
            "Real-ESRGAN's degradations are not imported; add them with `extends: "
            "lib/degradations/realesrgan.yaml` (see specs/realesrgan.yaml)",
        )
    elif kind not in ("singleimagedataset",):
        opts.note((*b, "type"), f"dataset type '{kind}' is read as HR (and LR) folders")
    if section == "train":
        gt = opts.get(*b, "gt_size")
        lq = opts.get(*b, "lq_size")
        if lq is not None:
            out["lr_crop_size"] = int(lq)
            opts.take(*b, "lq_size")
        elif gt is not None:
            out["crop_size"] = take_int(opts, (*b, "gt_size"))
        for key in ("use_flip", "use_hflip"):
            if opts.get(*b, key) is not None:
                out["flip"] = bool(opts.take(*b, key))
        if opts.take(*b, "use_rot"):
            out["rotate"] = True
        out["batch_size"] = take_int(opts, (*b, "batch_size_per_gpu"), 16)
        workers = take_int(opts, (*b, "num_worker_per_gpu"))
        if workers:
            out["workers"] = workers
        opts.take(*b, "accum_iter")
    color = opts.get(*b, "color")
    if color is not None and str(color).lower() == "y":
        opts.skip((*b, "color"), "Loom has no Y-only datasets; validation.y_channel measures on Y")
    meta = opts.get(*b, "meta_info") or opts.get(*b, "meta_info_file")
    if meta is not None:
        for key in ("meta_info", "meta_info_file"):
            opts.skip((*b, key), "BasicSR's meta-info lines are not a Loom subset file")
    return out


def _data(opts: OptionFile, plan: Plan, scale: int) -> None:
    train = _dataset(opts, "train", scale)
    if train is None:
        raise opts.fail(("datasets",), "no datasets.train section: nothing to train on")
    plan.data["train"] = train
    for key in [k for k in opts.get("datasets", default={}) if k.startswith("val")]:
        if "val" in plan.data:
            opts.skip(("datasets", key), "Loom validates on one dataset; the first is kept")
            continue
        val = _dataset(opts, key, scale)
        if val is not None:
            plan.data["val"] = val
    v: Path = ("val",)
    if not isinstance(opts.get(*v), dict):
        return
    enabled = opts.take(*v, "val_enabled", default=True)
    every = take_int(opts, (*v, "val_freq"))
    if not enabled or not every:
        opts.skip(v, "validation is switched off in the file")
        return
    metrics: list[str] = []
    y = False
    border = None
    for name, m in dict(opts.take(*v, "metrics", default={})).items():
        kind = str((m or {}).get("type", name)).lower().removeprefix("calculate_")
        if kind in ("psnr", "ssim", "lpips"):
            metrics.append(kind)
            y = y or bool((m or {}).get("test_y_channel"))
            border = (m or {}).get("crop_border", border)
        else:
            opts.note((*v, "metrics", name), f"metric '{kind}' is not a Loom validation metric")
    plan.validation = {
        "every": every,
        "output": "fake",
        "input": "data.lr",
        "target": "data.hr",
        "metrics": metrics or ["psnr", "ssim"],
    }
    if y:
        plan.validation["y_channel"] = True
    if border is not None and border != scale:
        plan.validation["crop_border"] = int(border)
    opts.take(*v, "save_img")
    opts.take(*v, "metrics_enabled")


def _pretrained(opts: OptionFile, plan: Plan) -> None:
    p: Path = ("path",)
    for suffix, net in (("g", "G"), ("d", "D")):
        path = opts.get(*p, f"pretrain_network_{suffix}")
        strict = opts.take(*p, f"strict_load_{suffix}")
        opts.take(*p, f"param_key_{suffix}")
        if path is None:
            continue
        if net not in plan.nets:
            opts.skip((*p, f"pretrain_network_{suffix}"), f"the spec has no network {net}")
            continue
        opts.take(*p, f"pretrain_network_{suffix}")
        plan.nets[net].pretrained = {
            "path": str(path),
            **({"strict": bool(strict)} if strict is not None else {}),
        }
    if opts.get(*p, "resume_state") is not None:
        opts.skip(
            (*p, "resume_state"),
            "Loom resumes only its own checkpoints (`run SPEC --resume auto`); start from "
            "the saved net_g_<iteration>.pth with networks.G.pretrained instead",
        )


def _logging(opts: OptionFile, plan: Plan) -> None:
    take_logger(opts, plan, ("logger", "use_tb_logger"))
    wandb = opts.get("logger", "wandb")
    if isinstance(wandb, dict) and all(v is None for v in wandb.values()):
        opts.take("logger", "wandb")
