"""traiNNer option files (JSON with ``//`` comments, or YAML) into a :class:`Plan`.

Both generations are read: the BasicSR-era files (``"model": "srragan"``, ``HR_size``,
``lr_G``/``beta1_G``, ``batch_multiplier``) and victorca25's later ones (``network_G:
esrgan`` shorthands, ``crop_size``, ``optim_G``, ``virtual_batch_size``, ``*_rel``
schedule points, the image-to-image models). Keys and defaults follow traiNNer's
templates and its ``options/defaults.py``.
"""

from __future__ import annotations

from typing import Any

from engine.importer import networks
from engine.importer.common import (
    PREPROCESS,
    iterations_list,
    name_of,
    number_list,
    restart_schedule,
    take_int,
    take_logger,
    take_number,
)
from engine.importer.plan import Gan, Net, Optim, Plan, Term
from engine.importer.source import OptionFile
from engine.spec.yamlio import Path

SR_MODELS = {"sr", "srgan", "srragan", "esrgan", "srragan_hfen", "asrragan", "lupsr"}
TASKS = {"pix2pix": "pix2pix", "cyclegan": "cyclegan", "wbc": "wbc"}
REFUSED = {
    "ppon": "PPON's three-branch model",
    "sftgan": "SFTGAN's segmentation-conditioned model",
    "srflow": "SRFlow's flow model",
    "vsrgan": "video SR",
    "dvd": "video deinterlacing",
    "rife": "RIFE frame interpolation",
}
PIXEL = {"l1": "l1", "l2": "mse", "cb": "charbonnier", "charbonnier": "charbonnier"}
FEATURE = {"l1": "l1", "l2": "l2", "cb": "l1"}
GAN = {"vanilla": "vanilla", "gan": "vanilla", "lsgan": "lsgan", "hinge": "hinge"}
KERNELS = {
    0: "nearest",
    1: "bilinear",
    2: "bicubic",
    3: "area",
    4: "lanczos",
    5: "bilinear",
    777: "bicubic",
    "nearest": "nearest",
    "linear": "bilinear",
    "bilinear": "bilinear",
    "cubic": "bicubic",
    "bicubic": "bicubic",
    "area": "area",
    "lanczos": "lanczos",
    "matlab_bicubic": "bicubic",
}


def _task(opts: OptionFile, g_kind: str) -> str:
    model = opts.get("model")
    if isinstance(model, str):
        opts.take("model")
        m = model.lower()
        if m in REFUSED:
            raise opts.fail(("model",), f"{REFUSED[m]} is not imported (write its spec by hand)")
        if m in TASKS:
            return TASKS[m]
        if m not in SR_MODELS:
            raise opts.fail(
                ("model",),
                f"model '{model}' is not imported (Loom imports sr, srgan, srragan, esrgan, "
                "pix2pix, cyclegan and wbc)",
            )
        return "sr"
    if "wbcunet" in g_kind:
        return "wbc"
    if "unet" in g_kind:
        return "pix2pix"
    if "resnet" in g_kind and "sr_resnet" not in g_kind:
        return "cyclegan"
    return "sr"


def read_trainner(opts: OptionFile) -> Plan:
    scale = take_int(opts, ("scale",), 4) or 1
    opts.take("name")
    crop = _crop(opts)
    g_kind = opts.get("network_G", "which_model_G") or opts.get("network_G") or ""
    task = _task(opts, str(g_kind).lower() if isinstance(g_kind, str) else "")
    plan = Plan(task=task, name=name_of(opts.get("name"), "imported"), scale=scale)  # type: ignore[arg-type]
    _, g = networks.trainner_generator(opts, scale)
    _gan_losses(opts, plan)
    if task == "sr":
        plan.nets["G"] = g
        if plan.gan is not None:
            plan.nets["D"] = networks.trainner_discriminator(opts, crop)
        else:
            opts.skip(("network_D",), "no GAN loss is set (gan_weight), so no discriminator trains")
    elif task == "pix2pix":
        plan.nets["G"] = g
        plan.nets["D"] = networks.trainner_discriminator(opts, crop)
        plan.gan = plan.gan or Gan()
    elif task == "cyclegan":
        plan.nets["G_A"] = g
        plan.nets["G_B"] = Net(g.lib, g.use, dict(g.params), g.in_nc)
        d = networks.trainner_discriminator(opts, crop)
        plan.nets["D_A"] = d
        plan.nets["D_B"] = Net(d.lib, d.use, dict(d.params), d.in_nc)
        plan.gan = plan.gan or Gan(type="lsgan")
        plan.pool_size = take_int(opts, ("pool_size",), 50) or 0
    else:
        plan.nets["G"] = g
        d = networks.trainner_discriminator(opts, crop, wbc=True)
        plan.nets["D_surface"] = d
        plan.nets["D_texture"] = Net(d.lib, d.use, dict(d.params), 1)
        plan.gan = plan.gan or Gan(type="lsgan", weight=0.02)
        opts.take("pool_size")
    _losses(opts, plan)
    _optimizers(opts, plan)
    _training(opts, plan)
    _data(opts, plan, crop)
    _pretrained(opts, plan)
    _logging(opts, plan)
    return plan


