"""The method: dataset, cameras, patches, rendering, networks, losses and the training loop."""
