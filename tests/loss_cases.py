"""Batches every loss on m-per-class batches must refuse (baselines.common.check_m_per_class),
shared by the loss tests so each states only its own cases."""
import torch

BAD_M_PER_CLASS_BATCHES = [
    (torch.randn(6), torch.tensor([0, 0, 1, 1, 2, 2]), "2-D"),
    (torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2]), "one entry per embedding row"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), "no positive pair"),
    (torch.randn(4, 3), torch.tensor([5, 5, 5, 5]), "single class"),
]
