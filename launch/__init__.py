"""Launching training: sweep files expanded into cells, their process shapes, and Slurm job arrays."""
