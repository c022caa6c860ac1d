#!/usr/bin/env python3
"""Runs the gateway's budget guard (sovereign_guard.py, as the operator ships it in the gateway
ConfigMap) inside LiteLLM's own Python, with LiteLLM's own key object: Block, Throttle and
Downgrade, scope matching, no actions file, and a malformed one; then the guard's watch of its
ConfigMap against a small stand-in of the API server's list/watch protocol (field selector
and bearer token checked, bookmarks, 410 Gone after compaction, an outage, a token rotation),
and which source wins when (the watch, its last known actions, the mounted file). The real
API server and RBAC are exercised by e2e/tests/overshoot.rs.

Usage: <venv>/bin/python test_guard.py PATH/TO/sovereign_guard.py WORK_DIR
Exit 0 and "guard ok" when every check holds; an AssertionError otherwise.
"""
import asyncio
import importlib.util
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    await watch_checks()
    print("guard ok")


NAMESPACE, NAME, TOKEN = "sovereign-eu", "sovereign-budget-actions", "token-one"


class FakeApi:
    """The list/watch of one namespace's ConfigMaps as the API server answers them."""

    def __init__(self):
        self.cond = threading.Condition()
        self.version = 1
        self.config_map = None
        self.events = []  # (resourceVersion, type, object)
        self.compacted = 0
        self.generation = 0  # bumped to end every open watch
        self.lists = 0
        self.refused = []
        self.token = TOKEN
        self.server = None
        self.port = None

    def put(self, actions):
        with self.cond:
            self.version += 1
            kind = "MODIFIED" if self.config_map else "ADDED"
            self.config_map = {
                "metadata": {"name": NAME, "namespace": NAMESPACE,
                             "resourceVersion": str(self.version)},
                "data": {"actions.json": json.dumps({"actions": actions})},
            }
            self.events.append((self.version, kind, self.config_map))
            self.cond.notify_all()

    def compact(self):
        """Forgets history (as etcd compaction does) and ends every watch."""
        with self.cond:
            self.compacted = self.version + 1
            self.events = []
            self.generation += 1
            self.cond.notify_all()

    def start(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                from urllib.parse import parse_qs, urlsplit
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if self.headers.get("Authorization") != "Bearer " + api.token:
                    api.refused.append("401")
                    return self.reply(401, {"kind": "Status", "code": 401})
                # What RBAC with resourceNames allows: this one name, by field selector.
                if (url.path != "/api/v1/namespaces/{}/configmaps".format(NAMESPACE)
                        or query.get("fieldSelector") != "metadata.name=" + NAME):
                    api.refused.append(self.path)
                    return self.reply(403, {"kind": "Status", "code": 403})
                if query.get("watch") not in ("1", "true"):
                    with api.cond:
                        api.lists += 1
                        items = [api.config_map] if api.config_map else []
                        body = {"metadata": {"resourceVersion": str(api.version)}, "items": items}
                    return self.reply(200, body)
                since = int(query.get("resourceVersion") or 0)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                with api.cond:
                    generation = api.generation
                    if since < api.compacted:
                        self.line({"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                               "message": "too old resource version"}})
                        return
                sent = since
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 60)
                self.line({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(since)}}})
                while time.monotonic() < deadline:
                    with api.cond:
                        if api.generation != generation:
                            return
                        pending = [e for e in api.events if e[0] > sent]
                        if not pending:
                            api.cond.wait(0.2)
                            continue
                    for version, kind, obj in pending:
                        self.line({"type": kind, "object": obj})
                        sent = version

            def line(self, obj):
                self.wfile.write((json.dumps(obj) + "\n").encode())
                self.wfile.flush()

            def reply(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def outage(self):
        """The API server goes away: no new connection, and the open watches end."""
        self.server.shutdown()
        self.server.server_close()
        with self.cond:
            self.generation += 1
            self.cond.notify_all()


async def until(what, check, seconds=20.0):
    """Polls `check` (a coroutine function) until it is true; a deadline, not a measurement."""
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, "gave up waiting for " + what
        await asyncio.sleep(0.02)


async def watch_checks():
    global guard
    api = FakeApi()
    api.start()
    token_file = os.path.join(WORK, "token")
    with open(token_file, "w", encoding="utf-8") as handle:
        handle.write(TOKEN + "\n")
    os.environ["SOVEREIGN_API_SERVER"] = "http://127.0.0.1:{}".format(api.port)
    os.environ["SOVEREIGN_ACTIONS_CONFIGMAP"] = "{}/{}".format(NAMESPACE, NAME)
    os.environ["SOVEREIGN_API_TOKEN_FILE"] = token_file
    write([])
    guard = module.SovereignGuard()

    async def blocked():
        return (await call("search", "CC-1", "large-eu"))[0] == 429

    async def allowed():
        return not await blocked()

    # No ConfigMap yet: nothing in force. Then a Block written to the API reaches the guard
    # through the watch, while the mounted file still says nothing.
    assert await allowed()
    await until("the first list", lambda: asyncio.sleep(0, guard._watch.healthy))
    block = [{"budget": "ns/search", "action": "Block", "teams": ["search"]}]
    started = time.monotonic()
    api.put(block)
    await until("the Block through the watch", blocked)
    print("watch: ConfigMap write to 429 in {:.0f} ms (stand-in API server)".format(
        (time.monotonic() - started) * 1000))
    assert await call("support", "CC-1", "large-eu") == (200, "large-eu")

    # Compaction: the watch gets 410 Gone, lists again and still sees the change made since.
    lists = api.lists
    api.compact()
    api.put([])
    await until("the lift after a 410 and a new list", allowed)
    assert api.lists > lists, "no new list after 410 Gone"

    # The API server goes away with a Block in force: the guard keeps it (a blink of the
    # network does not lift a Block) even though the mounted file says nothing...
    api.put(block)
    await until("the Block again", blocked)
    api.outage()
    await until("the watch noticing the outage", lambda: asyncio.sleep(0, not guard._watch.healthy))
    assert await blocked(), "the last known actions stay in force while the API is away"
    # ...until the mounted file changes after the watch was lost: the kubelet's copy is then
    # the newest news, and it lifts the Block.
    write([{"budget": "ns/support", "action": "Block", "teams": ["support"]}])
    assert await allowed(), "the file written after the outage wins"
    assert (await call("support", "CC-1", "large-eu"))[0] == 429

    # The API server comes back, with a rotated token: the guard re-reads the token file and
    # the watch wins again (its view: the search Block).
    api.token = "token-two"
    with open(token_file + ".tmp", "w", encoding="utf-8") as handle:
        handle.write("token-two\n")
    os.replace(token_file + ".tmp", token_file)
    api.start()
    await until("the watch back", lambda: asyncio.sleep(0, guard._watch.healthy))
    await until("the API's view again", blocked)
    assert await call("support", "CC-1", "large-eu") == (200, "large-eu")
    assert all(r in ("401",) for r in api.refused), api.refused
    guard._watch.stop()
    for name in ("SOVEREIGN_API_SERVER", "SOVEREIGN_ACTIONS_CONFIGMAP", "SOVEREIGN_API_TOKEN_FILE"):
        del os.environ[name]


asyncio.run(main())
