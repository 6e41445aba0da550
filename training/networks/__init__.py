"""The networks: G (generator: mapping, tri-plane synthesis, field and decoder, background) and
D (discriminator with its patch hypernetwork), and the layers they share."""
