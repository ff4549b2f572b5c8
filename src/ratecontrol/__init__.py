"""Rate control for DC-VIC (stage 2): validation crops, beta_rate search, beta-pair selection.

* :mod:`~src.ratecontrol.valset`: the seeded crop set with cached VQ indices;
* :mod:`~src.ratecontrol.search`: bisection and batched bracket+interpolation searches;
* :mod:`~src.ratecontrol.rate`: mean bpp of the set for K beta_rate values per pass;
* :mod:`~src.ratecontrol.quality`: PSNR / patch FID of a beta pair;
* :mod:`~src.ratecontrol.selection`: score = alpha*PSNR - FID, selection table,
  :func:`betas_for_target_bpp` for ``compress.py --target_bpp``.
"""
from src.ratecontrol.search import BppCurve, SearchResult, batched_search, bisection_search
from src.ratecontrol.selection import betas_for_target_bpp, select_betas, yaml_snippet

__all__ = ["BppCurve", "SearchResult", "batched_search", "bisection_search",
           "betas_for_target_bpp", "select_betas", "yaml_snippet"]
