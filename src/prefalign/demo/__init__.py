"""The end-to-end demo: positive-sentiment steering of SmolLM2 with simulated raters (``prefalign demo``)."""

from prefalign.demo.raters import DEFAULT_PANEL, Item, RaterProfile, position_effects, simulate_ratings

__all__ = ["DEFAULT_PANEL", "Item", "RaterProfile", "position_effects", "simulate_ratings"]
