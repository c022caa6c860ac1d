-- Argo CD health of an InferenceBackend (sovereign.ai/v1alpha1). Healthy: Ready=True, or its
-- region belongs to another cluster (ManagedElsewhere). Suspended: parked (replicas.min 0).
-- Progressing: not reconciled yet, or pods starting. Degraded: not compliant with its
-- jurisdiction or residency policies, or Ready=False for any other reason (RegionNotFound,
-- SecretNotFound, Unschedulable, ...).
-- (common.lua, in front of this script, defines condition, verdict, common_health and ready_health.)
local hs = common_health(obj)
if hs ~= nil then return hs end
local status = obj.status

local compliant = condition(status.conditions, "Compliant")
if compliant ~= nil and compliant.status == "False" then
  return verdict("Degraded", compliant)
end
local parked = condition(status.conditions, "Ready")
if parked ~= nil and parked.status == "False" and parked.reason == "Parked" then
  -- The reason leads, as for every other verdict: an empty message would tell nothing.
  return verdict("Suspended", parked)
end
return ready_health(status)
