-- Argo CD health of a TokenBudget (sovereign.ai/v1alpha1). Healthy: within budget (AtRisk is
-- reported in the message: a forecast, not a fault), or ManagedElsewhere. Degraded: Exceeded
-- (threshold actions such as Block apply); a budget counted by several clusters whose peers'
-- totals are not current (PeersCurrent=False: PeerStale, it enforces on the last known
-- totals; FailClosed, it blocks its scope here until they are) — someone must restore the
-- peer credential or network; or a budget that cannot be evaluated. Progressing: not
-- evaluated yet.
-- (common.lua, in front of this script, defines condition, verdict, common_health and ready_health.)
local hs = common_health(obj)
if hs ~= nil then return hs end
local conditions = obj.status.conditions

local exceeded = condition(conditions, "Exceeded")
if exceeded ~= nil and exceeded.status == "True" then
  return verdict("Degraded", exceeded, "Exceeded")
end
-- Present only on a budget whose scope spans other clusters (spec.global).
local peers = condition(conditions, "PeersCurrent")
if peers ~= nil and peers.status == "False" then
  return verdict("Degraded", peers)
end
local at_risk = condition(conditions, "AtRisk")
local within = condition(conditions, "WithinBudget")
-- Unknown (not ManagedElsewhere): the budget cannot be evaluated — an unknown time zone
-- (InvalidSpec) or usage in another currency (CurrencyMismatch). Someone must act.
if within ~= nil and within.status == "Unknown" then
  return verdict("Degraded", within)
end
if at_risk ~= nil and at_risk.status == "True" then
  return verdict("Healthy", at_risk, "AtRisk")
end
if within ~= nil then
  return verdict("Healthy", within)
end
return { status = "Progressing", message = "Not evaluated yet" }
