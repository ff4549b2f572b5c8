"""VQ tokenizers: the taming-compatible VQGAN and the quantizers (VQ, CVQ-VAE, FSQ, LFQ)."""
from .backbone import AttnBlock, Decoder, Encoder, ResnetBlock
from .quantizers import (FSQ, FSQ_LEVELS, LFQ, QUANTIZERS, ClusteredVectorQuantizer,
                         QuantizerOutput, VectorQuantizer, build_quantizer, codebook_usage,
                         fsq_levels, usage_from_counts)
from .vqgan import (DDCONFIG_KEYS, OFFICIAL_CONFIGS, VQGAN, build_pretrained_vq_model,
                    expected_checkpoint_name, load_checkpoint_file, reconstruct, vq_state_dict)

__all__ = [
    "AttnBlock", "Decoder", "Encoder", "ResnetBlock",
    "FSQ", "FSQ_LEVELS", "LFQ", "QUANTIZERS", "ClusteredVectorQuantizer", "QuantizerOutput",
    "VectorQuantizer", "build_quantizer", "codebook_usage", "fsq_levels", "usage_from_counts",
    "DDCONFIG_KEYS", "OFFICIAL_CONFIGS", "VQGAN", "build_pretrained_vq_model",
    "expected_checkpoint_name", "load_checkpoint_file", "reconstruct", "vq_state_dict",
]
