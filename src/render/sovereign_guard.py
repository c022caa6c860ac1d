"""Budget actions of sovereign-operator, enforced inside the LiteLLM proxy.

The operator's usage controller writes the TokenBudget actions in force in a region
(Block, Throttle, Downgrade of crossed thresholds) into the ConfigMap
``sovereign-budget-actions`` of the region namespace; the gateway mounts it (optional) and
``SOVEREIGN_BUDGET_ACTIONS`` names the file. This pre-call hook re-reads the file when it
changes and, for each request, finds the actions whose scope (teams, cost centres, models)
covers it:

- Block: the request is refused with HTTP 429;
- Throttle: at most ``requestsPerMinute`` requests per minute per gateway replica;
- Downgrade: the request is served by ``downgradeTo`` (a model of this same gateway, so of
  this jurisdiction; the operator leaves out targets the region does not serve).

A request's team is its key's team alias, else the ``team`` request metadata; its cost
centre is the ``cost_center`` metadata: the same attribution the usage collector reads from
the ``metadata_team`` / ``metadata_cost_center`` labels. An unreadable actions file is
logged and ignored (budgets fail open; residency, enforced by the model list, fails closed).
"""

import json
import logging
import os
import threading
import time

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

LOG = logging.getLogger("sovereign_guard")
ACTIONS_FILE = os.environ.get(
    "SOVEREIGN_BUDGET_ACTIONS", "/etc/sovereign/actions/actions.json"
)


class SovereignGuard(CustomLogger):
    def __init__(self):
        super().__init__()
        self._stamp = None
        self._actions = []
        self._lock = threading.Lock()
        self._recent = {}

    def _load(self):
        try:
            stat = os.stat(ACTIONS_FILE)
        except FileNotFoundError:
            self._stamp, self._actions = None, []
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return
        try:
            with open(ACTIONS_FILE, encoding="utf-8") as handle:
                actions = json.load(handle).get("actions", [])
        except (OSError, ValueError) as error:
            LOG.error("cannot read budget actions %s: %s", ACTIONS_FILE, error)
            return
        self._stamp, self._actions = stamp, actions

    @staticmethod
    def _attribution(user_api_key_dict, data):
        metadata = data.get("metadata") or data.get("litellm_metadata") or {}
        if not isinstance(metadata, dict):
            metadata = {}
        team = (
            getattr(user_api_key_dict, "team_alias", None)
            or metadata.get("team")
            or getattr(user_api_key_dict, "team_id", None)
            or ""
        )
        return str(team), str(metadata.get("cost_center") or ""), str(data.get("model") or "")

    @staticmethod
    def _covers(action, team, cost_center, model):
        def matches(values, value):
            return not values or value in values

        return (
            matches(action.get("teams"), team)
            and matches(action.get("costCenters"), cost_center)
            and matches(action.get("models"), model)
        )

    def _over_rate(self, key, per_minute):
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._recent.get(key, []) if now - t < 60.0]
            limited = len(recent) >= per_minute
            if not limited:
                recent.append(now)
            self._recent[key] = recent
            return limited

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        self._load()
        if not self._actions or not isinstance(data, dict):
            return data
        team, cost_center, model = self._attribution(user_api_key_dict, data)
        for action in self._actions:
            if not self._covers(action, team, cost_center, model):
                continue
            kind = action.get("action")
            if kind == "Block":
                raise HTTPException(
                    status_code=429,
                    detail="token budget {} exceeded: requests of team {!r} are blocked until the period ends".format(
                        action.get("budget"), team
                    ),
                )
            if kind == "Throttle":
                per_minute = int(action.get("requestsPerMinute") or 10)
                # One window per budget: the limit is the whole scope's, per gateway replica.
                if self._over_rate(action.get("budget"), per_minute):
                    raise HTTPException(
                        status_code=429,
                        detail="token budget {} throttles its scope to {} requests per minute".format(
                            action.get("budget"), per_minute
                        ),
                    )
            if kind == "Downgrade" and action.get("downgradeTo"):
                data["model"] = action["downgradeTo"]
        return data


guard = SovereignGuard()
