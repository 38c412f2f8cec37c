"""AR and block-diffusion models, samplers, training and the synthetic research world.

actions.py            the turn/action format (single source of truth)
world.py              seeded synthetic world -> corpus + multi-hop questions (JSONL)
local_search.py       in-memory search/fetch with the runtime tools' result shapes
prompting.py          render_context: the one renderer of a model's context
oracle.py             scripted oracle policy (trajectory generator, perfect baseline)
episode.py            local planner -> seeker -> writer loop; policy.py: model/oracle policies
tokenizer.py          byte-level BPE shared by both models
modeling_ar.py        causal AR model;  modeling_diffusion.py  block-diffusion model
sampling/             step-level samplers (AR, block diffusion, any HF causal LM)
loader.py             load_backend(name_or_path) -> (model, tokenizer, sampler)
training.py           agent-oriented fine-tuning (+ CLI); evaluation.py  offline eval
"""
