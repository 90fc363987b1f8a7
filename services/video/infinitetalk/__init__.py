"""InfiniteTalk video backend: diffusers' Wan2.1-I2V DiT + InfiniteTalk audio modules, official checkpoints."""
