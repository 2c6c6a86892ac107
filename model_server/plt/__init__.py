"""LoopCoder-V2 (PLT) and IQuest LoopCoder v1 models, registered with transformers' Auto classes."""
from transformers import AutoConfig, AutoModelForCausalLM

from .cache import PLTCache
from .configuration import IQuestLoopCoderConfig, IQuestPLTCoderConfig, LoopSpec
from .modeling import IQuestLoopCoderForCausalLM, IQuestPLTCoderForCausalLM

for _config, _model in ((IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM),
                        (IQuestLoopCoderConfig, IQuestLoopCoderForCausalLM)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForCausalLM.register(_config, _model, exist_ok=True)

__all__ = [
    "IQuestLoopCoderConfig", "IQuestLoopCoderForCausalLM", "IQuestPLTCoderConfig",
    "IQuestPLTCoderForCausalLM", "LoopSpec", "PLTCache",
]
