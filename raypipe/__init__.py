"""raypipe: distributed training of land-cover models for cloud-prone regions on Ray."""
__version__ = "0.1.0"
