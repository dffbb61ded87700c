"""tcurseg: parameter-efficient fine-tuning (tCURLoRA and baselines) of 3D medical segmentation networks."""

__version__ = "0.1.0"
