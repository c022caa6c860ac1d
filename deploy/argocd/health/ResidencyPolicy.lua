-- Argo CD health of a ResidencyPolicy (sovereign.ai/v1alpha1). Healthy: Ready=True and the
-- last audit found no violation, or ManagedElsewhere. Degraded: violations (the cluster is not
-- compliant: status.violations lists them) or Ready=False (e.g. InvalidSink). Progressing:
-- not audited yet.
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

local violations = status.violationCount or 0
local ready = condition(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" and violations > 0 then
  hs.status = "Degraded"
  hs.message = tostring(violations) .. " residency violations (status.violations lists them)"
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
