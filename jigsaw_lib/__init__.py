"""Jigsaw puzzles for studying SFT vs RFT forgetting in Qwen2.5-VL (arXiv 2506.23508)."""
