"""The text modality: Diffusion-LM over a sentencepiece vocabulary."""
