"""Helpers of the API tests: start a real server, and the conversations the trained tiny checkpoint answers."""
from __future__ import annotations

MODEL = "tiny-plt"  # the name both test servers serve
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER_AFTER_TOOL = WEATHER_QUESTION + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
WEATHER_ANSWER = "It is sunny in Paris."
ROME_QUESTION = [{"role": "user", "content": "Weather in Rome, please."}]
ROME_FORCED_REST = '{"city": "Rome"}}\n</tool_call>'  # what follows the server's prefill of a named call
SUM_QUESTION = [{"role": "user", "content": "What is 2+2?"}]
SUM_THINKING = "The user wants a sum.\n</think>\n\n2 + 2 = 4."
TWO_CITIES_QUESTION = [{"role": "user", "content": "Weather in Paris and in Rome?"}]
TWO_CITIES_CALLS = (WEATHER_CALL + "\n"
                    + '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')
# asked with no tools offered (or tool_choice "none"), the model writes a call anyway: it must stay text
TOOL_TEXT_QUESTION = [{"role": "user", "content": "Show the tool call syntax for Oslo."}]
TOOL_TEXT_ANSWER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

# (request fields, the text the trained model must produce after the rendered prompt)
TRAINED_CONVERSATIONS = [
    ({"messages": WEATHER_QUESTION, "tools": TOOLS}, WEATHER_CALL),
    ({"messages": WEATHER_AFTER_TOOL, "tools": TOOLS}, WEATHER_ANSWER),
    ({"messages": ROME_QUESTION, "tools": TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, ROME_FORCED_REST),
    ({"messages": SUM_QUESTION, "chat_template_kwargs": {"enable_thinking": True}}, SUM_THINKING),
    ({"messages": TWO_CITIES_QUESTION, "tools": TOOLS}, TWO_CITIES_CALLS),
    ({"messages": TOOL_TEXT_QUESTION}, TOOL_TEXT_ANSWER),
]


def fit_conversations(checkpoint_dir, conversations, max_steps: int = 3000) -> None:
    """Refit the checkpoint's output layer so that greedy decoding reproduces every target; save it.

    The layers stay random: teacher-forced hidden states of prompt + target are computed once, and only
    ``lm_head`` (untied in the tiny shape) is fitted on them until each target token wins by a margin.
    Greedy decoding then walks exactly those states, so the engine must produce the targets.
    """
    import torch

    from loopcoder.model_server.api.prompts import render_chat
    from loopcoder.model_server.api.protocol import ChatCompletionRequest
    from loopcoder.model_server.plt.checkpoint import load_checkpoint

    model, tok = load_checkpoint(checkpoint_dir)
    assert not model.config.tie_word_embeddings, "fitting lm_head alone needs untied embeddings"
    captured = {}
    hook = model.lm_head.register_forward_hook(lambda module, args, out: captured.update(x=args[0]))
    features, targets = [], []
    for fields, target in conversations:
        prompt_ids = render_chat(tok, ChatCompletionRequest(model="m", **fields)).token_ids
        target_ids = tok(target + tok.eos_token, add_special_tokens=False).input_ids
        with torch.no_grad():
            model(torch.tensor([prompt_ids + target_ids]), use_cache=False)
        features.append(captured["x"][0, len(prompt_ids) - 1:-1])
        targets.append(torch.tensor(target_ids))
    hook.remove()
    x, y = torch.cat(features), torch.cat(targets)
    weight = model.lm_head.weight.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([weight], lr=0.05)
    for _ in range(max_steps):
        logits = x @ weight.T
        top2 = logits.detach().topk(2, dim=-1)
        margin = logits.detach().gather(1, y[:, None])[:, 0] - top2.values[:, 1]
        if bool((top2.indices[:, 0] == y).all()) and margin.min() > 2.0:
            break
        opt.zero_grad()
        torch.nn.functional.cross_entropy(logits, y).backward()
        opt.step()
    else:
        raise AssertionError(f"lm_head did not fit the conversations in {max_steps} steps")
    with torch.no_grad():
        model.lm_head.weight.copy_(weight)
    model.save_pretrained(checkpoint_dir)


def start_server(checkpoint_dir, api_key=None, **engine_fields):
    from loopcoder.model_server.api import ServerThread, create_app
    from loopcoder.model_server.engine import AsyncLLMEngine, EngineConfig

    engine = AsyncLLMEngine.from_config(EngineConfig(model=str(checkpoint_dir), **engine_fields))
    app = create_app(engine, served_model_name=MODEL, api_key=api_key)
    server = ServerThread(app).start()
    server.engine = engine
    return server
