"""Budget actions of sovereign-operator, enforced inside the LiteLLM proxy.

The operator's usage controller writes the TokenBudget actions in force in a region
(Block, Throttle, Downgrade of crossed thresholds) into the ConfigMap
``sovereign-budget-actions`` of the region namespace. This pre-call hook learns them two ways:

- through the API server, within seconds: a watch of exactly that ConfigMap
  (``SOVEREIGN_ACTIONS_CONFIGMAP`` = ``namespace/name``; ``fieldSelector=metadata.name=…``,
  which the gateway's Role allows by ``resourceNames``), with the pod's projected
  ServiceAccount token (``SOVEREIGN_API_TOKEN_FILE``, re-read at every connection: the
  kubelet rotates it) and the cluster CA (``SOVEREIGN_API_CA_FILE``), at
  ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (``SOVEREIGN_API_SERVER``
  overrides). A watch that ends is resumed from its resourceVersion; 410 Gone lists again;
  errors reconnect with a jittered back-off of 0.5 s doubling to 30 s;
- from the mounted copy of the same ConfigMap (optional volume, ``SOVEREIGN_BUDGET_ACTIONS``
  names the file), which the kubelet refreshes only after its sync period and cache TTL (a
  minute or more): the fallback.

Which one counts (docs/decisions.md, "The guard watches its actions"): the watch while it is
connected; when the API server is unreachable, the last actions the watch saw (a Block is not
lifted because the network blinked), until the mounted file changes after the watch was lost
(the kubelet still reaches the API server, so its copy is then the newer news); the file
alone when no watch is configured or it never synced. With neither, no action is in force:
budgets fail open; residency, enforced by the model list, fails closed.

For each request, the actions whose scope (teams, cost centres, models) covers it apply:

- Block: the request is refused with HTTP 429;
- Throttle: at most ``requestsPerMinute`` requests per minute per gateway replica;
- Downgrade: the request is served by ``downgradeTo`` (a model of this same gateway, so of
  this jurisdiction; the operator leaves out targets the region does not serve).

A request's team is its key's team alias, else the ``team`` request metadata; its cost
centre is the ``cost_center`` metadata: the same attribution the usage collector reads from
the ``metadata_team`` / ``metadata_cost_center`` labels. Unreadable actions (file or
ConfigMap) are logged and ignored: the last good ones stay in force.

Python standard library only (http.client, ssl, threading): the watch runs in a daemon
thread beside LiteLLM's event loop and never blocks a request.
"""

import http.client
import json
import logging
import os
import random
import ssl
import threading
import time
import urllib.parse

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

LOG = logging.getLogger("sovereign_guard")
ACTIONS_FILE = os.environ.get(
    "SOVEREIGN_BUDGET_ACTIONS", "/etc/sovereign/actions/actions.json"
)
ACTIONS_KEY = "actions.json"
# The API server closes each watch after this long; the guard resumes it from where it was.
WATCH_SECONDS = 240
# A connection silent for this long is dead (the server sends at least the end of the watch).
READ_TIMEOUT = WATCH_SECONDS + 30
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


def api_server():
    """The API server's base URL, or None outside a cluster (no watch: the file only)."""
    explicit = os.environ.get("SOVEREIGN_API_SERVER")
    if explicit:
        return explicit.rstrip("/")
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return None
    if ":" in host:
        host = "[{}]".format(host)
    return "https://{}:{}".format(host, os.environ.get("KUBERNETES_SERVICE_PORT", "443"))


def parse_actions(text, where):
    """The actions of an actions document, or None (logged) when it is not one."""
    try:
        document = json.loads(text)
        actions = document.get("actions", [])
        if not isinstance(actions, list):
            raise ValueError("actions is not a list")
        return actions
    except (ValueError, AttributeError) as error:
        LOG.error("cannot read budget actions %s: %s", where, error)
        return None


class Gone(Exception):
    """HTTP 410 or a watch ERROR with code 410: the resourceVersion is compacted; list again."""