def _crop(opts: OptionFile) -> int:
    for key in ("crop_size", "HR_size"):
        value = opts.get("datasets", "train", key)
        if value is not None:
            return int(take_int(opts, ("datasets", "train", key)) or 128)
    return 128


def _gan_losses(opts: OptionFile, plan: Plan) -> None:
    t: Path = ("train",)
    weight = take_number(opts, (*t, "gan_weight"))
    gan_type = str(opts.get(*t, "gan_type") or "vanilla").lower()
    if weight is None or weight == 0:
        opts.skip((*t, "gan_type"), "no gan_weight is set, so no GAN loss trains")
        return
    opts.take(*t, "gan_type")
    form = str(opts.take(*t, "gan_opt", "form", default="")).lower()
    relativistic = form == "relativistic" or (
        not form and str(opts.get("model") or "").lower() in ("srragan", "esrgan", "asrragan")
    )
    if gan_type in ("wgan-gp", "wgangp"):
        gp = take_number(opts, (*t, "gp_weigth")) or take_number(opts, (*t, "gp_weight")) or 10.0
        plan.gan = Gan("wgan", weight, False, gp)
        return
    if gan_type not in GAN:
        raise opts.fail(
            (*t, "gan_type"), f"GAN type '{gan_type}': Loom has vanilla, lsgan, hinge, wgan-gp"
        )
    plan.gan = Gan(GAN[gan_type], weight, relativistic)
    plan.g_every = take_int(opts, (*t, "D_update_ratio"), 1) or 1
    plan.g_start = take_int(opts, (*t, "D_init_iters"), 0) or 0


def _pixel_block(opts: OptionFile, path: Path) -> str:
    crit = str(opts.take(*path, default="l1")).lower()
    if crit not in PIXEL:
        opts.note(path, f"criterion '{crit}' has no Loom loss; written as l1")
        return "l1"
    return PIXEL[crit]


def _losses(opts: OptionFile, plan: Plan) -> None:
    t: Path = ("train",)
    pix_w = take_number(opts, (*t, "pixel_weight"))
    if plan.task == "cyclegan":
        block = _pixel_block(opts, (*t, "pixel_criterion"))
        plan.cycle = Term("cycle", block, pix_w if pix_w is not None else 10.0)
        plan.identity = take_number(opts, (*t, "lambda_identity"), 0.0) or 0.0
    elif pix_w:
        plan.terms.append(Term("pix", _pixel_block(opts, (*t, "pixel_criterion")), pix_w))
    else:
        opts.skip((*t, "pixel_criterion"), "no pixel_weight is set, so no pixel loss trains")
    fea_w = take_number(opts, (*t, "feature_weight"))
    if fea_w:
        crit = str(opts.take(*t, "feature_criterion", default="l1")).lower()
        if crit not in FEATURE:
            opts.note(
                (*t, "feature_criterion"), f"criterion '{crit}' has no Loom form; written as l1"
            )
        layers = opts.take(*t, "perceptual_opt", "perceptual_layers")
        if not isinstance(layers, dict) or not layers:
            layers = {"conv4_4" if plan.task == "wbc" else "conv5_4": 1.0}
        params = {
            "layers": {str(k): float(v) for k, v in layers.items()},
            "criterion": FEATURE.get(crit, "l1"),
        }
        _feature_options(opts, params)
        if plan.task == "wbc":
            _wbc_terms(opts, plan, params, fea_w)
        else:
            plan.terms.append(Term("fea", "perceptual", fea_w, params))
    else:
        opts.skip((*t, "feature_criterion"), "no feature_weight is set, so no feature loss trains")
    tv_w = take_number(opts, (*t, "tv_weight"))
    if tv_w and plan.task != "wbc":
        power = take_int(opts, (*t, "tv_norm"), 1) or 1
        opts.take(*t, "tv_type")
        plan.terms.append(Term("tv", "tv", tv_w, {"power": power}, pair=False))
    ssim_w = take_number(opts, (*t, "ssim_weight"))
    if ssim_w:
        kind = str(opts.take(*t, "ssim_type", default="ssim")).lower()
        plan.terms.append(Term("ssim", "ms_ssim" if "ms" in kind else "ssim", ssim_w))
    fft_w = take_number(opts, (*t, "fft_weight"))
    if fft_w:
        opts.take(*t, "fft_type")
        plan.terms.append(Term("fft", "fft", fft_w))
    ms_w = take_number(opts, (*t, "ms_weight"))
    if ms_w:
        opts.take(*t, "ms_criterion")
        plan.terms.append(Term("multiscale", "multiscale_l1", ms_w))
    cx_w = take_number(opts, (*t, "cx_weight"))
    if cx_w:
        opts.take(*t, "cx_type")
        raw = opts.take(*t, "cx_vgg_layers") or {"conv_3_2": 1, "conv_4_2": 1}
        layers = {str(k).replace("conv_", "conv"): float(v) for k, v in dict(raw).items()}
        plan.terms.append(Term("cx", "contextual", cx_w, {"layers": layers}))


