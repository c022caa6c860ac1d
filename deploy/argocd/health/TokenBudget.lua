-- Argo CD health of a TokenBudget (sovereign.ai/v1alpha1). Healthy: within budget (AtRisk is
-- reported in the message: a forecast, not a fault), or ManagedElsewhere. Degraded: Exceeded
-- (threshold actions such as Block apply); a budget counted by several clusters whose peers'
-- totals are not current (PeersCurrent=False: PeerStale, it enforces on the last known
-- totals; FailClosed, it blocks its scope here until they are) — someone must restore the
-- peer credential or network; or a budget that cannot be evaluated. Progressing: not
-- evaluated yet.
-- (common.lua, in front of this script, defines condition, common_health and ready_health.)
local hs = common_health(obj)
if hs ~= nil then return hs end
hs = {}
local status = obj.status

local exceeded = condition(status.conditions, "Exceeded")
if exceeded ~= nil and exceeded.status == "True" then
  hs.status = "Degraded"
  hs.message = "Exceeded: " .. (exceeded.message or "")
  return hs
end
-- Present only on a budget whose scope spans other clusters (spec.global).
local peers = condition(status.conditions, "PeersCurrent")
if peers ~= nil and peers.status == "False" then
  hs.status = "Degraded"
  hs.message = (peers.reason or "") .. ": " .. (peers.message or "")
  return hs
end
local at_risk = condition(status.conditions, "AtRisk")
local within = condition(status.conditions, "WithinBudget")
-- Unknown (not ManagedElsewhere): the budget cannot be evaluated — an unknown time zone
-- (InvalidSpec) or usage in another currency (CurrencyMismatch). Someone must act.
if within ~= nil and within.status == "Unknown" then
  hs.status = "Degraded"
  hs.message = (within.reason or "") .. ": " .. (within.message or "")
  return hs
end
if at_risk ~= nil and at_risk.status == "True" then
  hs.status = "Healthy"
  hs.message = "AtRisk: " .. (at_risk.message or "")
  return hs
end
if within ~= nil then
  hs.status = "Healthy"
  hs.message = (within.reason or "") .. ": " .. (within.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = "Not evaluated yet"
return hs
