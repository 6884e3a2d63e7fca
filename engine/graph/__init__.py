"""Graphs: composite blocks and repeats expanded into one networkx graph per network."""
