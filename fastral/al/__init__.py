"""RALIS: reinforced active learning for semantic segmentation (Casanova et al., ICLR 2020)."""
