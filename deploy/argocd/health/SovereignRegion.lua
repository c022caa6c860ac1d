-- Argo CD health of a SovereignRegion (sovereign.ai/v1alpha1). Healthy: Ready=True, or the
-- region belongs to another cluster (ManagedElsewhere). Progressing: not reconciled yet, or
-- Ready=False/Unknown while children roll out (reason Progressing). Degraded: any other
-- Ready=False, whose reason is the part at fault (e.g. NoCompliantBackend, CABundleNotFound,
-- ObservabilityOutOfRegion).
-- (common.lua, in front of this script, defines condition, verdict, common_health and ready_health.)
local hs = common_health(obj)
if hs ~= nil then return hs end
return ready_health(obj.status)
