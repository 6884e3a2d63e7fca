"""Networks of the peers' option files as Loom library blocks with their parameters.

Each function reads one network section (``opts`` at ``base``), takes the keys it
maps, notes the ones it cannot carry with the reason, and returns a :class:`Net`. A
network Loom has no block for is an error naming the ones it can import: a spec with
another network would train something else.
"""

from __future__ import annotations

from typing import Any

from engine.importer.plan import Net
from engine.importer.source import OptionFile
from engine.spec.yamlio import Path

TRAINNER_G = (
    "RRDB_net, esrgan, esrgan-lite, mrrdb_net, sr_resnet, pan_net, unet_128, unet_256, "
    "unet_net, resnet_6blocks, resnet_9blocks, resnet_net, wbcunet_net"
)
TRAINNER_D = (
    "discriminator_vgg_96, discriminator_vgg_128, discriminator_vgg_192, "
    "discriminator_vgg_256, discriminator_vgg, patchgan, nlayerdiscriminator, unet"
)
BASICSR_G = "RRDBNet (esrgan), MSRResNet, SRVGGNetCompact (compact)"
BASICSR_D = "VGGStyleDiscriminator, UNetDiscriminatorSN"


def _int(opts: OptionFile, path: Path, default: int) -> int:
    value = opts.take(*path, default=default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise opts.fail(path, f"expected a whole number, got {value!r}")
    return value


def _expect(opts: OptionFile, path: Path, allowed: tuple[Any, ...], reason: str) -> None:
    """Take an option whose only mappable values are ``allowed``; note any other."""
    value = opts.get(*path)
    if value is None:
        return
    norm = value.lower() if isinstance(value, str) else value
    if norm in allowed:
        opts.take(*path)
    else:
        opts.skip(path, f"{value!r} is not mapped: {reason}")


def _kind(opts: OptionFile, base: Path, keys: tuple[str, ...]) -> tuple[str, Path]:
    """The architecture's name: the section itself (a string) or its type key."""
    section = opts.get(*base)
    if isinstance(section, str):
        opts.take(*base)
        return section.lower(), base
    if not isinstance(section, dict):
        raise opts.fail(base, "expected a network name or a mapping with its type")
    for key in keys:
        if isinstance(section.get(key), str):
            opts.take(*base, key)
            return str(section[key]).lower(), (*base, key)
    raise opts.fail(base, f"no network type: give {' or '.join(keys)}")


# --- traiNNer ---------------------------------------------------------------------


def _trainner_rrdb(opts: OptionFile, b: Path, kind: str, scale: int) -> Net:
    nf, nb = {"esrgan-lite": (32, 12), "esrgan-anime-lite": (64, 6), "esrgan-mid": (64, 6)}.get(
        kind, (64, 23)
    )
    in_nc = _int(opts, (*b, "in_nc"), 3)
    net_scale = _int(opts, (*b, "scale"), scale)
    if net_scale not in (1, 2, 4, 8):
        raise opts.fail((*b, "scale"), f"Loom's RRDBNet runs at x1, x2, x4 or x8, not x{net_scale}")
    if net_scale in (1, 2):
        opts.note(
            b,
            f"traiNNer's RRDB_net upsamples {'once' if net_scale == 2 else 'never'} at "
            f"x{net_scale}; Loom's RRDBNet pixel-unshuffles the input and runs the x4 "
            "trunk (BasicSR's and traiNNer-redux's layout), so weights of that scale do "
            "not load",
        )
    params = {
        "nf": _int(opts, (*b, "nf"), nf),
        "nb": _int(opts, (*b, "nb"), nb),
        "gc": _int(opts, (*b, "gc"), 32),
        "in_nc": in_nc,
        "out_nc": _int(opts, (*b, "out_nc"), 3),
        "scale": net_scale,
    }
    _expect(opts, (*b, "norm_type"), (None,), "Loom's RRDBNet has no normalization layers")
    _expect(opts, (*b, "mode"), ("cna",), "without normalization only CNA order exists")
    _expect(opts, (*b, "nr"), (3,), "Loom's RRDB has three dense blocks")
    _expect(opts, (*b, "group"), (1,), "Loom's RRDB convs are not grouped")
    _expect(opts, (*b, "convtype"), ("conv2d",), "Loom's RRDBNet uses plain 2-D convolutions")
    for key in ("net_act", "act_type"):
        _expect(opts, (*b, key), ("leakyrelu", "lrelu"), "Loom's RRDBNet uses LeakyReLU 0.2")
    _expect(
        opts,
        (*b, "gaussian"),
        (False,),
        "ESRGAN+'s noise injection is not part of Loom's RRDBNet (the spec trains without it)",
    )
    _expect(opts, (*b, "plus"), (False,), "ESRGAN+'s extra 1x1 convs are not in Loom's RRDBNet")
    _expect(opts, (*b, "finalact"), (None,), "Loom's RRDBNet ends with its last conv")
    _expect(opts, (*b, "upsample_mode"), ("upconv",), "Loom's RRDBNet upsamples by nearest + conv")
    return Net("lib/esrgan.yaml", "RRDBNet", params, in_nc)


def srresnet_old(*, nf: int, nb: int, in_nc: int, out_nc: int, scale: int, act: str) -> Net:
    """traiNNer's sr_resnet (BasicSR's first SRResNet): like MSRResNet plus a conv after
    the residual blocks under a long skip, and no bilinear skip of the input; it is
    written inline from Loom's SRResBlock so that its parameter count is the peer's."""
    nodes: dict[str, Any] = {
        "conv_first": {"block": "conv", "in": "x", "out": "$nf"},
        "body": {"block": "SRResBlock", "repeat": "$nb", "in": "conv_first", "nf": "$nf"},
        "LR_conv": {"block": "conv", "in": "body", "out": "$nf"},
        "trunk": {"block": "add", "in": ["conv_first", "LR_conv"]},
    }
    last = "trunk"
    stages = [3] if scale == 3 else [2] * {1: 0, 2: 1, 4: 2, 8: 3}[scale]
    for i, factor in enumerate(stages, 1):
        nodes[f"upconv{i}"] = {"block": "conv", "in": last, "out": f"$nf * {factor * factor}"}
        nodes[f"shuffle{i}"] = {"block": "pixel_shuffle", "in": f"upconv{i}", "scale": factor}
        nodes[f"act{i}"] = {"block": "act", "in": f"shuffle{i}", "type": act}
        last = f"act{i}"
    nodes["HR_conv0"] = {"block": "conv", "in": last, "out": "$nf", "act": act}
    nodes["HR_conv1"] = {"block": "conv", "in": "HR_conv0", "out": out_nc}
    return Net(
        "lib/srresnet.yaml",
        None,
        {"nf": nf, "nb": nb},
        in_nc,
        nodes=nodes,
        outputs={"out": "HR_conv1"},
    )


def _trainner_srresnet(opts: OptionFile, b: Path, scale: int) -> Net:
    net_scale = _int(opts, (*b, "scale"), scale)
    if net_scale not in (1, 2, 3, 4, 8):
        raise opts.fail((*b, "scale"), f"sr_resnet runs at x1, x2, x3, x4 or x8, not x{net_scale}")
    act = "relu"
    for key in ("net_act", "act_type"):
        value = opts.get(*b, key)
        if isinstance(value, str) and value.lower() in ("relu", "leakyrelu", "lrelu"):
            opts.take(*b, key)
            act = "relu" if value.lower() == "relu" else "lrelu"
        elif value is not None:
            opts.skip((*b, key), f"{value!r} is not mapped: Loom writes ReLU or LeakyReLU here")
    _expect(opts, (*b, "norm_type"), (None,), "the written SRResNet has no normalization layers")
    _expect(opts, (*b, "mode"), ("cna",), "without normalization only CNA order exists")
    _expect(opts, (*b, "res_scale"), (1, 1.0), "the residual blocks add with weight 1")
    _expect(opts, (*b, "upsample_mode"), ("pixelshuffle",), "it upsamples by pixel shuffle")
    _expect(opts, (*b, "convtype"), ("conv2d",), "plain 2-D convolutions")
    _expect(opts, (*b, "finalact"), (None,), "it ends with its last conv")
    return srresnet_old(
        nf=_int(opts, (*b, "nf"), 64),
        nb=_int(opts, (*b, "nb"), 16),
        in_nc=_int(opts, (*b, "in_nc"), 3),
        out_nc=_int(opts, (*b, "out_nc"), 3),
        scale=net_scale,
        act=act,
    )


def _trainner_pan(opts: OptionFile, b: Path, scale: int) -> Net:
    in_nc = _int(opts, (*b, "in_nc"), 3)
    params: dict[str, Any] = {
        "nf": _int(opts, (*b, "nf"), 40),
        "unf": _int(opts, (*b, "unf"), 24),
        "nb": _int(opts, (*b, "nb"), 16),
        "in_nc": in_nc,
        "out_nc": _int(opts, (*b, "out_nc"), 3),
        "scale": _int(opts, (*b, "scale"), scale),
        "variant": "trainner",  # computes as traiNNer's pan_net, so its weights load
    }
    _expect(opts, (*b, "self_attention"), (False,), "Loom's PAN has no self-attention block")
    _expect(opts, (*b, "double_scpa"), (False,), "Loom's PAN has one SC-PA per trunk block")
    _expect(opts, (*b, "ups_inter_mode"), ("nearest",), "Loom's PAN upsamples by nearest")
    return Net("lib/pan.yaml", "PAN", params, in_nc)


def _trainner_unet(opts: OptionFile, b: Path, kind: str) -> Net:
    depth = {"unet_128": 7, "unet_256": 8, "unet_512": 9}.get(kind, 8)
    norm = str(opts.take(*b, "norm_type", default="batch")).lower()
    if norm not in ("batch", "instance", "none"):
        opts.skip((*b, "norm_type"), f"{norm!r} is not mapped: Loom's UNet takes batch or instance")
        norm = "batch"
    upsample = str(opts.take(*b, "upsample_mode", default="deconv")).lower()
    if upsample not in ("deconv", "upconv"):
        opts.skip((*b, "upsample_mode"), f"{upsample!r} is not mapped: deconv or upconv")
        upsample = "deconv"
    params = {
        "nf": _int(opts, (*b, "ngf"), _int(opts, (*b, "nf"), 64)),
        "depth": _int(opts, (*b, "num_downs"), depth),
        "norm": norm,
        "dropout": bool(opts.take(*b, "use_dropout", default=False)),
        "upsample": upsample,
        "out_nc": _int(opts, (*b, "out_nc"), 3),
    }
    return Net("lib/unet.yaml", "UNet", params, _int(opts, (*b, "in_nc"), 3))


def _trainner_resnet(opts: OptionFile, b: Path, kind: str) -> Net:
    blocks = 6 if kind == "resnet_6blocks" else 9
    _expect(opts, (*b, "norm_type"), ("instance",), "Loom's ResnetGenerator uses instance norm")
    _expect(opts, (*b, "use_dropout"), (False,), "Loom's ResnetGenerator has no dropout")
    _expect(opts, (*b, "padding_type"), ("reflect",), "Loom's ResnetGenerator pads by reflection")
    _expect(opts, (*b, "upsample_mode"), ("deconv",), "it upsamples by transposed convs")
    params = {
        "nf": _int(opts, (*b, "ngf"), _int(opts, (*b, "nf"), 64)),
        "n_blocks": _int(opts, (*b, "n_blocks"), blocks),
        "out_nc": _int(opts, (*b, "out_nc"), 3),
    }
    return Net("lib/image2image.yaml", "ResnetGenerator", params, _int(opts, (*b, "in_nc"), 3))


def wbc_generator(nf: int) -> Net:
    """WBC's U-Net with its guided filter on the output, as specs/wbc.yaml writes it."""
    nodes = {
        "unet": {"block": "WBCUNet", "in": "x", "nf": "$nf"},
        "filtered": {
            "block": "guided_filter",
            "in": {"x": "unet", "guide": "x"},
            "radius": 1,
            "eps": 2.5e-3,  # WBC's 1e-2 on [-1, 1] images
        },
    }
    return Net(
        "lib/image2image.yaml",
        None,
        {"nf": nf},
        3,
        nodes=nodes,
        outputs={"out": "filtered", "raw": "unet"},
    )


def trainner_generator(opts: OptionFile, scale: int) -> tuple[str, Net]:
    b: Path = ("network_G",)
    kind, at = _kind(opts, b, ("which_model_G", "type"))
    opts.take(*b, "strict")  # read with the pretrained path
    if kind in ("rrdb_net", "esrgan", "esrgan-lite", "esrgan-anime-lite", "esrgan-mid"):
        return kind, _trainner_rrdb(opts, b, kind, scale)
    if kind in ("mrrdb_net", "mesrgan"):
        return kind, _trainner_rrdb(opts, b, "esrgan", scale)
    if kind in ("sr_resnet", "srresnet", "srgan"):
        return kind, _trainner_srresnet(opts, b, scale)
    if kind in ("pan_net", "pan"):
        return kind, _trainner_pan(opts, b, scale)
    if "wbcunet" in kind:
        opts.skip((*b, "mode"), "Loom's WBCUNet is the PyTorch form of the network")
        return kind, wbc_generator(_int(opts, (*b, "nf"), 32))
    if "unet" in kind:
        return kind, _trainner_unet(opts, b, kind)
    if "resnet" in kind:
        return kind, _trainner_resnet(opts, b, kind)
    raise opts.fail(
        at, f"network '{kind}' has no Loom block to import to (Loom imports {TRAINNER_G})"
    )


def vgg_stages(crop: int) -> int | None:
    """The stride-2 stages of a VGG discriminator for ``crop`` (final maps 3x3 or 4x4)."""
    for stages in (4, 5, 6):
        if crop % 2**stages == 0 and crop // 2**stages in (3, 4):
            return stages
    return None


def _vgg(opts: OptionFile, b: Path, nf_key: str, in_key: str, crop: int, at: Path) -> Net:
    stages = vgg_stages(crop)
    if stages is None:
        raise opts.fail(
            at,
            f"a VGG discriminator needs a crop of 64, 96, 128, 192 or 256 (got {crop}); "
            "Loom's vgg block has 4, 5 or 6 stride-2 stages",
        )
    in_nc = _int(opts, (*b, in_key), 3)
    return Net(
        "lib/discriminators.yaml",
        "vgg",
        {"nf": _int(opts, (*b, nf_key), 64), "stages": stages},
        in_nc,
    )


def trainner_discriminator(opts: OptionFile, crop: int, *, wbc: bool = False) -> Net:
    b: Path = ("network_D",)
    kind, at = _kind(opts, b, ("which_model_D", "type"))
    opts.take(*b, "strict")
    if kind.startswith("discriminator_vgg") or kind in ("discriminator_192", "discriminator_256"):
        size = kind.removeprefix("discriminator_vgg").strip("_").removeprefix("_")
        size = size.removeprefix("discriminator_")
        crop_d = int(size) if size.isdigit() else _int(opts, (*b, "D_size"), crop)
        _expect(opts, (*b, "norm_type"), ("batch",), "Loom's vgg uses batch norm")
        _expect(opts, (*b, "mode"), ("cna",), "Loom's vgg runs conv, norm, activation")
        for key in ("act_type", "net_act"):
            _expect(opts, (*b, key), ("leakyrelu", "lrelu"), "Loom's vgg uses LeakyReLU 0.2")
        _expect(opts, (*b, "convtype"), ("conv2d",), "plain 2-D convolutions")
        opts.take(*b, "G_arch")
        net = _vgg(opts, b, "nf", "in_nc", crop_d, at)
        opts.note(
            at,
            "traiNNer's VGG discriminator gives its batch-normed convs a bias too; Loom's "
            "vgg (BasicSR's layout) has none: the same outputs (the norm removes a "
            "bias), 2,880 fewer parameters at nf 64",
        )
        return net
    if kind in ("patchgan", "nlayerdiscriminator"):
        norm = str(opts.take(*b, "norm_type", default="none" if wbc else "batch")).lower()
        if norm not in ("batch", "instance", "none"):
            opts.skip((*b, "norm_type"), f"{norm!r} is not mapped: batch, instance or none")
            norm = "batch"
        spectral = bool(opts.take(*b, "spectral_norm", default=opts.take(*b, "use_spectral_norm")))
        _expect(opts, (*b, "patch_output"), (True,), "Loom's patchgan gives one logit per patch")
        _expect(opts, (*b, "get_feats"), (False,), "feature matching is not imported")
        params = {
            "nf": _int(opts, (*b, "nf"), 64),
            "n_layers": _int(opts, (*b, "n_layers"), _int(opts, (*b, "nlayer"), 3)),
            "norm": norm,
            "spectral_norm": spectral,
        }
        return Net("lib/discriminators.yaml", "patchgan", params, _int(opts, (*b, "in_nc"), 3))
    if "unet" in kind:
        params = {
            "nf": _int(opts, (*b, "nf"), 64),
            "skip": bool(opts.take(*b, "skip_connection", default=True)),
        }
        return Net("lib/discriminators.yaml", "unet", params, _int(opts, (*b, "in_nc"), 3))
    raise opts.fail(at, f"discriminator '{kind}' has no Loom block (Loom imports {TRAINNER_D})")


# --- BasicSR and traiNNer-redux ---------------------------------------------------

_REDUX_COMPACT = {"compact": (64, 16), "ultracompact": (64, 8), "superultracompact": (24, 8)}


def basicsr_generator(opts: OptionFile, scale: int) -> tuple[str, Net]:
    b: Path = ("network_g",)
    kind, at = _kind(opts, b, ("type",))
    in_nc = _int(opts, (*b, "num_in_ch"), 3)
    out_nc = _int(opts, (*b, "num_out_ch"), 3)
    if kind in ("rrdbnet", "esrgan"):
        net_scale = _int(opts, (*b, "scale"), scale)
        if net_scale not in (1, 2, 4, 8):
            raise opts.fail(
                (*b, "scale"), f"Loom's RRDBNet runs at x1, x2, x4 or x8, not x{net_scale}"
            )
        _expect(
            opts,
            (*b, "use_pixel_unshuffle"),
            (True,),
            "Loom's RRDBNet always pixel-unshuffles at x1 and x2",
        )
        params = {
            "nf": _int(opts, (*b, "num_feat"), 64),
            "nb": _int(opts, (*b, "num_block"), 23),
            "gc": _int(opts, (*b, "num_grow_ch"), 32),
            "in_nc": in_nc,
            "out_nc": out_nc,
            "scale": net_scale,
        }
        return kind, Net("lib/esrgan.yaml", "RRDBNet", params, in_nc)
    if kind in ("msrresnet", "srresnet"):
        net_scale = _int(opts, (*b, "upscale"), scale)
        if net_scale not in (2, 3, 4):
            raise opts.fail(
                (*b, "upscale"), f"Loom's SRResNet runs at x2, x3 or x4, not x{net_scale}"
            )
        params = {
            "nf": _int(opts, (*b, "num_feat"), 64),
            "nb": _int(opts, (*b, "num_block"), 16),
            "scale": net_scale,
            "in_nc": in_nc,
            "out_nc": out_nc,
        }
        return kind, Net("lib/srresnet.yaml", "SRResNet", params, in_nc)
    if kind in ("srvggnetcompact", *_REDUX_COMPACT):
        nf, num_conv = _REDUX_COMPACT.get(kind, (64, 16))
        nf = _int(opts, (*b, "num_feat"), nf)
        num_conv = _int(opts, (*b, "num_conv"), num_conv)
        if num_conv not in (16, 32):
            raise opts.fail(
                at,
                f"a compact network with {num_conv} convs: Loom's SRVGGNetCompact has the "
                "released depths 16 and 32 (num_conv)",
            )
        act = str(opts.take(*b, "act_type", default="prelu")).lower()
        if act not in ("prelu", "relu", "lrelu", "leakyrelu"):
            raise opts.fail((*b, "act_type"), f"activation {act!r}: prelu, relu or leakyrelu")
        compact: dict[str, Any] = {
            "nf": nf,
            "num_conv": num_conv,
            "out_nc": out_nc,
            "scale": _int(opts, (*b, "upscale"), scale),
            "act": "lrelu" if act == "leakyrelu" else act,
        }
        return kind, Net("lib/srvgg.yaml", "SRVGGNetCompact", compact, in_nc)
    raise opts.fail(
        at, f"network '{kind}' has no Loom block to import to (Loom imports {BASICSR_G})"
    )


def basicsr_discriminator(opts: OptionFile, crop: int) -> Net:
    b: Path = ("network_d",)
    kind, at = _kind(opts, b, ("type",))
    if kind in ("vggstylediscriminator", "vggstylediscriminator128", "vgg"):
        size = _int(opts, (*b, "input_size"), 128 if kind.endswith("128") else crop)
        return _vgg(opts, b, "num_feat", "num_in_ch", size, at)
    if kind in ("unetdiscriminatorsn", "unet"):
        params = {
            "nf": _int(opts, (*b, "num_feat"), 64),
            "skip": bool(opts.take(*b, "skip_connection", default=True)),
        }
        return Net("lib/discriminators.yaml", "unet", params, _int(opts, (*b, "num_in_ch"), 3))
    raise opts.fail(at, f"discriminator '{kind}' has no Loom block (Loom imports {BASICSR_D})")
