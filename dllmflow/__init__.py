"""dllmflow: durable orchestration for diffusion-LLM and autoregressive research agents."""

__version__ = "0.1.0"
