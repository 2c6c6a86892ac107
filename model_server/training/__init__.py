"""LoopCoder-Nano: its base model from the GGUF of a pip package, supervised fine-tuning on rendered agent
requests (LoRA, and the loop parts when upcycled to two loops), and the shipped delta (docs/nano.md).

Imports nothing from agent/tools/runtime/scenarios: the trajectories reach it as chat request bodies
and answers, rendered here by the server's own chat rendering.
"""
