"""TEST STAND-IN for SGLang 0.5.23, not SGLang: only the names the LoopCoder plugin imports, each with the
reference semantics SGLang documents for it (tensor-parallel shard layouts, the KV pool write, causal
attention with an exclusive sliding window, last-token logits). Tests put this folder on sys.path; the
product code never imports it. Real SGLang was not installed or run here (docs/sglang.md)."""
