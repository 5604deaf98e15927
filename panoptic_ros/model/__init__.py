"""The EfficientPS-style panoptic model: backbone, 2-way FPN, heads, fusion, training, inference."""
