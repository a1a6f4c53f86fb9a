"""Reading raw traces, outside the traced process: ``fentry record``'s file,
``fentry report``'s text and exports, and the live output of ``fentry run``,
``attach`` and ``pipe`` (which are a recording read as it is written).

The traced process imports none of this.
"""
