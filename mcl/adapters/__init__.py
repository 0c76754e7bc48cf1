"""Adapter layers that strategies put into backbone linear layers (beside peft's own LoRA)."""
