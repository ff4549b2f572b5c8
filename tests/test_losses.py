"""Losses against values worked out by hand on tiny tensors."""
import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F

from src.losses import (
    LOSSES, CrossEntropyLoss, FocalCrossEntropyLoss, HingeGANLoss, LPIPSLoss, MSELoss, OASISLoss,
    RateLoss, VanillaGANLoss, VanillaMSELoss, adaptive_gan_weight, beta_weight, build_loss)

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32),
                          torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=tol)


def test_registry_and_build():
    for name in ["RateLoss", "MSELoss", "LPIPSLoss", "VanillaMSELoss", "FocalCrossEntropyLoss",
                 "CrossEntropyLoss", "VanillaGANLoss", "HingeGANLoss", "OASISLoss"]:
        assert name in LOSSES
    mse = build_loss({"type": "MSELoss", "loss_weight": 50, "normalize_img": True, "mse_scale": "0_1"})
    assert isinstance(mse, MSELoss) and mse.loss_weight == 50
    with pytest.raises(ValueError, match="reduction"):
        RateLoss(reduction="avg")


def test_rate_loss():
    # sample 0: y bits 1 + 2, z bits 3 -> 6 bits / 4 px = 1.5 bpp; sample 1: 0 + 1 + 1 -> 0.5 bpp
    lik = {"y": torch.tensor([[0.5, 0.25], [1.0, 0.5]]).view(2, 2, 1, 1),
           "z": torch.tensor([[0.125], [0.5]]).view(2, 1, 1, 1)}
    assert close(RateLoss(reduction="none")(lik, num_pixels=4), [1.5, 0.5])
    assert close(RateLoss(reduction="mean")(lik, 4), 1.0)
    assert close(RateLoss(reduction="sum")(lik, 4), 2.0)
    assert close(RateLoss(loss_weight=0.04)(lik, 4), 0.04)
    assert close(RateLoss()(lik, 4, sample_weight=torch.tensor([2.0, 4.0])), 2.5)  # (3 + 2) / 2
    assert close(RateLoss(reduction="none")(torch.tensor([0.1, 0.2])), [0.1, 0.2])  # bpp given
    with pytest.raises(ValueError, match="num_pixels"):
        RateLoss()(lik)


def test_beta_weight():
    w = beta_weight(torch.tensor([0.0, LN2]), 0.5)  # 0.5 * e^0, 0.5 * e^ln2
    assert close(w, [0.5, 1.0])
    assert beta_weight(1.0, 2.0) == pytest.approx(5.436563656918)  # 2e
    assert beta_weight(1.5, 2.0, policy="linear") == pytest.approx(5.0)  # 2 * (1.5 + 1)
    # the step 1-2 rate term: 0.5 * e^beta_rate per sample, then the batch mean
    rate = RateLoss(reduction="mean")(torch.tensor([1.0, 3.0]), sample_weight=w)
    assert close(rate, (0.5 * 1 + 1.0 * 3) / 2)
    with pytest.raises(ValueError):
        beta_weight(1.0, policy="cubic")


def test_mse_losses():
    target, pred = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2), torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    # in [0, 1]: target (0, 1), pred (1, 1) -> errors (1, 0) -> 0.5
    assert close(MSELoss(normalize_img=True)(target, pred), 0.5)
    assert close(MSELoss(loss_weight=50, normalize_img=True)(target, pred), 25.0)
    assert close(MSELoss()(target, pred), 2.0)  # errors (4, 0)
    assert close(MSELoss(normalize_img=True, mse_scale="0_255")(target, pred), 32512.5)
    # VQ latent MSE, per sample: (1+1+1+1)/4 = 1 and (4+4+0+0)/4 = 2
    gt = torch.zeros(2, 4, 1, 1)
    est = torch.tensor([[1.0, 1, 1, 1], [2, 2, 0, 0]]).view(2, 4, 1, 1)
    assert close(VanillaMSELoss(0.006, reduction="none")(gt, est), [0.006, 0.012])
    assert close(VanillaMSELoss(reduction="sum")(gt, est), 3.0)
    assert close(VanillaMSELoss()(gt, est), 1.5)


def test_focal_cross_entropy():
    # logits (0, ln 3) -> p = (1/4, 3/4)
    logits = torch.tensor([0.0, LN3]).view(1, 2, 1, 1).repeat(1, 1, 1, 2)
    target = torch.tensor([[[1, 0]]])
    ce = [-math.log(0.75), LN4]
    focal = [0.25 ** 2 * ce[0], 0.75 ** 2 * ce[1]]  # (1 - p_t)^2 * CE
    assert close(FocalCrossEntropyLoss(gamma=2.0)(logits, target), sum(focal) / 2)
    assert close(FocalCrossEntropyLoss(gamma=0.0)(logits, target), sum(ce) / 2)
    assert close(CrossEntropyLoss(loss_weight=0.5)(logits, target), 0.5 * sum(ce) / 2)
    # gamma 0 equals torch's cross-entropy; 'none' is the per-sample mean over positions
    torch.manual_seed(0)
    lg, tg = torch.randn(3, 256, 4, 4), torch.randint(0, 256, (3, 4, 4))
    per = FocalCrossEntropyLoss(gamma=0, reduction="none")(lg, tg)
    assert per.shape == (3,)
    assert close(per, F.cross_entropy(lg, tg, reduction="none").mean(dim=(1, 2)))
    assert close(FocalCrossEntropyLoss(gamma=0)(lg, tg), F.cross_entropy(lg, tg))
    assert bool((FocalCrossEntropyLoss(gamma=2, reduction="none")(lg, tg) < per).all())


