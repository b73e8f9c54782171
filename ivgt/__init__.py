"""IVGT: implicit visual geometry transformer (arXiv 2605.16258).

Not implemented yet: `make reproduce-ivgt` says so and exits non-zero.
"""
