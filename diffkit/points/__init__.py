"""Points: diffusion on vectors (CSV rows), e.g. 2-D toy distributions. The smallest modality, which
shows the whole pipeline in a minute on a CPU and has an exact answer to compare against."""
