"""The JSON Schema of a spec's skeleton: every section and key a spec may have.

Nodes (``block:`` entries in networks and composite blocks, ``loss:`` and ``op:``
entries in the training graph) are open here; the validator dispatches each node on
its block name to that block's own schema. ``editor_schema()`` adds that dispatch for
built-in blocks as ``if``/``then`` rules, so editors complete and check parameters
too; it is what ``python cli.py schema`` writes to ``schemas/spec.schema.json``.
"""

from __future__ import annotations

from typing import Any

from engine.data.kinds import KERNELS, KINDS
from engine.spec.inits import INIT_KEYS, INIT_TYPES

NAME = r"^[A-Za-z0-9_]+$"
REF = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"
GLOB = r"^[A-Za-z0-9_.*?\[\]-]+$"

#: Keys of the ``data:`` section's datasets → the ``data.<key>`` tensors they provide.
DATASET_PROVIDES: dict[str, tuple[str, ...]] = {name: k.provides for name, k in KINDS.items()}

#: ``torch.optim`` optimizers by their lower-case names.
OPTIMIZERS = (
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "lbfgs",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "sparseadam",
)

#: torch.optim.lr_scheduler classes usable as ``{type: torch, name: ..., options: {...}}``
#: (the ones driven by the step count alone).
TORCH_SCHEDULERS = (
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "PolynomialLR",
    "StepLR",
)

SCHEDULERS = (
    "torch",
    "constant",
    "multistep",
    "multistep_restarts",
    "step",
    "cosine",
    "cosine_restarts",
    "linear_decay",
    "exponential",
    "plateau",
    "onecycle",
)


def _obj(
    properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _map_of(value: dict[str, Any] | bool, key_pattern: str = NAME, **extra: Any) -> dict[str, Any]:
    """An object of named entries, each matching ``value`` (``True``: anything)."""
    return {
        "type": "object",
        "propertyNames": {"pattern": key_pattern},
        "additionalProperties": value,
        **extra,
    }


def _one_or_many(item: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}


POS_INT = {"type": "integer", "minimum": 1}
NONNEG_INT = {"type": "integer", "minimum": 0}
POS_NUMBER = {"type": "number", "exclusiveMinimum": 0}
EXPRESSION = {"type": "string", "pattern": r"^\$"}
ITER_OR_FRACTION = {
    "anyOf": [POS_INT, {"type": "number", "exclusiveMinimum": 0, "maximum": 1}],
    "description": "an iteration (integer) or a fraction of train.iterations (0 < x <= 1)",
}
REF_STR = {"type": "string", "pattern": REF}
INPUTS = {
    "description": "node input: a reference, a list (concatenated or positional), or port: ref",
    "anyOf": [
        REF_STR,
        {"type": "array", "items": REF_STR, "minItems": 1},
        _map_of(_one_or_many(REF_STR)),
    ],
}

PARAM_DECL = {
    "description": "a default value, or a typed declaration {type, default, min, max, choices}",
    "anyOf": [
        {"type": ["number", "string", "boolean", "array", "null"]},
        _obj(
            {
                "type": {"enum": ["int", "float", "bool", "str", "list", "any"]},
                "default": True,
                "min": {"type": "number"},
                "max": {"type": "number"},
                "choices": {"type": "array", "minItems": 1},
                "description": {"type": "string"},
            },
            ("type",),
        ),
    ],
}

_WHEN = {
    "anyOf": [{"type": "boolean"}, EXPRESSION],
    "description": "false: the node is left out and passes its first input through",
}
_REPEAT = {"anyOf": [{"type": "integer"}, EXPRESSION]}

INIT = {
    # Checked where expressions are known (engine/spec/inits.py), once, with the keys
    # each type reads; here only its shape, so that no mistake is reported twice.
    "description": "how the node's weights start: "
    + ", ".join(INIT_TYPES)
    + ", or {type, ...} with "
    + ", ".join(k for k in INIT_KEYS if k != "type"),
    "type": ["string", "object"],
}

#: The keys a block node and an item of a chain have alike.
_BLOCK_KEYS = {
    "block": {"type": "string", "minLength": 1},
    "repeat": _REPEAT,
    "when": _WHEN,
    "init": INIT,
}

CHAIN_ITEM = {
    "type": "object",
    "properties": {
        **_BLOCK_KEYS,
        "in": {**INPUTS, "description": "the item's inputs besides its first, by port name"},
        "as": {
            "type": "string",
            "pattern": NAME,
            "description": "a name for the item: CHAIN.NAME is its output",
        },
    },
    "required": ["block"],
    "additionalProperties": True,
}

NODE = {
    "type": "object",
    "properties": {
        **_BLOCK_KEYS,
        "in": INPUTS,
        "share": {
            "type": "string",
            "pattern": NAME,
            "description": "run this sibling node's modules again, with the same weights",
        },
        "chain": {
            "type": "array",
            "items": CHAIN_ITEM,
            "minItems": 1,
            "description": "items run one after another, numbered name.0, name.1, … "
            "as nn.Sequential numbers its layers",
        },
    },
    "anyOf": [{"required": ["block"]}, {"required": ["chain"]}, {"required": ["share"]}],
    "additionalProperties": True,
}

_OUTPUTS = {
    "output": REF_STR,
    "outputs": _map_of(REF_STR),
}

BLOCK_DEF = _obj(
    {
        "description": {"type": "string"},
        "params": _map_of(PARAM_DECL),
        "inputs": {"type": "array", "items": {"type": "string", "pattern": NAME}, "minItems": 1},
        "nodes": _map_of(NODE, minProperties=1),
        **_OUTPUTS,
    },
    ("inputs", "nodes"),
)

NETWORK = _obj(
    {
        "description": {"type": "string"},
        "use": {"type": "string", "minLength": 1},
        "inputs": _map_of({**POS_INT, "description": "input channels"}),
        "params": _map_of(True),
        "nodes": _map_of(NODE, minProperties=1),
        "trainable": {"type": "boolean", "default": True},
        "flow": {
            "type": "string",
            "pattern": NAME,
            "description": "the input an invertible network (a normalizing flow) transforms; "
            "its outputs are the latents and 'logdet', and 'call: …, reverse: true' runs it "
            "backwards",
        },
        "pad": {
            "enum": ["reflect", "replicate", "zeros"],
            "description": "pad inputs of other sizes to the network's size multiple "
            "this way, and crop the outputs back (as spandrel runs such models)",
        },
        "pretrained": _obj(
            {
                "path": {"type": "string", "minLength": 1},
                "strict": {"type": "boolean", "default": True},
                "key_map": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "null"]},
                    "description": "rename the file's keys first: FROM: TO on dotted "
                    "prefixes, * one segment, TO null leaves the key out",
                },
            },
            ("path",),
            description="weights to start from (.pth/.safetensors; old and new ESRGAN layouts)",
        ),
        **_OUTPUTS,
    },
)

