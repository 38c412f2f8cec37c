"""Trainers: the tiny pair from scratch and the real pair as LoRA adapters over a base."""
