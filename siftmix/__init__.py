"""siftmix: a GPT-3-style pretraining data pipeline on Ray."""

__version__ = "0.1.0"