def _feature_options(opts: OptionFile, params: dict[str, Any]) -> None:
    p: Path = ("train", "perceptual_opt")
    net = opts.get(*p, "feature_network")
    if net is not None and str(net).lower() != "vgg19":
        opts.skip((*p, "feature_network"), f"'{net}': Loom's perceptual loss uses VGG19")
    else:
        opts.take(*p, "feature_network")
    norm = opts.take(*p, "use_input_norm")
    if norm is False:
        params["normalize"] = False
    weights = opts.take(*p, "pretrained_path")
    if weights:
        params["weights"] = str(weights)
    for key in ("requires_grad", "remove_pooling", "change_padding", "rotations", "flips"):
        value = opts.get(*p, key)
        if value in (False, None):
            opts.take(*p, key)
        else:
            opts.skip((*p, key), f"{key}: {value!r} has no equivalent in Loom's perceptual loss")
    if opts.get(*p, "style_layers") in ({}, None):
        opts.take(*p, "style_layers")
    if not take_number(opts, ("train", "style_weight")):
        opts.take(*p, "style_layers")


def _wbc_terms(opts: OptionFile, plan: Plan, params: dict[str, Any], fea_w: float) -> None:
    t: Path = ("train",)
    scales = {
        "surface": take_number(opts, (*t, "surface_scale"), 0.2) or 0.0,
        "texture": take_number(opts, (*t, "texture_scale"), 1.0) or 0.0,
        "structure": take_number(opts, (*t, "struct_scale"), 1.0) or 0.0,
        "content": take_number(opts, (*t, "content_scale"), 1.0) or 0.0,
        "regularization": take_number(opts, (*t, "reg_scale"), 1.0) or 0.0,
    }
    plan.scales = scales
    for key, name in (("struct_losses", "structure"), ("cont_losses", "content")):
        wanted = opts.take(*t, key, default=["fea"])
        if "fea" in wanted:
            plan.terms.append(Term(f"{name}_l", "perceptual", scales[name] * fea_w, dict(params)))
        for other in [w for w in wanted if w != "fea"]:
            opts.note((*t, key), f"'{other}' in {key} is not imported (only fea)")
    regs = opts.take(*t, "reg_losses", default=["tv"])
    tv_w = take_number(opts, (*t, "tv_weight"), 0.045) or 0.0
    power = take_int(opts, (*t, "tv_norm"), 2) or 2
    opts.take(*t, "tv_type")
    if "tv" in regs:
        weight = scales["regularization"] * tv_w
        plan.terms.append(Term("tv_l", "tv", weight, {"power": power}, pair=False))
    for other in [r for r in regs if r != "tv"]:
        opts.note((*t, "reg_losses"), f"'{other}' in reg_losses is not imported (only tv)")
    for key in ("surf_losses", "text_losses", "idt_losses"):
        if opts.get(*t, key) in ([], None):
            opts.take(*t, key)
        else:
            opts.skip((*t, key), "extra losses on this representation are not imported")


