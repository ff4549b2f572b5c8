"""Models, registered by explicit import."""
from src.models.demo import MeanScaleDemo

__all__ = ["MeanScaleDemo"]
