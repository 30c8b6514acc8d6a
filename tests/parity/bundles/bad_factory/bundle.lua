-- parity.badfactory@1: the factory builds the default impl, then refuses every
-- further instance.
local made = 0
local function factory(_host)
    made = made + 1
    if made > 1 then
        error("factory refuses instance #" .. made)
    end
    return {}
end
function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        ["parity.badfactory"] = {
            contract_version = 2,
            factory          = factory,
            functions        = { [0] = function() end },
        },
    }, { code = 0 }
end
