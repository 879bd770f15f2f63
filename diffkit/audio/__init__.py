"""The audio modality: a 1-D U-Net on raw waveforms, from folders of sound files or built-in tones and drums."""
