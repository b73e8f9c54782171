"""Experiments about EndoGSim's pipeline; the package never imports them."""