GRAPH_NODE = {
    "type": "object",
    "properties": {
        "call": {"type": "string", "pattern": NAME},
        "loss": {"type": "string", "pattern": NAME},
        "op": {"type": "string", "pattern": NAME},
        "in": INPUTS,
        "reverse": {
            "type": "boolean",
            "description": "with call: run an invertible network backwards, from its latents",
        },
        "heat": {
            "type": "number",
            "minimum": 0,
            "description": "with reverse: the temperature latents not given are drawn at "
            "(z ~ N(0, heat²)); default 1",
        },
    },
    "additionalProperties": True,
}

SCHEDULER = _obj(
    {
        "type": {"enum": list(SCHEDULERS)},
        "milestones": {"type": "array", "items": ITER_OR_FRACTION},
        "gamma": POS_NUMBER,
        "step_size": ITER_OR_FRACTION,
        "periods": {"type": "array", "items": ITER_OR_FRACTION},
        "restart_weights": {"type": "array", "items": {"type": "number", "minimum": 0}},
        "eta_min": {"type": "number", "minimum": 0},
        "start": ITER_OR_FRACTION,
        "warmup": NONNEG_INT,
        "metric": {"type": "string"},
        "mode": {"enum": ["min", "max"]},
        "patience": NONNEG_INT,
        "max_lr": POS_NUMBER,
        "name": {"enum": list(TORCH_SCHEDULERS), "description": "with type: torch"},
        "options": {"type": "object", "description": "keyword arguments of the torch scheduler"},
    },
    ("type",),
)

PARAM_SELECTOR = _one_or_many({"type": "string", "pattern": GLOB})

