"""Settings of the agent; the shipped defaults are configs/agent.yaml.

The API key itself never appears here: ``model.api_key_env`` names the environment variable that holds
it, so a config dump (trajectory header, logs) can never leak the key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from loopcoder.configs import ConfigError, load_config


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    url: Optional[str] = Field(None, description="OpenAI-compatible base URL (…/v1); null: the embedded server")
    name: Optional[str] = Field(None, description="model name to send; null: the first of /v1/models")
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", description="NAME of the env var holding the key")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="OpenAI's: minus this times a token's count "
                                     "in the answer so far, from its logit (breaks greedy loops); 0: not sent")
    max_tokens: int = Field(1024, ge=1, description="output tokens per model call (also capped by budgets)")
    timeout_s: float = Field(300.0, gt=0, description="one HTTP request; a slower answer is retried")
    max_attempts: int = Field(6, ge=1, description="tries per model call (429, 5xx, timeouts, dropped connections)")
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(30.0, ge=0, description="cap on one wait, Retry-After included")
    seed: Optional[int] = None

    def api_key(self) -> str:
        """The key from the environment; servers without auth accept any placeholder."""
        return (os.environ.get(self.api_key_env) if self.api_key_env else None) or "unused"


class PhaseSettings(_Section):
    thinking: Optional[bool] = Field(None, description="send chat_template_kwargs.enable_thinking; null: send nothing")


class PlannerSettings(PhaseSettings):
    max_steps: int = Field(15, ge=1, description="model calls to write a plan; then the episode stops (no_plan)")


class Budgets(_Section):
    steps: Optional[int] = Field(50, ge=1, description="model calls in the whole episode")
    input_tokens: Optional[int] = Field(None, ge=1, description="sum of usage.prompt_tokens")
    output_tokens: Optional[int] = Field(None, ge=1, description="sum of usage.completion_tokens")
    wall_time_s: Optional[float] = Field(3600.0, gt=0)
    cost_usd: Optional[float] = Field(None, gt=0, description="needs the model in `prices`")


class Price(_Section):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")


class ContextSettings(_Section):
    max_observation_chars: int = Field(6000, ge=200, description="longer tool output: head and tail kept")
    elide_after_turns: int = Field(6, ge=1, description="tool output older than this many turns is elided")
    summarize_at: float = Field(0.8, gt=0, le=1, description="summarise old turns above this share of max_model_len")
    keep_last_turns: int = Field(2, ge=1, description="turns a summary never replaces")
    max_model_len: Optional[int] = Field(None, ge=256, description="context; null: read from /v1/models")
    chars_per_token: float = Field(3.0, gt=0, description="estimate for text the server has not counted yet")
    compact_tool_schemas: bool = Field(True, description="drop schema noise (null-unions, defaults) sent to the model")


class PromptSettings(_Section):
    dir: Optional[Path] = Field(None, description="folder searched before the shipped templates")
    planner: str = "planner.jinja"
    executor: str = "executor.jinja"
    single: str = "single.jinja"
    task: str = "task.jinja"
    executor_task: str = "executor_task.jinja"
    replan: str = "replan.jinja"
    new_plan: str = "new_plan.jinja"
    summary: str = "summary.jinja"


class AgentConfig(_Section):
    model: ModelSettings = ModelSettings()
    mode: Literal["plan", "single"] = "plan"
    planner: PlannerSettings = PlannerSettings(thinking=True)
    executor: PhaseSettings = PhaseSettings(thinking=False)
    keep_reasoning: bool = Field(False, description="send earlier reasoning_content back to the model")
    max_format_errors: int = Field(3, ge=1, description="consecutive answers without a usable call end the episode")
    max_repeats: Optional[int] = Field(2, ge=1, description="an identical call that gave the same output this many "
                                       "times since the workspace last changed is refused (null: never)")
    max_refused_repeats: int = Field(3, ge=1, description="refused repeats (since the workspace last changed) "
                                                          "that end the episode (repeating)")
    max_replans: int = Field(2, ge=0)
    step_failures_to_replan: int = Field(2, ge=1, description="a plan step that fails this often triggers a re-plan")
    budgets: Budgets = Budgets()
    context: ContextSettings = ContextSettings()
    prompts: PromptSettings = PromptSettings()
    prices: dict[str, Price] = Field(default_factory=dict, description="per served model name")
    default_checkpoint: Path = Field(Path(".cache/demo-model"),
                                     description="checkpoint of the embedded server (made with init if absent)")
    fsync: bool = Field(True, description="fsync the trajectory after every event")

    def price(self, model_name: str) -> Optional[Price]:
        return self.prices.get(model_name)

    def check_for_model(self, model_name: str) -> None:
        """Settings that need the served model's name: a cost budget needs a price."""
        if self.budgets.cost_usd is not None and model_name not in self.prices:
            raise ConfigError(f"budgets.cost_usd is set but prices has no entry for model {model_name!r}; "
                              f"add prices.{model_name}.input_per_mtok / output_per_mtok")

    def public_dump(self) -> dict:
        """The config as JSON data, safe to write anywhere: it holds the key's variable name, never the key."""
        return self.model_dump(mode="json")


def load_agent_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> AgentConfig:
    """configs/agent.yaml (or ``path``) with ``--set`` overrides, validated; ConfigError on a bad key or value."""
    return load_config(AgentConfig, path, overrides, default="agent")
