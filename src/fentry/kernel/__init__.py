"""fentry and the running kernel's ftrace: where tracefs is (``mount``), and
what goes between the kernel's trace and fentry's.

This package runs in the ``fentry`` command, the outside process, never in
the traced program."""
