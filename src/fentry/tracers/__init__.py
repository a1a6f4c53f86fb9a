"""tracers: nop, function and function_graph, the ring buffer and its readers."""
