-- polyplug_abi: the same module as `abi` (ABI cdefs, enum tables, StringView and id helpers).
return require("abi")
