"""The agent: planner/executor (or single) loop over any OpenAI-compatible model, with budgets and trajectories.

``run_episode(Task(...), ModelClient(config.model), config, out_dir, sandbox)`` is the entry point;
docs/agent.md describes the parts.
"""
from loopcoder.agent.client import ContextOverflow, Model, ModelClient, ModelError, ModelResponse, Usage
from loopcoder.agent.config import AgentConfig, load_agent_config
from loopcoder.agent.episode import EpisodeResult, Task, run_episode
from loopcoder.agent.replay import ReplayModel, replay_episode
from loopcoder.agent.trajectory import read_trajectory

__all__ = ["AgentConfig", "ContextOverflow", "EpisodeResult", "Model", "ModelClient", "ModelError", "ModelResponse",
           "ReplayModel", "Task", "Usage", "load_agent_config", "read_trajectory", "replay_episode", "run_episode"]
