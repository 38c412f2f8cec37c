"""The networks, their loader and samplers (the agent format lives in dllmflow.agent, the
generated worlds and the oracle in dllmflow.world, the trainers in dllmflow.training).

tokenizer.py          byte-level BPE of the tiny pair
layers.py             shared attention/MLP blocks, KV cache plumbing
modeling_ar.py        tiny causal AR model;  modeling_diffusion.py  tiny block-diffusion model
modeling_llama.py     Llama-family AR and block-diffusion halves (the real pair, GQA)
base_import.py        `dllmflow models import`: the real pair's base from its GGUF
lora.py               LoRA adapters (attach, save, load, merge);  real_pair.py  its loader
export.py             `dllmflow models export`: the AR half merged into a plain HF Llama
sampling/             step-level samplers (AR, block diffusion, full-canvas masked diffusion,
                      any HF causal LM), KV arena
loader.py             load_backend(name_or_path) -> (model, tokenizer, sampler)
families.py           Hugging Face families (Llama, Qwen2, SDAR, Fast-dLLM v2, LLaDA, Dream)
evaluation.py         offline evaluation of a policy over a corpus (no Temporal)
"""
