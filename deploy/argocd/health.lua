-- Argo CD health of a ServiceBuild (servicebuild.dev/v1alpha1), from the conditions the operator writes:
-- Stalled=True is Degraded, Reconciling=True or a spec the operator has not observed yet is Progressing,
-- Ready=True is Healthy. Argo CD runs it under gopher-lua (Lua 5.1) with only the base, package, table
-- and a safe os library: no string or math library here, only operators.
local hs = {
  status = "Progressing",
  message = "Waiting for the operator to report on this ServiceBuild.",
}

if obj.status == nil then
  return hs
end

local generation = tonumber(obj.metadata.generation)
local observed = tonumber(obj.status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation .. "."
  return hs
end

local conditions = {}
for _, condition in ipairs(obj.status.conditions or {}) do
  conditions[condition.type] = condition
end

local function holds(condition)
  return condition ~= nil and condition.status == "True"
end

local function described(condition)
  return condition.reason .. ": " .. (condition.message or "")
end

if holds(conditions.Stalled) then
  -- A build that failed for good, or a spec it cannot build: nothing changes until the spec does.
  hs.status = "Degraded"
  hs.message = described(conditions.Stalled)
elseif holds(conditions.Reconciling) then
  hs.message = described(conditions.Reconciling)
elseif holds(conditions.Ready) then
  hs.status = "Healthy"
  hs.message = described(conditions.Ready)
elseif conditions.Ready ~= nil then
  -- Not ready, yet neither stalled nor reconciling (another operator version's status): nothing the
  -- operator gave up on, so still on its way.
  hs.message = described(conditions.Ready)
end
return hs
