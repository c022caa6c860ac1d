-- Argo CD health of a SovereignRegion (sovereign.ai/v1alpha1). Healthy: Ready=True, or the
-- region belongs to another cluster (ManagedElsewhere). Progressing: not reconciled yet, or
-- Ready=False/Unknown while children roll out (reason Progressing). Degraded: any other
-- Ready=False (e.g. NoCompliantBackend, Unschedulable).
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

local ready = condition(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "No Ready condition yet"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "Unknown" or ready.reason == "Progressing" then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
return hs
