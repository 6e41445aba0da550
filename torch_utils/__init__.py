"""Paper-agnostic PyTorch infrastructure."""
