"""The study and its confirmation: which configuration a command runs with (resolve), the
pre-flight check (preflight), the sweep itself (sweep) and the re-training of its best
configurations with fresh seeds (confirm)."""

from sweeper.lazy import public_surface

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "confirm": ["check_arguments", "run_confirmation", "run_pending_confirmation"],
    "preflight": ["checkpoint_bytes"],
    "resolve": ["locate_study", "resolve_study", "typed_overrides"],
    "sweep": ["create_study", "load_existing_study", "preflight_with_notices", "run_study"],
}
__all__, __getattr__ = public_surface(__name__, _SURFACE)
