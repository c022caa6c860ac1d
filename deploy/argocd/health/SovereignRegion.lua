-- Argo CD health of a SovereignRegion (sovereign.ai/v1alpha1). Healthy: Ready=True, or the
-- region belongs to another cluster (ManagedElsewhere). Progressing: not reconciled yet, or
-- Ready=False/Unknown while children roll out (reason Progressing). Degraded: any other
-- Ready=False (e.g. NoCompliantBackend, Unschedulable).
-- (common.lua, in front of this script, defines condition, common_health and ready_health.)
local hs = common_health(obj)
if hs ~= nil then return hs end
hs = {}
local status = obj.status

return ready_health(status)
