"""Quantizers: one return type, straight-through gradients, inverses, CVQ dead-code revival,
FSQ grid, LFQ entropy terms."""
import math

import pytest
import torch

from src.models.vq.quantizers import (FSQ, LFQ, ClusteredVectorQuantizer, QuantizerOutput,
                                      VectorQuantizer, build_quantizer, codebook_usage,
                                      fsq_levels)


def _check_output(out, z, index_shape, codebook_size):
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape
    assert out.indices.shape == index_shape and out.indices.dtype == torch.long
    assert 0 <= int(out.indices.min()) and int(out.indices.max()) < codebook_size
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert {"usage", "perplexity", "entropy"} <= set(out.stats)


def _grad_reaches_input(quantizer, z):
    z = z.clone().requires_grad_(True)
    quantizer(z).quantized.pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    return z.grad


@pytest.mark.parametrize("name,kw,size", [
    ("vq", dict(codebook_size=32, dim=8), 32),
    ("vq", dict(codebook_size=32, dim=8, distance="cos"), 32),
    ("cvq", dict(codebook_size=32, dim=8), 32),
    ("fsq", dict(levels=[8, 5, 5, 5], dim=8), 1000),
    ("lfq", dict(codebook_size=256, dim=8), 256),
])
def test_common_contract(name, kw, size):
    torch.manual_seed(0)
    q = build_quantizer(type=name, **kw)
    z = torch.randn(2, 8, 5, 6)
    _check_output(q(z), z, (2, 5, 6), size)
    _grad_reaches_input(q, z)
    seq = torch.randn(3, 8, 7)  # (B, C, T) works too
    assert q(seq).indices.shape == (3, 7)


def test_build_quantizer_errors_list_names():
    with pytest.raises(KeyError, match="vq, cvq, fsq, lfq"):
        build_quantizer(type="rvq")
    assert isinstance(build_quantizer(type="FSQ", levels=[3, 3]), FSQ)


def test_vq_l2_nearest_code_and_straight_through():
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4)
    torch.nn.init.normal_(q.embedding.weight)
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(out.indices.reshape(-1), torch.cdist(flat, q.embedding.weight).argmin(1))
    assert torch.allclose(q.indices_to_codes(out.indices), out.quantized, atol=1e-6)
    z.requires_grad_(True)
    q(z).quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # identity gradient
    # loss weighting: beta on the commitment term, or on the codebook term (taming legacy)
    terms = out.losses
    assert torch.allclose(out.loss, terms["codebook"] + 0.25 * terms["commitment"])
    legacy = VectorQuantizer(16, 4, legacy_beta=True)
    legacy.load_state_dict(q.state_dict())
    lo = legacy(z.detach())
    assert torch.allclose(lo.loss, 0.25 * lo.losses["codebook"] + lo.losses["commitment"])


def test_cosine_picks_max_cosine_not_nearest():
    codebook = torch.tensor([[0.5, 0.0], [3.0, 3.0], [-1.0, 0.0]])
    z = torch.tensor([4.0, 0.5]).view(1, 2, 1)  # closest in L2 to code 1, in angle to code 0
    cos, l2 = VectorQuantizer(3, 2, distance="cos"), VectorQuantizer(3, 2, distance="l2")
    for q in (cos, l2):
        q.embedding.weight.data.copy_(codebook)
    out = cos(z)
    assert out.indices.item() == 0 and l2(z).indices.item() == 1
    assert torch.allclose(out.quantized.view(-1), torch.tensor([1.0, 0.0]))  # normalised code


def test_cvq_revives_dead_codes():
    torch.manual_seed(0)
    q = ClusteredVectorQuantizer(8, 4, distance="l2", decay=0.99)
    far = 100.0 + torch.randn(8, 4)
    q.embedding.weight.data.copy_(far)
    feats = torch.randn(64, 4)  # 64 features, all nearest to one far code
    z = feats.t().reshape(1, 4, 64)
    q.eval()
    q(z)
    assert torch.equal(q.embedding.weight, far)  # no update outside training
    q.train()
    out = q(z)
    used = out.indices.unique()
    assert used.numel() == 1
    w = q.embedding.weight.detach()
    dead = torch.ones(8, dtype=torch.bool)
    dead[used] = False
    dist_to_feats = torch.cdist(w, feats).min(1).values
    assert (dist_to_feats[dead] < 1.0).all()  # dead codes moved onto the features
    assert torch.allclose(w[used], far[used])  # the used code stays (alpha ~ exp(-80))
    assert torch.allclose(q.embed_prob[used], torch.tensor([0.01]))
    # after revival the codebook is used
    assert q(z).indices.unique().numel() > 1


def test_cvq_probrandom_anchor_and_gradient_to_codebook():
    torch.manual_seed(0)
    q = ClusteredVectorQuantizer(8, 4, anchor="probrandom", distance="cos").train()
    z = torch.randn(2, 4, 4, 4)
    out = q(z)
    out.loss.backward()
    assert q.embedding.weight.grad is not None
    assert torch.isfinite(q.embedding.weight).all()


