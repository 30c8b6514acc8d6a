function polyplug_init(_reg, _ctx)
  error('deliberate runtime error')
end
