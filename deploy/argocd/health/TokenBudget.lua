-- Argo CD health of a TokenBudget (sovereign.ai/v1alpha1). Healthy: within budget (AtRisk is
-- reported in the message: a forecast, not a fault), or ManagedElsewhere. Degraded: Exceeded
-- (threshold actions such as Block apply). Progressing: not evaluated yet.
local function condition(conditions, t)
  for _, c in ipairs(conditions or {}) do
    if c.type == t then return c end
  end
  return nil
end

local function managed_elsewhere(conditions)
  for _, c in ipairs(conditions or {}) do
    if c.reason == "ManagedElsewhere" then return c end
  end
  return nil
end

local hs = {}
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the sovereign-operator to reconcile"
  return hs
end
-- One cluster per jurisdiction: the operator of another cluster manages this object; the
-- one here says so and leaves it alone. That is the intended state, not a fault.
local elsewhere = managed_elsewhere(status.conditions)
if elsewhere ~= nil then
  hs.status = "Healthy"
  hs.message = elsewhere.message or "Managed by the operator of another jurisdiction"
  return hs
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the sovereign-operator to reconcile generation " .. tostring(generation)
  return hs
end

local exceeded = condition(status.conditions, "Exceeded")
if exceeded ~= nil and exceeded.status == "True" then
  hs.status = "Degraded"
  hs.message = "Exceeded: " .. (exceeded.message or "")
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