def test_fsq_table_and_errors():
    assert fsq_levels(2 ** 10) == fsq_levels(1000) == (8, 5, 5, 5)
    assert fsq_levels(2 ** 16) == fsq_levels(64000) == (8, 8, 8, 5, 5, 5)
    assert fsq_levels(8000) == (8, 8, 5, 5, 5)
    assert FSQ(codebook_size=4096).codebook_size == 7 * 5 ** 4
    with pytest.raises(ValueError, match="valid sizes: .*1000.*1024"):
        FSQ(codebook_size=1234)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 6, 3]])
def test_fsq_grid_and_round_trip(levels):
    q = FSQ(levels=levels)
    k = math.prod(levels)
    assert q.codebook_size == k
    all_idx = torch.arange(k)
    codes = q.indices_to_level_codes(all_idx)
    assert codes.abs().max() <= 1.0
    assert torch.unique(codes, dim=0).shape[0] == k  # every index is a distinct grid point
    assert torch.equal(q.codes_to_indices(codes), all_idx)
    torch.manual_seed(0)
    z = torch.randn(4, len(levels), 16, 16)
    out = q(z)
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    assert out.indices.unique().numel() > k // 10  # many grid points reached


def test_fsq_projection():
    q = FSQ(codebook_size=1024, dim=16)
    z = torch.randn(2, 16, 4, 4)
    out = q(z)
    assert out.quantized.shape == z.shape
    assert torch.allclose(q.indices_to_codes(out.indices), out.quantized, atol=1e-6)


def test_lfq_bits_entropy_and_round_trip():
    torch.manual_seed(0)
    q = LFQ(codebook_size=2 ** 6, inv_temperature=1.0)
    z = torch.randn(4, 6, 5, 5)
    out = q(z)
    _check_output(out, z, (4, 5, 5), 64)
    # index = bits (z > 0), first channel most significant
    bits = (z > 0).long().permute(0, 2, 3, 1)
    assert torch.equal(out.indices, (bits * torch.tensor([32, 16, 8, 4, 2, 1])).sum(-1))
    assert torch.equal(q.indices_to_codes(out.indices), torch.sign(z))
    for term in ("entropy", "per_sample_entropy", "codebook_entropy", "commitment"):
        assert torch.isfinite(out.losses[term])
    assert 0 < out.losses["codebook_entropy"] <= math.log(64) + 1e-5
    # exact codebook entropy <= the per-bit approximation (its upper bound)
    approx = LFQ(codebook_size=2 ** 6, inv_temperature=1.0, exact_max_codebook=1)(z)
    assert out.losses["codebook_entropy"] <= approx.losses["codebook_entropy"] + 1e-5
    # one sample: the code distribution is a product, so exact == per-bit
    one = z[:1, :, :1, :1]
    assert torch.allclose(q(one).losses["codebook_entropy"],
                          LFQ(num_bits=6, inv_temperature=1.0, exact_max_codebook=1)(one)
                          .losses["codebook_entropy"], atol=1e-5)
    g = _grad_reaches_input(q, z)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="power of two"):
        LFQ(codebook_size=1000)


def test_codebook_usage():
    stats = codebook_usage(torch.tensor([[0, 0], [1, 1]]), 4)
    assert stats["usage"].item() == 0.5
    assert math.isclose(stats["entropy"].item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(stats["perplexity"].item(), 2.0, rel_tol=1e-6)
    uniform = codebook_usage(torch.arange(8), 8)
    assert uniform["usage"].item() == 1.0
    assert math.isclose(uniform["perplexity"].item(), 8, rel_tol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        codebook_usage(torch.tensor([5]), 4)


def _cvq_rank(rank, world, init_file, result_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial codebook on every rank
        q = ClusteredVectorQuantizer(8, 4, distance="l2").train()
        q.embedding.weight.data.add_(100.0)
        torch.manual_seed(1 + rank)  # different data per rank
        feats = torch.randn(1, 4, 16) + 5 * rank
        out = q(feats)
        torch.save({"w": q.embedding.weight.detach(), "p": q.embed_prob,
                    "usage": out.stats["usage"], "feats": feats},
                   f"{result_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_cvq_distributed_ranks_agree(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_cvq_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["w"], r1["w"]) and torch.equal(r0["p"], r1["p"])
    assert torch.equal(r0["usage"], r1["usage"])
    all_feats = torch.cat([r0["feats"], r1["feats"]], 2)[0].t()
    near = torch.cdist(r0["w"], all_feats).min(1).values
    assert (near < 1.0).sum() >= 6  # dead codes moved to features from both ranks
    assert (torch.cdist(r0["w"], r1["feats"][0].t()).min(1).values < 1.0).any()
