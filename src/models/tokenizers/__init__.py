"""The tokenizer zoo beyond VQGAN: VQ-KD (BEiT v2), Cluster (online k-means of teacher features),
pixel decoders for both, and the frozen teachers they distil. Importing registers ``VQKD``,
``ClusterTokenizer`` and ``PixelDecoder`` in ``MODELS``."""
from .cluster import ClusterTokenizer
from .ema_quantizer import EMACosineQuantizer
from .pixel_decoder import PixelDecoder
from .teachers import (TEACHERS, FrozenTeacher, TeacherUnavailable, build_teacher, missing_teacher_message,
                       teacher_dim)
from .vit import ViTEncoder, causal_mask
from .vqkd import VQKD

__all__ = ["ClusterTokenizer", "EMACosineQuantizer", "PixelDecoder", "TEACHERS", "FrozenTeacher",
           "TeacherUnavailable", "build_teacher", "missing_teacher_message", "teacher_dim", "ViTEncoder",
           "causal_mask", "VQKD"]
