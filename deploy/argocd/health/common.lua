-- Shared by the four health checks: render-cm.sh puts this file in front of each kind's
-- script (Argo CD runs every script as one self-contained chunk). Argo CD runs a health
-- customization with only the base, package and table libraries: no string, math or os.
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

-- The verdict `health`, said with condition `c`'s reason and message (or `label` for the
-- reason, where the type says more than the reason).
local function verdict(health, c, label)
  return { status = health, message = (label or c.reason or "") .. ": " .. (c.message or "") }
end

-- The verdicts every kind shares, or nil when the kind's own rules decide.
local function common_health(object)
  local status = object.status
  local generation = object.metadata and object.metadata.generation
  if status == nil or status.conditions == nil or #status.conditions == 0 then
    return { status = "Progressing", message = "Waiting for the sovereign-operator to reconcile" }
  end
  -- One cluster per jurisdiction: the operator of another cluster manages this object; the
  -- one here says so and leaves it alone. That is the intended state, not a fault.
  local elsewhere = managed_elsewhere(status.conditions)
  if elsewhere ~= nil then
    return { status = "Healthy", message = elsewhere.message or "Managed by the operator of another jurisdiction" }
  end
  if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
    return { status = "Progressing", message = "Waiting for the sovereign-operator to reconcile generation " .. tostring(generation) }
  end
  return nil
end

-- Health from the Ready condition: True is Healthy; Unknown or reason Progressing is
-- Progressing; any other False is Degraded.
local function ready_health(status)
  local ready = condition(status.conditions, "Ready")
  if ready == nil then
    return { status = "Progressing", message = "No Ready condition yet" }
  end
  if ready.status == "True" then
    return verdict("Healthy", ready)
  elseif ready.status == "Unknown" or ready.reason == "Progressing" then
    return verdict("Progressing", ready)
  end
  return verdict("Degraded", ready)
end

