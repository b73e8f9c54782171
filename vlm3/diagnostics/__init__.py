"""Experiments and probes about VLM3; the product (`vlm3.*` outside this folder) never imports them.

- `rendered`: views rendered from the scene annotations (a camera turned in place, a crop window
  moved), the questions and lessons built on them (`--turn-pairs`, `--corr-shift`);
- `two_view`: the held-out two-view metrics per camera path, on turned pairs or on moved copies;
- `probe`: can a random-weight model of a config learn the spatial skills the two-view tasks need?

What they measured is in DIAGNOSTICS.md beside this file.
"""