OPTIMIZER = _obj(
    {
        "type": {
            "type": "string",
            "description": "a torch.optim optimizer name (adam, adamw, sgd, …)",
        },
        "params": PARAM_SELECTOR,
        "lr": POS_NUMBER,
        "betas": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "eps": POS_NUMBER,
        "weight_decay": {"type": "number", "minimum": 0},
        "momentum": {"type": "number", "minimum": 0},
        "nesterov": {"type": "boolean"},
        "amsgrad": {"type": "boolean"},
        "options": {"type": "object", "description": "other keyword arguments of the optimizer"},
        "groups": {
            "type": "array",
            "items": _obj(
                {
                    "params": PARAM_SELECTOR,
                    "lr": POS_NUMBER,
                    "weight_decay": {"type": "number", "minimum": 0},
                    "hold": {
                        "type": "array",
                        "items": {
                            "anyOf": [NONNEG_INT, ITER_OR_FRACTION["anyOf"][1]],
                            "description": "an iteration (0 is the first) or a fraction",
                        },
                        "minItems": 2,
                        "maxItems": 2,
                        "description": "[from, until]: the group is not stepped in these "
                        "iterations",
                    },
                },
                ("params",),
            ),
        },
        "scheduler": SCHEDULER,
        "clip": _obj({"norm": POS_NUMBER, "value": POS_NUMBER}),
    },
    ("type", "params", "lr"),
)

NUMBER_OR_EXPRESSION = {"anyOf": [{"type": "number"}, EXPRESSION]}

WEIGHT = {
    "anyOf": [
        {"type": "number"},
        EXPRESSION,
        _obj(
            {"from": NUMBER_OR_EXPRESSION, "to": NUMBER_OR_EXPRESSION, "over": ITER_OR_FRACTION},
            ("from", "to", "over"),
            description="a weight ramped linearly from the start of the phase",
        ),
    ]
}

STEP = _obj(
    {
        "optimizer": {"type": "string", "pattern": NAME},
        "minimize": _map_of(WEIGHT, minProperties=1),
        "every": {**POS_INT, "description": "step once every N iterations (update ratio)"},
        "start": {**NONNEG_INT, "description": "iterations into the phase before the first step"},
        "accumulate": {**POS_INT, "description": "batches per optimizer step (virtual batch)"},
    },
    ("optimizer", "minimize"),
)

PHASE = _obj(
    {
        "name": {"type": "string", "pattern": NAME},
        "description": {"type": "string"},
        "until": {
            "anyOf": [NONNEG_INT, {"type": "number", "exclusiveMinimum": 0, "maximum": 1}],
            "description": "where the phase ends: an iteration or a fraction of "
            "train.iterations; the previous phase's end (0 for the first) leaves it empty",
        },
        "frozen": {"type": "array", "items": {"type": "string", "pattern": GLOB}},
        "lr": _map_of(POS_NUMBER),
        "steps": {"type": "array", "items": STEP, "minItems": 1},
        "validation": _obj(
            {"output": REF_STR},
            ("output",),
            description="what validation evaluates while this phase runs",
        ),
    },
    ("name", "steps"),
)

TRAIN = _obj(
    {
        "iterations": POS_INT,
        "seed": NONNEG_INT,
        "precision": {"enum": ["fp32", "fp16", "bf16"]},
        "channels_last": {"type": "boolean"},
        "compile": {"type": "boolean"},
        "tf32": {"type": "boolean"},
        "ema": _obj(
            {
                "networks": {"type": "array", "items": {"type": "string", "pattern": NAME}},
                "decay": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "start": NONNEG_INT,
            },
            ("networks",),
        ),
        "max_bad_steps": POS_INT,
        "phases": {"type": "array", "items": PHASE, "minItems": 1},
    },
    ("iterations", "phases"),
)

FOLDERS = _one_or_many(
    {
        "type": "string",
        "minLength": 1,
        "description": "a folder (relative to the spec's folder, then the working directory) "
        "or builtin:NAME (photos, edges, cartoon, pans, segments; _faces/_scenery; /train, /val, "
        "/all)",
    }
)

# -- the data section's degradation steps (engine/data/degrade.py runs them) ------------
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_RANGE = {
    "description": "a number, or [low, high] drawn uniformly per sample",
    "anyOf": [
        {"type": "number"},
        {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    ],
}


def _choice(names: tuple[str, ...]) -> dict[str, Any]:
    """A name, or {name: weight} drawn by weight per sample."""
    return {
        "anyOf": [
            {"enum": list(names)},
            {
                "type": "object",
                "propertyNames": {"enum": list(names)},
                "additionalProperties": POS_NUMBER,
                "minProperties": 1,
            },
        ]
    }


#: Kinds of blur and noise the degradation pipeline implements (engine/data/degrade.py).
BLUR_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
    "box",
    "motion",
    "sinc",
)
NOISE_TYPES = ("gaussian", "poisson", "speckle", "salt_pepper")

