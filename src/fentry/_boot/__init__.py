"""Bootstrap directory put on PYTHONPATH by ``fentry run``: holds only ``sitecustomize``."""
