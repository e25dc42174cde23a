-- wsuv-scm-1.rockspec: the source of truth for building and installing wsuv.
-- `make all` runs `luarocks make --tree=.rocks` with this file for each Lua
-- version; .ci/check-sources keeps the C source list equal to csrc/*.c.
rockspec_format = "3.0"
package = "wsuv"
version = "scm-1"

source = {
  url = "git+https://github.com/wsuv/wsuv.git",
  branch = "main",
}

description = {
  summary = "WebSocket client and server for Lua, with a sans-IO C core over libuv",
  detailed = [[
wsuv speaks RFC 6455 (and permessage-deflate) from coroutines: one coroutine
per connection on the server, blocking-style calls that yield on the client,
and a non-blocking step()/poll() pair for game loops. The protocol core is
plain C with no I/O and can be linked without Lua (csrc/wsuv.h).
]],
  homepage = "https://github.com/wsuv/wsuv",
  license = "MIT",
  labels = { "websocket", "libuv", "networking" },
}

dependencies = {
  "lua >= 5.1, < 5.5",
}

-- Debian 12: libuv1-dev, libssl-dev, zlib1g-dev (.ci/deps installs them).
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  ZLIB = { header = "zlib.h", library = "z" },
}

build = {
  type = "builtin",
  modules = {
    ["wsuv.core"] = {
      sources = {
        "csrc/ws_errno.c",
        "csrc/ws_mask.c",
        "csrc/ws_utf8.c",
        "csrc/ws_close.c",
        "csrc/ws_frame.c",
        "csrc/ws_handshake.c",
        "csrc/ws_deflate.c",
        "csrc/ws_conn.c",
        "csrc/uv_loop.c",
        "csrc/uv_conn.c",
        "csrc/uv_tls.c",
        "csrc/lua_wsuv.c",
        "csrc/lua_conn.c",
        "csrc/lua_alloc.c",
      },
      -- The builtin backend takes CFLAGS from luarocks' config, not from the
      -- rockspec; the Makefile passes CFLAGS="... -fvisibility=hidden".
      -- -Werror stays off here so that new compilers do not break installs.
      incdirs = {
        "csrc",
        "$(LIBUV_INCDIR)",
        "$(OPENSSL_INCDIR)",
        "$(ZLIB_INCDIR)",
      },
      libdirs = {
        "$(LIBUV_LIBDIR)",
        "$(OPENSSL_LIBDIR)",
        "$(ZLIB_LIBDIR)",
      },
      libraries = { "uv", "ssl", "crypto", "z" },
    },
    ["wsuv"] = "lua/wsuv.lua",
    ["wsuv.scheduler"] = "lua/wsuv/scheduler.lua",
    ["wsuv.conn"] = "lua/wsuv/conn.lua",
    ["wsuv.server"] = "lua/wsuv/server.lua",
    ["wsuv.room"] = "lua/wsuv/room.lua",
    ["wsuv.reconnect"] = "lua/wsuv/reconnect.lua",
    ["wsuv.url"] = "lua/wsuv/url.lua",
    ["wsuv.compat"] = "lua/wsuv/compat.lua",
    ["wsuv.cli"] = "lua/wsuv/cli.lua",
  },
  install = {
    bin = {
      wsuv = "bin/wsuv",
    },
  },
}

test = {
  type = "busted",
}
