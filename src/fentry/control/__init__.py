"""control: the tracefs surface, and the agent that serves it."""
