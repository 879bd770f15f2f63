"""diffkit: Gaussian diffusion for images, audio and text."""

__version__ = "0.1.0"
