"""The SN paper's ImageNet table (ResNet-50 v1 top-1, %), as published by the authors.

Source: Luo, Ren, Peng, "Differentiable Learning-to-Normalize via Switchable Normalization",
arXiv:1806.10779, Table 1, and the same table in the authors' repository README
(github.com/switchablenorms/Switchable-Normalization). Settings are (#GPUs, samples per GPU).
"""

SOURCE = "arXiv:1806.10779 Table 1 / github.com/switchablenorms/Switchable-Normalization README"
MODEL = "ResNet-50 v1 on ImageNet"

# the paper's column order, kept as the first columns of every results table
SETTINGS = ((8, 32), (8, 16), (8, 8), (8, 4), (8, 2), (1, 16), (1, 32), (8, 1), (1, 8))

DID_NOT_CONVERGE = "did not converge"

# None: BN at (8, 1) did not converge (the paper's "-")
TOP1 = {
    "bn": (76.4, 76.3, 75.2, 72.7, 65.3, 76.2, 76.5, None, 75.4),
    "gn": (75.9, 75.8, 76.0, 75.8, 75.9, 75.9, 75.8, 75.5, 75.5),
    "sn": (76.9, 76.7, 76.7, 75.9, 75.6, 76.3, 76.6, 75.0, 75.9),
}

# SN at (8, 1) had no BN branch (IN and LN only): the paper's asterisk
WITHOUT_BN = {("sn", (8, 1))}


def paper_top1(norm, setting):
    """Published top-1 of `norm` at `setting`, None if it did not converge; KeyError if not in the table."""
    return TOP1[norm][SETTINGS.index(setting)]
