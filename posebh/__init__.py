"""posebh: an mmcv-free PyTorch implementation of PoseBH (CVPR 2025) and ViTPose++."""

__version__ = "0.1.0"
