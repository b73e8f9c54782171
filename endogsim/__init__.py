"""EndoGSim: endoscopic 4D Gaussian splatting with an LLM-initialised, MPM-refined material field.

Not implemented yet: `make reproduce-endogsim` says so and exits non-zero.
"""
