/* lua_compat.h: the Lua 5.2+ C API functions the binding uses, for Lua 5.1
 * and LuaJIT. Each is defined under a wsuv_ prefix and aliased only when
 * LUA_VERSION_NUM == 501, so it never clashes with LuaJIT 2.1's own. */
#ifndef WSUV_LUA_COMPAT_H
#define WSUV_LUA_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM == 501
static inline void wsuv_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name; l++) {
    for (int i = 0; i < nup; i++)
      lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
static inline void *wsuv_testudata(lua_State *L, int i, const char *tname) {
  void *p = lua_touserdata(L, i);
  if (!p || !lua_getmetatable(L, i)) return NULL;
  luaL_getmetatable(L, tname);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? p : NULL;
}
static inline void wsuv_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#  define luaL_setfuncs     wsuv_setfuncs
#  define luaL_testudata    wsuv_testudata
#  define luaL_setmetatable wsuv_setmetatable
#  define lua_rawlen        lua_objlen
#endif

#endif
