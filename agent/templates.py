"""The prompts: Jinja templates shipped in ``loopcoder/agent/prompts``, chosen by name in the config.

``prompts.dir`` (when set) is searched first, so a user can replace any template without touching code.
"""
from __future__ import annotations

from pathlib import Path

import jinja2

from loopcoder.agent.config import PromptSettings

SHIPPED = Path(__file__).resolve().parent / "prompts"


class Prompts:
    def __init__(self, settings: PromptSettings):
        self.settings = settings
        folders = ([str(settings.dir)] if settings.dir else []) + [str(SHIPPED)]
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), undefined=jinja2.StrictUndefined,
                                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                                      autoescape=False)

    def render(self, which: str, **values) -> str:
        """Render the template the config names for ``which`` (planner, executor, task, summary, ...)."""
        name = getattr(self.settings, which)
        try:
            return self.env.get_template(name).render(**values).strip()
        except jinja2.TemplateNotFound:
            raise FileNotFoundError(f"prompt template {name!r} (prompts.{which}) not found in "
                                    f"{', '.join(self.env.loader.searchpath)}") from None
