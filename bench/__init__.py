"""Baselines that tinystory's bench command compares against (each run as a subprocess)."""
