"""Compilation: expanded networks into ``torch.fx.GraphModule``s (imports torch)."""
