"""VLM3: a standard VLM learns 3D tasks as text (arXiv 2605.30561).

Not implemented yet: `make reproduce-vlm3` says so and exits non-zero.
"""
