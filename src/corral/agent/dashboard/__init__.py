"""The agent's web dashboard: one page, the endpoints it reads, and the TCP guard."""

from corral.agent.dashboard.guard import Guard
from corral.agent.dashboard.listen import DEFAULT_HOST, bind_ui
from corral.agent.dashboard.routes import install

__all__ = ["DEFAULT_HOST", "Guard", "bind_ui", "install"]
