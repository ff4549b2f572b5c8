"""The tokenizer zoo beyond VQGAN: VQ-KD (BEiT v2), Cluster (online k-means of teacher features),
pixel decoders for both, the frozen teachers they distil, and the two-stage 1D tokenizer.
Importing registers ``VQKD``, ``ClusterTokenizer``, ``PixelDecoder`` and ``OneDTokenizer`` in
``MODELS``."""
from .cluster import ClusterTokenizer
from .ema_quantizer import EMACosineQuantizer
from .onedim import OneDTokenizer
from .pixel_decoder import PixelDecoder
from .teachers import (TEACHERS, FrozenTeacher, TeacherUnavailable, build_teacher, missing_teacher_message,
                       teacher_dim)
from .vit import ViTEncoder, causal_mask
from .vqkd import VQKD

__all__ = ["ClusterTokenizer", "EMACosineQuantizer", "OneDTokenizer", "PixelDecoder", "TEACHERS", "FrozenTeacher",
           "TeacherUnavailable", "build_teacher", "missing_teacher_message", "teacher_dim", "ViTEncoder",
           "causal_mask", "VQKD"]
