"""G2VLM: a geometry-grounded VLM for 3D reconstruction and spatial reasoning (arXiv 2511.21688).

Not implemented yet: `make reproduce-g2vlm` says so and exits non-zero.
"""