def _optimizers(opts: OptionFile, plan: Plan) -> None:
    t: Path = ("train",)
    for net in ("G", "D"):
        kind = str(opts.take(*t, f"optim_{net}", default="adam")).lower()
        if kind not in ("adam", "adamw", "sgd", "rmsprop"):
            opts.note((*t, f"optim_{net}"), f"optimizer '{kind}' is not imported; written as adam")
            kind = "adam"
        lr = take_number(opts, (*t, f"lr_{net}"), 1e-4) or 1e-4
        options: dict[str, Any] = {}
        if kind in ("adam", "adamw"):
            b1 = take_number(opts, (*t, f"beta1_{net}"), 0.9)
            b2 = take_number(opts, (*t, f"beta2_{net}"), 0.999)
            options["betas"] = [b1, b2]
        wd = take_number(opts, (*t, f"weight_decay_{net}"))
        if wd:
            options["weight_decay"] = wd
        plan.optim[net] = Optim(kind, lr, options)


def _scheduler(opts: OptionFile, plan: Plan) -> dict[str, Any] | None:
    t: Path = ("train",)
    scheme = opts.get(*t, "lr_scheme")
    total = plan.iterations
    gamma = take_number(opts, (*t, "lr_gamma"))
    steps = number_list(opts, (*t, "lr_steps")) or number_list(opts, (*t, "lr_steps_rel"))
    restarts = number_list(opts, (*t, "restarts")) or number_list(opts, (*t, "restarts_rel"))
    weights = number_list(opts, (*t, "restart_weights")) or []
    if scheme is None:
        return None
    at: Path = (*t, "lr_scheme")
    opts.take(*at)
    s = str(scheme).lower()
    if s in ("multisteplr", "multistep") or (s == "multisteplr_restart" and not restarts):
        out: dict[str, Any] = {"type": "multistep", "milestones": iterations_list(steps or [])}
        if gamma is not None:
            out["gamma"] = gamma
        return out
    if s == "multisteplr_restart":
        return restart_schedule(
            opts, at, kind="multistep_restarts", total=total, milestones=steps or [],
            restarts=restarts or [], weights=weights, gamma=gamma,
        )  # fmt: skip
    if s in ("steplr", "steplr_restart"):
        sizes = number_list(opts, (*t, "lr_step_sizes")) or number_list(opts, (*t, "lr_step_size"))
        if restarts:
            opts.skip((*t, "restarts"), "Loom's step schedule has no restarts")
        out = {"type": "step", "step_size": int((sizes or [max(total // 3, 1)])[0])}
        if sizes and len(sizes) > 1:
            opts.note((*t, "lr_step_sizes"), "one step size per cycle: Loom keeps the first")
        if gamma is not None:
            out["gamma"] = gamma
        return out
    if s in ("cosineannealinglr_restart", "cosineannealing", "cosineannealinglr"):
        periods = number_list(opts, (*t, "T_period")) or number_list(opts, (*t, "T_period_rel"))
        eta = take_number(opts, (*t, "eta_min"), 0.0) or 0.0
        lr = plan.optim.get("G", Optim()).lr
        return restart_schedule(
            opts, at, kind="cosine_restarts", total=total, milestones=[],
            restarts=restarts or [], weights=weights, gamma=None,
            eta_min=eta / lr if lr else 0.0, periods=periods,
        )  # fmt: skip
    if s in ("linear", "linearlr"):
        fixed = take_number(opts, (*t, "fixed_niter"), total / 2) or 0
        decay = take_number(opts, (*t, "niter_decay"))
        if decay and int(fixed + decay) != total:
            opts.note(
                (*t, "niter_decay"),
                f"fixed_niter + niter_decay is {int(fixed + decay)}, not niter ({total}); Loom "
                "decays from fixed_niter to the end of training",
            )
        return {"type": "linear_decay", "start": int(fixed)}
    opts.skip(at, f"lr_scheme '{scheme}' is not imported; the learning rate stays constant")
    return None


def _training(opts: OptionFile, plan: Plan) -> None:
    t: Path = ("train",)
    total = take_int(opts, (*t, "niter"))
    if total is None:
        raise opts.fail(t, "no 'niter': how many iterations to train")
    plan.iterations = total
    plan.seed = take_int(opts, (*t, "manual_seed"))
    plan.scheduler = _scheduler(opts, plan)
    warmup = take_int(opts, (*t, "warmup_iter"))
    if warmup and warmup > 0:
        plan.scheduler = {**(plan.scheduler or {"type": "constant"}), "warmup": warmup}
    if opts.get("use_amp"):
        opts.take("use_amp")
        plan.precision = "fp16"
    clip = opts.get(*t, "grad_clip")
    if clip:
        value = take_number(opts, (*t, "grad_clip_value"))
        if str(clip).lower() in ("norm", "true") and value is not None:
            opts.take(*t, "grad_clip")
            plan.clip = {"norm": value}
        elif str(clip).lower() == "value" and value is not None:
            opts.take(*t, "grad_clip")
            plan.clip = {"value": value}
        else:
            opts.skip((*t, "grad_clip"), "automatic clipping values are not imported")
    val = take_int(opts, (*t, "val_freq"))
    metrics = opts.take(*t, "metrics", default="psnr,ssim")
    names = [m.strip().lower() for m in str(metrics).split(",") if m.strip()]
    known = [m for m in names if m in ("psnr", "ssim", "lpips")]
    for other in [m for m in names if m not in known]:
        opts.note((*t, "metrics"), f"metric '{other}' is not a Loom validation metric; left out")
    if val:
        plan.validation = {"every": val, "metrics": known or ["psnr", "ssim"]}


def _folders(opts: OptionFile, path: Path) -> Any:
    value = opts.take(*path)
    if isinstance(value, list):
        return [str(v) for v in value]
    return None if value is None else str(value)


def _dataset(opts: OptionFile, plan: Plan, section: str, crop: int) -> dict[str, Any] | None:
    b: Path = ("datasets", section)
    if not isinstance(opts.get(*b), dict):
        return None
    opts.take(*b, "name")
    opts.take(*b, "mode")
    train = section == "train"
    out: dict[str, Any] = {}
    if plan.task == "sr":
        out["type"] = "sr"
        hr = _folders(opts, (*b, "dataroot_HR")) or _folders(opts, (*b, "dataroot_B"))
        lr = _folders(opts, (*b, "dataroot_LR")) or _folders(opts, (*b, "dataroot_A"))
        if hr is None:
            raise opts.fail(b, "no HR images: give dataroot_HR (or dataroot_B)")
        out["hr"] = hr
        if lr is not None:
            out["lr"] = lr
        _downscale(opts, b, out, has_lr=lr is not None)
    elif plan.task == "pix2pix":
        out["type"] = "paired"
        ab = _folders(opts, (*b, "dataroot_AB"))
        if ab is not None:
            out["folder"] = ab
        else:
            out["A"] = _folders(opts, (*b, "dataroot_A"))
            out["B"] = _folders(opts, (*b, "dataroot_B"))
        direction = str(opts.take(*b, "direction", default="AtoB")).lower()
        plan.reverse = plan.reverse or direction == "btoa"
        opts.take(*b, "outputs")
    else:
        out["type"] = "unpaired"
        out["A"] = _folders(opts, (*b, "dataroot_A"))
        out["B"] = _folders(opts, (*b, "dataroot_B"))
        weights = number_list(opts, (*b, "sampler_weights"))
        if weights:
            out["weights"] = [int(w) if w.is_integer() else w for w in weights]
        opts.take(*b, "outputs")
    if train:
        out["crop_size"] = crop
        if opts.get(*b, "preprocess") is not None:
            mode = str(opts.take(*b, "preprocess")).lower()
            if mode in PREPROCESS:
                out["preprocess"] = mode
            else:
                opts.note((*b, "preprocess"), f"preprocess '{mode}' is not a Loom mode; crop")
        load = take_int(opts, (*b, "load_size"))
        if load and "preprocess" in out and out["preprocess"] != "crop":
            out["load_size"] = load
        batch = take_int(opts, (*b, "batch_size"), 16) or 1
        out["batch_size"] = batch
        virtual = take_int(opts, (*b, "virtual_batch_size"))
        if virtual and virtual > batch:
            plan.accumulate = max(virtual // batch, 1)
            if virtual % batch:
                opts.note(
                    (*b, "virtual_batch_size"),
                    f"not a multiple of batch_size; {plan.accumulate} batches per step",
                )
        flip = opts.take(*b, "use_flip")
        out["flip"] = bool(flip) if flip is not None else False
        rot = opts.take(*b, "use_rot")
        if rot:
            out["rotate"] = True
        workers = take_int(opts, (*b, "n_workers"))
        if workers:
            out["workers"] = workers
    else:
        for key in ("batch_size", "n_workers", "use_flip", "use_rot"):
            opts.take(*b, key)
    channels = take_int(opts, (*b, "image_channels"))
    if channels and channels != 3:
        out["channels"] = channels
    for key in ("input_nc", "output_nc"):
        opts.take(*b, key)
    subset = opts.take(*b, "subset_file")
    if subset:
        out["subset"] = str(subset)
    return out


def _downscale(opts: OptionFile, b: Path, out: dict[str, Any], *, has_lr: bool) -> None:
    types = opts.get(*b, "lr_downscale_types")
    on = opts.take(*b, "lr_downscale")
    if types is None:
        return
    opts.take(*b, "lr_downscale_types")
    kernels: dict[str, int] = {}
    for t in types if isinstance(types, list) else [types]:
        name = KERNELS.get(t.lower() if isinstance(t, str) else t)
        if name is None:
            opts.note(
                (*b, "lr_downscale_types"), f"downscale type {t!r} is not a Loom kernel; left out"
            )
            continue
        kernels[name] = kernels.get(name, 0) + 1
    if not kernels or (has_lr and not on):
        return
    if has_lr:
        opts.note(
            (*b, "lr_downscale"),
            "Loom makes LR images on the fly only without LR folders; the LR folders are used",
        )
        return
    if len(kernels) == 1:
        out["resize_kernel"] = next(iter(kernels))
    else:
        out["degradations"] = [{"kind": "resize", "to": "lr", "kernel": kernels}]


def _data(opts: OptionFile, plan: Plan, crop: int) -> None:
    train = _dataset(opts, plan, "train", crop)
    if train is None:
        raise opts.fail(("datasets",), "no datasets.train section: nothing to train on")
    plan.data["train"] = train
    val = _dataset(opts, plan, "val", crop)
    if val is not None:
        plan.data["val"] = val
    if plan.validation is not None:
        inp, target = {
            "sr": ("data.lr", "data.hr"),
            "pix2pix": ("data.B", "data.A") if plan.reverse else ("data.A", "data.B"),
        }.get(plan.task, (None, None))
        if inp is None or val is None:
            opts.skip(("train", "val_freq"), "no validation: the model has no paired val dataset")
            plan.validation = None
        else:
            plan.validation = {"every": plan.validation["every"], "output": "fake", "input": inp,
                               "target": target, "metrics": plan.validation["metrics"]}  # fmt: skip
    if opts.get("batch_multiplier"):
        plan.accumulate = take_int(opts, ("batch_multiplier",), 1) or 1


def _pretrained(opts: OptionFile, plan: Plan) -> None:
    p: Path = ("path",)
    strict = opts.take(*p, "strict")
    names = {
        "G": ["G"],
        "D": ["D"],
        "G_A": ["G_A"],
        "G_B": ["G_B"],
        "D_A": ["D_A"],
        "D_B": ["D_B"],
        "D_S": ["D_surface"],
        "D_T": ["D_texture"],
    }
    for suffix, nets in names.items():
        key = f"pretrain_model_{suffix}"
        path = opts.get(*p, key)
        if path is None:
            continue
        target = [n for n in nets if n in plan.nets]
        if not target:
            opts.skip((*p, key), f"the spec has no network {nets[0]}")
            continue
        opts.take(*p, key)
        net_strict = opts.get(f"network_{suffix[0]}", "strict")
        s = strict if strict is not None else net_strict
        plan.nets[target[0]].pretrained = {
            "path": str(path),
            **({"strict": bool(s)} if s is not None else {}),
        }
    resume = opts.get(*p, "resume_state")
    if resume is not None:
        opts.skip(
            (*p, "resume_state"),
            "Loom resumes only its own checkpoints (`run SPEC --resume auto`); start from "
            "traiNNer's saved models instead with networks.G.pretrained (its models/ folder "
            "holds <iteration>_G.pth)",
        )


def _logging(opts: OptionFile, plan: Plan) -> None:
    take_logger(opts, plan, ("use_tb_logger",))
