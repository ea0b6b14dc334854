import torch


def test_forward_shapes(tiny_model, batch):
    src, tgt = batch
    assert tiny_model(src, tgt).shape == (3, 6, 30)
    assert torch.isfinite(tiny_model(src, tgt)).all()
