-- Argo CD health of a ResidencyPolicy (sovereign.ai/v1alpha1). Healthy: Ready=True and the
-- last audit found no violation, or ManagedElsewhere. Degraded: violations (the cluster is not
-- compliant: status.violations lists them) or Ready=False (e.g. InvalidSink). Progressing:
-- not audited yet.
-- (common.lua, in front of this script, defines condition, verdict, common_health and ready_health.)
local hs = common_health(obj)
if hs ~= nil then return hs end
local status = obj.status

local violations = status.violationCount or 0
local ready = condition(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" and violations > 0 then
  return { status = "Degraded", message = tostring(violations) .. " residency violations (status.violations lists them)" }
end
return ready_health(status)
