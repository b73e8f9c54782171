"""VLM3: a standard VLM learns depth, correspondence, camera pose and object-level 3D as text
(Cai et al., arXiv 2605.30561).

`transformers`' Qwen3-VL unchanged; focal-length unification, text pixel references and a task
mixture (see README.md). Modules: `prompts` (coordinates, templates, parser), `data` (questions from
scenes), `model` (the VLM, tokenizer, label masking), `train`, `evaluate`, `reproduce`, `scaling`,
`demo`.
"""
