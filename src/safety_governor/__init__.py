"""Safety Governor: a deterministic safety layer between AI remediation plans and production."""

from .config import GatePolicy, Settings
from .gate import decide
from .models import (
    ClaimEvidence,
    CompressOutput,
    GateOutput,
    Incident,
    PlanOutput,
    RunRecord,
    StressOutput,
    StressReport,
)
from .pipeline import ReliabilityLayerAgent

__version__ = "0.1.0"

__all__ = [
    "ClaimEvidence",
    "CompressOutput",
    "GateOutput",
    "GatePolicy",
    "Incident",
    "PlanOutput",
    "ReliabilityLayerAgent",
    "RunRecord",
    "Settings",
    "StressOutput",
    "StressReport",
    "decide",
]