class ActionsWatch:
    """Watches one ConfigMap through the API server in a daemon thread.

    ``actions`` is None until the first list succeeded, then the actions last seen;
    ``healthy`` is whether a list or watch is open now; ``lost_at`` (monotonic) is when it
    last stopped being.
    """

    def __init__(self, server, namespace, name, token_file, ca_file):
        self.server, self.namespace, self.name = server, namespace, name
        self.token_file, self.ca_file = token_file, ca_file
        self.actions = None
        self.healthy = False
        self.lost_at = None
        self.changed_at = None
        self.events = 0
        self._thread = None
        self._stop = threading.Event()

    def start(self):
        self._thread = threading.Thread(
            target=self.run, name="sovereign-guard-watch", daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

    def _connection(self):
        url = urllib.parse.urlsplit(self.server)
        if url.scheme == "https":
            cafile = self.ca_file if self.ca_file and os.path.exists(self.ca_file) else None
            context = ssl.create_default_context(cafile=cafile)
            return http.client.HTTPSConnection(
                url.hostname, url.port or 443, timeout=READ_TIMEOUT, context=context
            )
        return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=READ_TIMEOUT)

    def _request(self, query):
        with open(self.token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        # The collection with a metadata.name field selector, never the deprecated /watch/
        # path: that is the form the API server authorises against resourceNames.
        query = dict(query, fieldSelector="metadata.name=" + self.name)
        path = "/api/v1/namespaces/{}/configmaps?{}".format(
            urllib.parse.quote(self.namespace), urllib.parse.urlencode(query)
        )
        connection = self._connection()
        try:
            connection.request(
                "GET",
                path,
                headers={"Authorization": "Bearer " + token, "Accept": "application/json"},
            )
            response = connection.getresponse()
        except BaseException:
            connection.close()
            raise
        if response.status == 410:
            connection.close()
            raise Gone()
        if response.status != 200:
            body = response.read(500).decode("utf-8", "replace")
            connection.close()
            raise OSError("HTTP {} from {}: {}".format(response.status, path, body))
        return connection, response

    def _set(self, config_map):
        if config_map is None:
            # No ConfigMap: no budget has acted yet (the same as no file).
            actions = []
        else:
            text = (config_map.get("data") or {}).get(ACTIONS_KEY)
            actions = [] if text is None else parse_actions(
                text, "ConfigMap {}/{}".format(self.namespace, self.name)
            )
            if actions is None:
                return
        if actions != self.actions:
            self.changed_at = time.monotonic()
            LOG.info("budget actions from the API server: %d in force", len(actions))
        self.actions = actions

    def _list(self):
        connection, response = self._request({})
        try:
            body = json.loads(response.read())
        finally:
            connection.close()
        items = body.get("items") or []
        self._set(items[0] if items else None)
        self._up()
        return (body.get("metadata") or {}).get("resourceVersion") or "0"

    def _watch(self, version):
        connection, response = self._request(
            {
                "watch": "1",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_SECONDS),
            }
        )
        self._up()
        try:
            while not self._stop.is_set():
                line = response.readline()
                if not line:
                    return version
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise OSError("watch error: {}".format(obj.get("message")))
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                self.events += 1
                if kind in ("ADDED", "MODIFIED"):
                    self._set(obj)
                elif kind == "DELETED":
                    self._set(None)
            return version
        finally:
            connection.close()

    def _up(self):
        if not self.healthy:
            LOG.info(
                "watching budget actions ConfigMap %s/%s at %s",
                self.namespace, self.name, self.server,
            )
        self.healthy = True

    def _down(self, error):
        if self.healthy or self.lost_at is None:
            LOG.warning(
                "budget actions watch of %s/%s lost (%s): keeping the last known actions, "
                "and the mounted file if it changes", self.namespace, self.name, error,
            )
        if self.healthy or self.lost_at is None:
            self.lost_at = time.monotonic()
        self.healthy = False

    def run(self):
        delay, version = BACKOFF_MIN, None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                delay = BACKOFF_MIN
            except Gone:
                version = None
            except Exception as error:  # noqa: BLE001 - network, TLS, HTTP, token: retry
                self._down(error)
                self._stop.wait(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, BACKOFF_MAX)


def start_watch():
    """The watch of ``SOVEREIGN_ACTIONS_CONFIGMAP``, or None when not in a cluster."""
    target = os.environ.get("SOVEREIGN_ACTIONS_CONFIGMAP", "")
    server = api_server()
    namespace, _, name = target.partition("/")
    if not (server and namespace and name):
        return None
    return ActionsWatch(
        server,
        namespace,
        name,
        os.environ.get("SOVEREIGN_API_TOKEN_FILE", "/var/run/secrets/sovereign/api/token"),
        os.environ.get("SOVEREIGN_API_CA_FILE", "/var/run/secrets/sovereign/api/ca.crt"),
    ).start()


class SovereignGuard(CustomLogger):
    def __init__(self):
        super().__init__()
        self._stamp = None
        self._file_actions = []
        self._file_changed_at = None
        self._lock = threading.Lock()
        self._recent = {}
        self._watch = None
        self._watch_pid = None

    def _load(self):
        try:
            stat = os.stat(ACTIONS_FILE)
        except FileNotFoundError:
            if self._stamp is not None:
                self._file_changed_at = time.monotonic()
            self._stamp, self._file_actions = None, []
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return
        try:
            with open(ACTIONS_FILE, encoding="utf-8") as handle:
                actions = parse_actions(handle.read(), ACTIONS_FILE)
        except OSError as error:
            LOG.error("cannot read budget actions %s: %s", ACTIONS_FILE, error)
            return
        if actions is None:
            return
        self._stamp, self._file_actions = stamp, actions
        self._file_changed_at = time.monotonic()

    def _actions(self):
        """The actions in force now (see the module's docstring for which source counts)."""
        # One watch per process: a LiteLLM worker forked after import starts its own.
        if self._watch_pid != os.getpid():
            self._watch_pid = os.getpid()
            self._watch = start_watch()
        self._load()
        watch = self._watch
        if watch is None or watch.actions is None:
            return self._file_actions
        if watch.healthy:
            return watch.actions
        if (
            self._file_changed_at is not None
            and watch.lost_at is not None
            and self._file_changed_at > watch.lost_at
        ):
            return self._file_actions
        return watch.actions

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
        actions = self._actions()
        if not actions or not isinstance(data, dict):
            return data
        team, cost_center, model = self._attribution(user_api_key_dict, data)
        for action in actions:
            if not isinstance(action, dict) or not self._covers(action, team, cost_center, model):
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
