"""The built-in blocks; importing this package registers all of them.

One module per concern: ``layers`` holds the shared norm/activation factories (not
blocks), the others each register a family of blocks.
"""

from blocks.builtin import (
    arith,
    attention,
    axes,
    conv,
    conv3d,
    flow,
    image_ops,
    losses,
    losses_class,
    losses_extra,
    losses_flow,
    losses_rife,
    losses_video,
    math_ops,
    shape,
    tensors,
    warp,
    windows,
    zoo_ops,
)

__all__ = [
    "arith",
    "attention",
    "axes",
    "conv",
    "conv3d",
    "flow",
    "image_ops",
    "losses",
    "losses_class",
    "losses_extra",
    "losses_flow",
    "losses_rife",
    "losses_video",
    "math_ops",
    "shape",
    "tensors",
    "warp",
    "windows",
    "zoo_ops",
]
