r"""Diagnostics of the failure modes of message passing, each usable on its own:
over-smoothing (Dirichlet energy), over-squashing (Jacobian sensitivity, path
counts, effective resistance, spectral gap), attention sinks and the runway of
causal masking."""
from graphformer.diagnostics.attention import (
    attention_sink_score,
    attention_to_position,
)
from graphformer.diagnostics.sensitivity import (
    SensitivityProfile,
    jacobian_sensitivity,
    runway_profile,
    sensitivity_vs_distance,
)
from graphformer.diagnostics.smoothing import (
    dirichlet_energy,
    dirichlet_energy_per_layer,
)
from graphformer.diagnostics.topology import (
    causal_path_counts,
    effective_resistance,
    hop_distance,
    path_counts,
    spectral_gap,
)

__all__ = [
    'dirichlet_energy',
    'dirichlet_energy_per_layer',
    'jacobian_sensitivity',
    'sensitivity_vs_distance',
    'SensitivityProfile',
    'runway_profile',
    'hop_distance',
    'path_counts',
    'causal_path_counts',
    'effective_resistance',
    'spectral_gap',
    'attention_to_position',
    'attention_sink_score',
]
