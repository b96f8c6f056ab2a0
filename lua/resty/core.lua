-- `require "resty.core"` succeeds as in OpenResty: tidegate's ngx API is
-- already the fast one, so there is nothing to patch in.
local base = require "resty.core.base"

return {
  version = base.version,
}
