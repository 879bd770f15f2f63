"""The image modality: a 2-D U-Net on folders of images or built-in shapes and digits."""
