-- spec/peers/peer_opts.lua: the command line of wsuv_server.lua and
-- wsuv_client.lua ("--name value" pairs), loaded with dofile beside them.
local M = {}

-- "off" (or none), "on", or a comma-separated list of the `compression`
-- table's fields: flags by name, numbers as name=N.
function M.compression_of(spec)
  if spec == nil or spec == "off" then
    return nil
  end
  if spec == "on" then
    return true
  end
  local t = {}
  for item in spec:gmatch("[^,]+") do
    local k, v = item:match("^%s*([%w_]+)%s*=%s*(%d+)%s*$")
    if k then
      t[k] = tonumber(v)
    else
      t[item:match("^%s*(.-)%s*$")] = true
    end
  end
  return t
end

-- A setter storing tonumber(value) as opts[field].
function M.number(field)
  return function(opts, v)
    opts[field] = tonumber(v)
  end
end

function M.compression(opts, v)
  opts.compression = M.compression_of(v)
end

-- Reads arg[first], arg[first + 1], ... as pairs into opts through
-- setters[name](opts, value); an unknown name exits with status 2.
function M.parse(first, opts, setters, script)
  local i = first
  while arg[i] do
    local set = setters[arg[i]]
    if not set then
      io.stderr:write(script, ": unknown option ", tostring(arg[i]), "\n")
      os.exit(2)
    end
    set(opts, arg[i + 1])
    i = i + 2
  end
  return opts
end

return M
