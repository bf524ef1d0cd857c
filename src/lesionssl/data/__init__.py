"""Data stage: reading label sources, decoding images, limited-label splits and image tensors."""
