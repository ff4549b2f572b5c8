from src.data.datasets import ImageDataset, build_dataset, collate_images, export_sample_photos
from src.data.sampler import ResumableSampler

__all__ = ["ImageDataset", "ResumableSampler", "build_dataset", "collate_images", "export_sample_photos"]
