"""Inference engine: MLA latent cache, continuous batching, on-device sampling, MTP speculative decoding, vLLM-like API.

    from r1lab.engine import LLM, SamplingParams
    llm = LLM("runs/demo/model")                      # or a DeepSeekV3ForCausalLM / any local HF causal LM
    out = llm.generate(["1+1="], SamplingParams(n=4, temperature=0.8, max_tokens=64))
    out[0].outputs[0].text, out[0].outputs[0].logprobs  # logprobs: raw fp32 log-softmax (π_old for GRPO)
"""

from .llm import LLM
from .params import CompletionOutput, ContextLengthError, GenerationStats, RequestOutput, SamplingParams

__all__ = ["LLM", "CompletionOutput", "ContextLengthError", "GenerationStats", "RequestOutput", "SamplingParams"]
