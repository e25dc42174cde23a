/* lua_host.c: a plain Lua interpreter, built by `make asan-lua` (Lua 5.4)
 * and `make asan-luajit` (LuaJIT) with ASan+UBSan so that busted, and
 * wsuv.core under it, run sanitized (a sanitized shared object needs the
 * runtime in the executable; Debian's interpreters have none).
 *
 *   lua_host SCRIPT [ARGS...]
 *
 * Runs SCRIPT with the global arg as lua.c sets it (arg[-1] is this host,
 * so specs start their child Lua processes with it too). No options: the
 * spec of `lua -i` is left out of that run. Exits 1 on an error, with its
 * traceback on stderr. */
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static int traceback(lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (!L) return 1;
  luaL_openlibs(L);
  lua_createtable(L, argc - 2, 2);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, traceback);
  int rc = luaL_loadfile(L, argv[1]);
  if (rc == LUA_OK) {
    for (int i = 2; i < argc; i++)
      lua_pushstring(L, argv[i]);
    rc = lua_pcall(L, argc - 2, 0, 1);
  }
  if (rc != LUA_OK) fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
  lua_close(L);
  return rc == LUA_OK ? 0 : 1;
}
