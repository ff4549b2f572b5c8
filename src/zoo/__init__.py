"""The image tokenizer zoo: tokenizers, an autoregressive class-to-image model, their trainers
and the tools of the tokenizer scripts. It builds on the codec packages (the VQGAN and its
quantizers in :mod:`src.models.vq`, :class:`~src.trainer.vqgan_trainer.VQGANTrainer`); nothing
outside ``src/zoo`` imports it (``tests/test_layering.py`` checks both).

- :mod:`src.zoo.tokenizers`: VQ-KD, the cluster tokenizer, the pixel decoder, the 1D tokenizer,
  their ViT parts and the frozen teachers;
- :mod:`src.zoo.ar`: LlamaGen's class-to-image transformer, its token dataset, sampling and FID;
- :mod:`src.zoo.trainers`: ``FeatureTokenizerTrainer``, ``PixelDecoderTrainer``,
  ``OneDTokenizerTrainer``, ``ARTrainer``;
- :mod:`src.zoo.tools`: load, reconstruct, tokenize, evaluate (``scripts/eval_tokenizer.py``,
  ``tokenize.py``, ``visualize_patches.py``, ``sample_ar.py``);
- :mod:`src.zoo.args`: the scripts' shared options, torch-free.

Importing this package imports nothing (so ``src.zoo.args`` stays torch-free);
:func:`register` puts the zoo's models, datasets and trainers in the registries of
:mod:`src.utils.registry` under the names the configs use.
"""


def register() -> None:
    """Register the zoo's models (MODELS), its token dataset (DATASETS) and its trainers
    (TRAINERS); imports torch. Calling it again does nothing."""
    import src.zoo.trainers  # noqa: F401  (imports src.zoo.tokenizers and src.zoo.ar too)
