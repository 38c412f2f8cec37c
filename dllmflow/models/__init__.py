"""AR and block-diffusion models, samplers, training and the synthetic research world."""