def test_vanilla_gan_loss():
    gan = VanillaGANLoss(loss_weight=0.01)
    zero, ln3 = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), LN3)  # sigmoid(ln 3) = 3/4
    assert close(gan(zero, is_real=True, is_disc=True), LN2)
    assert close(gan(ln3, is_real=True, is_disc=True), -math.log(0.75))
    assert close(gan(ln3, is_real=False, is_disc=True), LN4)
    assert close(gan(ln3, is_real=True, is_disc=False), 0.01 * -math.log(0.75))  # G: weighted
    assert close(gan([zero, ln3], is_real=False, is_disc=True), (LN2 + LN4) / 2)  # multi-scale
    assert VanillaGANLoss(reduction="none")(zero, True, True).shape == (2,)


def test_hinge_gan_loss():
    pred = torch.tensor([0.5, -2.0, 3.0]).view(1, 3)
    hinge = HingeGANLoss(loss_weight=2.0)
    assert close(hinge(pred, is_real=True, is_disc=True), (0.5 + 3 + 0) / 3)
    assert close(hinge(pred, is_real=False, is_disc=True), (1.5 + 0 + 4) / 3)
    assert close(hinge(pred, is_real=True, is_disc=False), 2.0 * -0.5)


def oasis_logits():
    """(1, 3, 2, 2): pixel (0,0) has logits (ln 2, 0, 0) -> p = (1/2, 1/4, 1/4); others uniform."""
    lg = torch.zeros(1, 3, 2, 2)
    lg[0, 0, 0, 0] = LN2
    return lg


def test_oasis_loss_hand_example():
    loss = OASISLoss(num_classes=2, loss_weight=0.1)
    idx = torch.tensor([[[0, 1]]])  # (1, 1, 2) upsamples to [[0, 1], [0, 1]]
    assert loss.make_labels(oasis_logits(), idx, True).tolist() == [[[0, 1], [0, 1]]]
    real = (LN2 + 3 * LN3) / 4  # -ln(1/2) at (0,0), -ln(1/3) elsewhere
    assert close(loss(oasis_logits(), idx, is_real=True, is_disc=True), real)
    assert close(loss(oasis_logits(), idx, is_real=True, is_disc=False), 0.1 * real)
    fake = (LN4 + 3 * LN3) / 4  # fake class 2: -ln(1/4) at (0,0)
    assert close(loss(oasis_logits(), None, is_real=False, is_disc=True), fake)
    first = OASISLoss(num_classes=2, fake_class_first=True)  # fake is channel 0
    assert close(first(oasis_logits(), None, is_real=False, is_disc=True), real)
    assert first.make_labels(oasis_logits(), idx, True).tolist() == [[[1, 2], [1, 2]]]


def test_oasis_class_balance():
    # labels [[0, 0], [0, 1]]: class 0 x3 -> 4 / (2 * 3) = 2/3, class 1 x1 -> 4 / (2 * 1) = 2
    idx = torch.tensor([[[0, 0], [0, 1]]])
    bal = OASISLoss(num_classes=2, class_balance=True)
    want = (2 / 3 * LN2 + 2 / 3 * LN3 + 2 / 3 * LN3 + 2 * LN3) / 4
    assert close(bal(oasis_logits(), idx, is_real=True, is_disc=True), want)
    fake = (LN4 + 3 * LN3) / 4  # fake-labelled pixels are not re-weighted
    assert close(bal(oasis_logits(), idx, is_real=False, is_disc=True), fake)
    with pytest.raises(ValueError, match="3, h, w"):
        bal(torch.zeros(1, 4, 2, 2), idx, True)
    with pytest.raises(ValueError, match="VQ indices"):
        bal(oasis_logits(), idx + 2, True)


def test_oasis_upsamples_vq_map_to_logits():
    loss = OASISLoss(num_classes=256, reduction="none")
    idx = torch.randint(0, 256, (2, 4, 4))  # H/8 map of a 32x32 image, logits at full size
    labels = loss.make_labels(torch.zeros(2, 257, 32, 32), idx, True)
    assert torch.equal(labels, idx.repeat_interleave(8, 1).repeat_interleave(8, 2))
    assert loss(torch.zeros(2, 257, 32, 32), idx, True, True).shape == (2,)


def test_adaptive_gan_weight():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
    out = lin(torch.tensor([[3.0, 4.0]])).sum()  # d out / d W = (3, 4), norm 5
    nll, g = out, -0.5 * out  # gradient norms 5 and 2.5
    w = adaptive_gan_weight(nll, g, lin.weight)
    assert not w.requires_grad and close(w, 5 / 2.5001)
    assert close(adaptive_gan_weight(nll, g, lin.weight, gain=0.01), 0.01 * 5 / 2.5001)
    assert close(adaptive_gan_weight(nll, 1e-6 * out, lin.weight), 1e4)  # 5 / 1.05e-4 clamped
    (nll + g).backward()  # graphs were retained
    assert close(lin.weight.grad, [[1.5, 2.0]])


def test_lpips_loss_random_backbone():
    torch.manual_seed(0)
    loss = LPIPSLoss(loss_weight=2.0, reduction="none", pnet_rand=True)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = x.clone()
    y[1] = -y[1]
    d = loss(x, y)
    assert d.shape == (2,) and d[0].abs() < 1e-6 and d[1] > 0
    loss.train()
    assert not loss.net.training and not any(p.requires_grad for p in loss.net.parameters())


def test_lpips_names_missing_weights(monkeypatch):
    import lpips

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(lpips, "LPIPS", offline)
    with pytest.raises(RuntimeError, match=r"alexnet-owt-7be5be79\.pth.*hub/checkpoints"):
        LPIPSLoss(net="alex")
