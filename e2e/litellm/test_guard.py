#!/usr/bin/env python3
"""Runs the gateway's budget guard (sovereign_guard.py, as the operator ships it in the gateway
ConfigMap) inside LiteLLM's own Python, with LiteLLM's own key object: Block, Throttle and
Downgrade, scope matching, no actions file, and a malformed one.

Usage: <venv>/bin/python test_guard.py PATH/TO/sovereign_guard.py WORK_DIR
Exit 0 and "guard ok" when every check holds; an AssertionError otherwise.
"""
import asyncio
import importlib.util
import json
import os
import sys

GUARD, WORK = sys.argv[1], sys.argv[2]
ACTIONS = os.path.join(WORK, "actions.json")
os.environ["SOVEREIGN_BUDGET_ACTIONS"] = ACTIONS
# As the gateway Deployment sets it: no fetch of the model cost map from GitHub.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
if os.path.exists(ACTIONS):
    os.remove(ACTIONS)

spec = importlib.util.spec_from_file_location("sovereign_guard", GUARD)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from fastapi import HTTPException  # noqa: E402
from litellm.proxy._types import UserAPIKeyAuth  # noqa: E402

guard = module.guard
key = UserAPIKeyAuth(api_key="sk-test")


def write(actions):
    # As kubelet does: a new file swapped in atomically.
    tmp = ACTIONS + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(actions if isinstance(actions, str) else json.dumps({"actions": actions}))
    os.replace(tmp, ACTIONS)


async def call(team, cost_center, model):
    data = {"model": model, "metadata": {"team": team, "cost_center": cost_center}}
    try:
        out = await guard.async_pre_call_hook(key, None, data, "completion")
        return 200, out["model"]
    except HTTPException as refused:
        return refused.status_code, str(refused.detail)


async def main():
    # No actions file (no budget acted yet): everything passes, unchanged.
    assert await call("search", "CC-1", "large-eu") == (200, "large-eu")

    write([{"budget": "ns/search", "action": "Block", "teams": ["search"], "costCenters": [], "models": []}])
    status, detail = await call("search", "CC-1", "large-eu")
    assert status == 429 and "ns/search" in detail, (status, detail)
    assert await call("support", "CC-1", "large-eu") == (200, "large-eu")

    write([
        {"budget": "ns/support", "action": "Downgrade", "teams": ["support"], "costCenters": [],
         "models": ["large-eu"], "downgradeTo": "small-eu"},
        {"budget": "ns/cc9", "action": "Throttle", "teams": [], "costCenters": ["CC-9"],
         "models": [], "requestsPerMinute": 2},
    ])
    assert await call("support", "CC-1", "large-eu") == (200, "small-eu")
    assert await call("support", "CC-1", "other") == (200, "other"), "scope names large-eu only"
    assert await call("search", "CC-1", "large-eu") == (200, "large-eu"), "the block was lifted"
    assert (await call("x", "CC-9", "m"))[0] == 200
    assert (await call("y", "CC-9", "m"))[0] == 200
    status, detail = await call("z", "CC-9", "m")
    assert status == 429 and "2 requests per minute" in detail, (status, detail)

    # A malformed file is logged and ignored: the last good actions stay in force.
    write("{not json")
    assert (await call("z", "CC-9", "m"))[0] == 429
    assert await call("support", "CC-1", "large-eu") == (200, "small-eu")

    write([])
    assert await call("support", "CC-1", "large-eu") == (200, "large-eu")
    print("guard ok")


asyncio.run(main())
