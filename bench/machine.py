"""The machine line for the bench scripts: one copy, in the package (``safety_governor.machine``),
which the decision-quality benchmark (``eval``) prints too."""

from safety_governor.machine import cpu_model, describe_machine

__all__ = ["cpu_model", "describe_machine"]