_DEGRADATION_PARAMS: dict[str, dict[str, Any]] = {
    "blur": {
        "type": _choice(BLUR_TYPES),
        "size": _RANGE,
        "sigma": _RANGE,
        "angle": _RANGE,
        "beta": _RANGE,
        "cutoff": _RANGE,
    },
    "noise": {
        "type": _choice(NOISE_TYPES),
        "sigma": _RANGE,
        "poisson_scale": _RANGE,
        "speckle": _RANGE,
        "amount": _RANGE,
        "gray_prob": _PROB,
    },
    "jpeg": {"quality": _RANGE},
    "resize": {
        "scale": _RANGE,
        "updown": _obj(
            {
                "up": {"type": "number", "minimum": 0},
                "down": {"type": "number", "minimum": 0},
                "keep": {"type": "number", "minimum": 0},
            }
        ),
        "kernel": _choice(("nearest", "bilinear", "bicubic", "lanczos", "area")),
        "to": {"const": "lr", "description": "resize to the final LR size"},
    },
    "sharpen": {"amount": _RANGE, "sigma": _RANGE, "threshold": {"type": "number", "minimum": 0}},
}
_KIND_STEP = {
    "properties": {"kind": {"enum": list(_DEGRADATION_PARAMS)}},
    "allOf": [
        {
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": _obj({"kind": {"const": kind}, "prob": _PROB, **params}),
        }
        for kind, params in _DEGRADATION_PARAMS.items()
    ],
}
_KINDS_STEP = _obj(
    {
        "kinds": {
            "type": "object",
            "propertyNames": {"enum": list(_DEGRADATION_PARAMS)},
            "additionalProperties": POS_NUMBER,
            "minProperties": 1,
            "description": "{kind: weight}: one kind is drawn per sample",
        },
        "prob": _PROB,
        **{kind: _obj(params) for kind, params in _DEGRADATION_PARAMS.items()},
    },
    ("kinds",),
)


def _degradation_step(*, nested: bool) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"if": {"required": ["kind"]}, "then": _KIND_STEP},
        {"if": {"required": ["kinds"]}, "then": _KINDS_STEP},
    ]
    forms = [{"required": ["kind"]}, {"required": ["kinds"]}]
    if not nested:
        option = _obj(
            {
                "weight": POS_NUMBER,
                "steps": {"type": "array", "items": _degradation_step(nested=True)},
            },
            ("steps",),
        )
        rules.append(
            {
                "if": {"required": ["one_of"]},
                "then": _obj(
                    {"one_of": {"type": "array", "items": option, "minItems": 1}, "prob": _PROB},
                    ("one_of",),
                ),
            }
        )
        forms.append({"required": ["one_of"]})
    rules.append({"if": {"not": {"anyOf": forms}}, "then": {"required": ["kind"]}})
    return {"type": "object", "allOf": rules}


DATASET = _obj(
    {
        "type": {"enum": list(KINDS)},
        "hr": FOLDERS,
        "lr": FOLDERS,
        "seg": {
            **FOLDERS,
            "description": "probability maps (.npy, .pt, .pth) matched to hr by stem (sr_seg)",
        },
        "A": FOLDERS,
        "B": FOLDERS,
        "folder": FOLDERS,
        "weights": {
            "type": "array",
            "items": POS_NUMBER,
            "description": "sampling weight of each folder of a side that lists several",
        },
        "subset": {"type": "string", "minLength": 1, "description": "a file listing stems"},
        "batch_size": POS_INT,
        "preprocess": {
            "enum": [
                "none",
                "crop",
                "center_crop",
                "resize",
                "scale_width",
                "scale_shortside",
                *(
                    f"{r}_and_{c}"
                    for r in ("resize", "scale_width", "scale_shortside")
                    for c in ("crop", "center_crop")
                ),
            ],
            "description": "a resize mode and/or a crop mode, joined with _and_",
        },
        "load_size": POS_INT,
        "crop_size": {**POS_INT, "description": "crop of the target (HR) side"},
        "lr_crop_size": {**POS_INT, "description": "crop of the LR side (sr, sr_seg, frames)"},
        "flip": {"type": "boolean"},
        "rotate": {"type": "boolean"},
        "frames": POS_INT,
        "frame_skip": {
            "anyOf": [POS_INT, {"type": "array", "items": POS_INT, "minItems": 2, "maxItems": 2}]
        },
        "reverse": {"type": "boolean"},
        "channel_reverse": {
            "type": "boolean",
            "description": "interp: RGB to BGR for all three frames, half of the time",
        },
        "resize_kernel": {"enum": list(KERNELS)},
        "degradations": {"type": "array", "items": _degradation_step(nested=False)},
        "max_size": POS_INT,
        "workers": NONNEG_INT,
        "on_bad_image": {"enum": ["error", "skip"]},
        "max_megapixels": {
            **POS_NUMBER,
            "description": "refuse images whose header declares more megapixels (default 200)",
        },
        "channels": {"enum": [1, 3, 4]},
        "seg_classes": {
            "type": "integer",
            "minimum": 2,
            "description": "channels of the sr_seg probability maps (SFTGAN: 8)",
        },
    },
    ("type",),
)

