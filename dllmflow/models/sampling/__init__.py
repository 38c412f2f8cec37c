"""Samplers, separate from the models, behind one step-level interface (see base.py)."""

from .base import (
    MASK_GLYPH,
    STOP_REASONS,
    GenerationRequest,
    GenerationResult,
    ProgressEvent,
    Sampler,
    SequenceState,
)

__all__ = [
    "MASK_GLYPH",
    "STOP_REASONS",
    "GenerationRequest",
    "GenerationResult",
    "ProgressEvent",
    "Sampler",
    "SequenceState",
]
