"""Names a spec cannot give to network nodes, network inputs or training-graph nodes.

A network compiles into a torch module (an ``fx.GraphModule``) whose submodules are
named after its nodes, so that ``state_dict`` keys follow the spec, and whose generated
``forward`` takes its inputs as keyword arguments named after the network's inputs.
So a node cannot be named like an attribute torch modules already have (``half``,
``to``, ``train``: the submodule would collide with the method), nor be a Python
keyword or ``self`` (names in generated code); an input cannot be a keyword, ``self``,
a name the generated code uses itself (``torch``), or an argument the compiled network
takes besides its inputs (``reverse``, ``heat``). ``validate`` refuses them at the
name, instead of the compiler failing later with torch's words.

This module does not import torch (validation never does): the attribute names are
listed here, and ``tests/test_names.py`` checks the list against the installed torch.
"""

from __future__ import annotations

import keyword

__all__ = ["MODULE_ATTRIBUTES", "graph_node_problem", "input_problem", "node_problem"]

#: Public attributes of ``torch.nn.Module`` and of Loom's compiled network (an
#: ``fx.GraphModule``) that a submodule of the same name would collide with.
MODULE_ATTRIBUTES = frozenset(
    [
        "T_destination",
        "add_module",
        "add_submodule",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "check_inputs",
        "children",
        "code",
        "compile",
        "cpu",
        "cuda",
        "delete_all_unused_submodules",
        "delete_submodule",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "graph",
        "half",
        "ipu",
        "load_state_dict",
        "meta",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "padding",
        "parameters",
        "print_readable",
        "recompile",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "reverse_graph",
        "reverse_output",
        "set_extra_state",
        "set_reverse",
        "set_submodule",
        "shape_env",
        "share_memory",
        "size_guard",
        "state_dict",
        "to",
        "to_empty",
        "to_folder",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    ]
)

#: Names the generated code of a network uses itself (fx's globals), which an input
#: (a parameter of the generated ``forward``) would hide.
_CODE_GLOBALS = frozenset(
    {"torch", "operator", "device", "inf", "nan", "pytree", "fx_pytree", "NoneType"}
)
#: Keyword arguments of a compiled network's call besides its inputs.
_CALL_ARGUMENTS = frozenset({"reverse", "heat"})


_DATA = "'data' names the batch in references (data.KEY)"


def node_problem(name: str) -> str | None:
    """Why ``name`` cannot name a network node (a module in the compiled network), or
    None when it can."""
    if name == "data":
        return f"node name 'data' is reserved: {_DATA}; rename the node"
    if keyword.iskeyword(name) or name == "self":
        why = "a Python keyword" if name != "self" else "the network itself in Python"
        return (
            f"node name '{name}' is {why}, which the compiled network's generated code "
            f"cannot use for a node; rename the node (e.g. '{name}_')"
        )
    if name.startswith("_"):
        return (
            f"node name '{name}' starts with '_': torch modules keep their own state under "
            f"such names; rename the node (e.g. '{name.lstrip('_') or 'node'}')"
        )
    if name in MODULE_ATTRIBUTES:
        return (
            f"node name '{name}' is taken: the compiled network is a torch module, and its "
            f"attribute '{name}' would collide with a node of that name; rename the node "
            f"(e.g. '{name}_')"
        )
    return None


def input_problem(name: str) -> str | None:
    """Why ``name`` cannot name a network input (an argument of the compiled network's
    ``forward``), or None when it can."""
    if name == "data":
        return f"input name 'data' is reserved: {_DATA}; rename the input"
    if keyword.iskeyword(name):
        why = "a Python keyword"
    elif name == "self":
        why = "what the compiled network's generated code calls the network itself"
    elif name in _CODE_GLOBALS:
        why = "a name the compiled network's generated code uses"
    elif name in _CALL_ARGUMENTS:
        why = "an argument the compiled network takes besides its inputs (reverse calls)"
    else:
        return None
    return f"input name '{name}' is {why}; rename the input (e.g. '{name}_')"


def graph_node_problem(name: str) -> str | None:
    """Why ``name`` cannot name a training-graph node, or None when it can."""
    if name == "data":
        return f"graph node name 'data' is reserved: {_DATA}; rename the node"
    return None
