"""The proposal network: a Llama-style class-to-image transformer over tokenizer indices (LlamaGen),
its sampler (classifier-free guidance, top-k, top-p) and its pre-tokenized dataset. Importing
registers ``LlamaC2I`` in ``MODELS`` and ``TokenDataset`` in ``DATASETS``."""
from .data import TokenDataset, collate_tokens
from .llama import LlamaC2I, RMSNorm
from .sampling import filter_logits, sample

__all__ = ["TokenDataset", "collate_tokens", "LlamaC2I", "RMSNorm", "filter_logits", "sample"]
