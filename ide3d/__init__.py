"""3D-IDE: 3D perception emerging in a video VLM's visual encoder (arXiv 2604.03296).

Not implemented yet: `make reproduce-ide3d` says so and exits non-zero.
"""
