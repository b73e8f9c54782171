"""DepthVLM: dense metric depth from a VLM's language backbone, in the same forward pass as the
text (arXiv 2605.15876, code hanxunyu/DepthVLM), on transformers' Qwen3-VL. See README.md."""
