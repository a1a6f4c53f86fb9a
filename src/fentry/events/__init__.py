"""events: probe events (kprobe_events grammar, fetchargs, types), filters, profile."""
