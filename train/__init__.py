"""Fine-tuning: the SFT recipe (train/sft.py), DeepSpeed configs and presets, and run.sh."""
