-- Runs the Argo CD health checks of this directory against sample objects, the way Argo CD
-- does: each script sees the object as the global `obj` and returns {status, message}.
-- Usage: lua5.4 deploy/argocd/health/test.lua   (make deploy-check runs it)
local dir = (arg and arg[0] or ""):match("(.*/)") or "./"

local function cond(t, status, reason, message)
  return { type = t, status = status, reason = reason, message = message or "" }
end

local function object(generation, observed, conditions, extra)
  local status = nil
  if conditions ~= nil then
    status = { observedGeneration = observed, conditions = conditions }
    for k, v in pairs(extra or {}) do status[k] = v end
  end
  return { apiVersion = "sovereign.ai/v1alpha1", metadata = { name = "x", generation = generation }, status = status }
end

local elsewhere = "region eu is managed by another operator instance; this one manages in"

local cases = {
  -- SovereignRegion
  { "SovereignRegion", "no status yet", object(1, nil, nil), "Progressing" },
  { "SovereignRegion", "ready", object(2, 2, { cond("Ready", "True", "Available"), cond("GatewayReady", "True", "Available") }), "Healthy" },
  { "SovereignRegion", "rolling out", object(2, 2, { cond("Ready", "False", "Progressing", "gateway 0/2") }), "Progressing" },
  { "SovereignRegion", "stale status", object(3, 2, { cond("Ready", "True", "Available") }), "Progressing" },
  { "SovereignRegion", "no compliant backend", object(1, 1, { cond("Ready", "False", "NoCompliantBackend") }), "Degraded" },
  { "SovereignRegion", "managed elsewhere", object(1, 1, { cond("Ready", "Unknown", "ManagedElsewhere", elsewhere), cond("GatewayReady", "Unknown", "ManagedElsewhere", elsewhere) }), "Healthy" },
  -- InferenceBackend
  { "InferenceBackend", "available", object(1, 1, { cond("Ready", "True", "Available"), cond("Compliant", "True", "WithinJurisdiction") }), "Healthy" },
  { "InferenceBackend", "pods starting", object(1, 1, { cond("Ready", "False", "Progressing", "0/1 ready"), cond("Compliant", "True", "WithinJurisdiction") }), "Progressing" },
  { "InferenceBackend", "secret missing", object(1, 1, { cond("Ready", "False", "SecretNotFound"), cond("Compliant", "True", "WithinJurisdiction") }), "Degraded" },
  { "InferenceBackend", "hosted abroad", object(1, 1, { cond("Ready", "True", "Configured"), cond("Compliant", "False", "HostedOutsideJurisdiction") }), "Degraded" },
  { "InferenceBackend", "parked", object(1, 1, { cond("Ready", "False", "Parked"), cond("Compliant", "True", "WithinJurisdiction") }), "Suspended" },
  { "InferenceBackend", "managed elsewhere", object(1, 1, { cond("Ready", "Unknown", "ManagedElsewhere", elsewhere), cond("Compliant", "Unknown", "ManagedElsewhere", elsewhere) }), "Healthy" },
  -- ResidencyPolicy
  { "ResidencyPolicy", "not audited", object(1, nil, nil), "Progressing" },
  { "ResidencyPolicy", "compliant", object(1, 1, { cond("Ready", "True", "Audited"), cond("Enforcing", "True", "AdmissionInstalled") }, { violationCount = 0 }), "Healthy" },
  { "ResidencyPolicy", "violations", object(1, 1, { cond("Ready", "True", "Audited") }, { violationCount = 3 }), "Degraded" },
  { "ResidencyPolicy", "invalid sink", object(1, 1, { cond("Ready", "False", "InvalidSink") }), "Degraded" },
  { "ResidencyPolicy", "managed elsewhere", object(1, 1, { cond("Ready", "Unknown", "ManagedElsewhere", elsewhere) }), "Healthy" },
  -- TokenBudget
  { "TokenBudget", "not evaluated", object(1, nil, nil), "Progressing" },
  { "TokenBudget", "within budget", object(1, 1, { cond("WithinBudget", "True", "UnderLimit"), cond("AtRisk", "False", "NotAtRisk"), cond("Exceeded", "False", "UnderLimit") }), "Healthy" },
  { "TokenBudget", "at risk", object(1, 1, { cond("WithinBudget", "False", "AtRisk"), cond("AtRisk", "True", "ForecastOverLimit", "forecast 130%"), cond("Exceeded", "False", "UnderLimit") }), "Healthy" },
  { "TokenBudget", "exceeded", object(1, 1, { cond("WithinBudget", "False", "LimitReached"), cond("AtRisk", "False", "NotAtRisk"), cond("Exceeded", "True", "LimitReached", "spent 101%") }), "Degraded" },
  { "TokenBudget", "currency mismatch", object(1, 1, { cond("WithinBudget", "Unknown", "CurrencyMismatch"), cond("AtRisk", "Unknown", "CurrencyMismatch"), cond("Exceeded", "Unknown", "CurrencyMismatch") }), "Degraded" },
  { "TokenBudget", "invalid time zone", object(1, 1, { cond("WithinBudget", "Unknown", "InvalidSpec"), cond("AtRisk", "Unknown", "InvalidSpec"), cond("Exceeded", "Unknown", "InvalidSpec") }), "Degraded" },
  { "TokenBudget", "managed elsewhere", object(1, 1, { cond("WithinBudget", "Unknown", "ManagedElsewhere", elsewhere) }), "Healthy" },
}

local failed, passed = 0, 0
for _, case in ipairs(cases) do
  local kind, name, obj, want = case[1], case[2], case[3], case[4]
  local env = setmetatable({ obj = obj }, { __index = _G })
  -- As render-cm.sh assembles it for argocd-cm: common.lua, then the kind's script.
  local function slurp(path)
    local file = assert(io.open(path, "r"))
    local text = file:read("a")
    file:close()
    return text
  end
  local source = slurp(dir .. "common.lua") .. slurp(dir .. kind .. ".lua")
  local chunk, err = load(source, kind, "t", env)
  local ok, hs
  if chunk == nil then
    ok, hs = false, err
  else
    ok, hs = pcall(chunk)
  end
  if not ok then
    failed = failed + 1
    print(string.format("FAIL %s / %s: error: %s", kind, name, tostring(hs)))
  elseif type(hs) ~= "table" or hs.status ~= want or type(hs.message) ~= "string" then
    failed = failed + 1
    print(string.format("FAIL %s / %s: want %s, got %s (%s)", kind, name, want,
      tostring(hs and hs.status), tostring(hs and hs.message)))
  else
    passed = passed + 1
    print(string.format("ok   %s / %s: %s (%s)", kind, name, hs.status, hs.message))
  end
end
print(string.format("argocd health: %d passed, %d failed", passed, failed))
if failed > 0 then os.exit(1) end
