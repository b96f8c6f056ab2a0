// tidegate's version, for the binary (-v, Server header) and, later, for
// Lua (ngx.config.nginx_version-style queries through FFI).
#pragma once

#define TIDEGATE_VERSION_MAJOR 0
#define TIDEGATE_VERSION_MINOR 1
#define TIDEGATE_VERSION_PATCH 0
#define TIDEGATE_VERSION "0.1.0"
