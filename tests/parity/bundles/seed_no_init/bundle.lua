local x = 1  -- no polyplug_init