SPEC: dict[str, Any] = {
    "type": "object",
    "title": "Loom spec",
    "properties": {
        "spec": {"const": 1, "description": "spec language version"},
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
        "description": {"type": "string"},
        "extends": _one_or_many({"type": "string", "minLength": 1}),
        "imports": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "scale": {"type": "integer", "minimum": 1, "maximum": 16},
        "params": _map_of(True),
        "blocks": _map_of(BLOCK_DEF),
        "networks": _map_of(NETWORK, minProperties=1),
        "graph": _map_of(GRAPH_NODE, minProperties=1),
        "optimizers": _map_of(OPTIMIZER, minProperties=1),
        "train": TRAIN,
        "data": _obj({"train": DATASET, "val": DATASET}, ("train",)),
        "validation": _obj(
            {
                "every": POS_INT,
                "output": REF_STR,
                "input": REF_STR,
                "target": REF_STR,
                "metrics": {"type": "array", "items": {"enum": ["psnr", "ssim", "lpips"]}},
                "y_channel": {"type": "boolean"},
                "crop_border": {"anyOf": [NONNEG_INT, {"type": "null"}]},
                "tile": {"anyOf": [POS_INT, {"type": "null"}]},
                "samples": NONNEG_INT,
                "heats": {
                    "type": "array",
                    "items": {"type": "number", "minimum": 0},
                    "minItems": 1,
                    "description": "heats at which a reverse call's output is sampled",
                },
                "n_sample": {**POS_INT, "description": "draws per image at each heat"},
            },
            ("every", "output"),
        ),
        "logging": _obj(
            {
                "every": POS_INT,
                "trackers": {
                    "type": "array",
                    "items": {"enum": ["tensorboard", "wandb", "mlflow", "aim"]},
                    "description": "experiment trackers, through Accelerate's",
                },
                "tensorboard": {"type": "boolean"},
            }
        ),
        "checkpoints": _obj({"every": POS_INT, "keep": POS_INT}),
    },
    "required": ["spec", "name", "networks"],
    "additionalProperties": False,
}

#: Top-level sections a *library* file (``specs/lib/*.yaml``) may have.
LIBRARY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {"const": 1},
        "description": {"type": "string"},
        "imports": SPEC["properties"]["imports"],
        "blocks": SPEC["properties"]["blocks"],
    },
    "required": ["blocks"],
    "additionalProperties": False,
}


def editor_schema(block_schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The skeleton plus dispatch of built-in nodes to their block schemas, for editors."""
    import copy

    schema = copy.deepcopy(SPEC)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "spec.schema.json"
    rules: list[dict[str, Any]] = [
        {
            "if": {"properties": {key: {"const": name}}, "required": [key]},
            "then": {"$ref": f"blocks/{name}.json"},
        }
        for name, block in sorted(block_schemas.items())
        for key in _dispatch_keys(block["x-loom"]["kind"])
    ]
    node_rules = [r for r in rules if "block" in r["if"]["required"]]
    graph_rules = [r for r in rules if "block" not in r["if"]["required"]]
    for section in ("networks", "blocks"):
        nodes = schema["properties"][section]["additionalProperties"]["properties"]["nodes"]
        nodes["additionalProperties"] = {**NODE, "allOf": node_rules}
    schema["properties"]["graph"]["additionalProperties"] = {**GRAPH_NODE, "allOf": graph_rules}
    return schema


def _dispatch_keys(kind: str) -> tuple[str, ...]:
    return {"module": ("block", "op"), "op": ("block", "op"), "loss": ("loss",)}[kind]
