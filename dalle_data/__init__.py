"""dalle-data: class names in, labeled and CLIP-filtered synthetic image datasets out."""

__version__ = "0.1.0"
