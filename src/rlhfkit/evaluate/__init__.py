"""Evaluation: refusal rates on harmful and safe-looking prompts, and the helpful-harmless
trade-off frontier (``tradeoff``)."""
