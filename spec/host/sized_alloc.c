/* sized_alloc.c: a C host whose Lua 5.4 state runs on a strict, bounded
 * allocator, as an engine with its own heap would give it; checks the block
 * cache (csrc/lua_alloc.c) against it (spec/block_cache_spec.lua builds and
 * runs it).
 *
 *   sized_alloc LUA_PATH LUA_CPATH
 *
 * The allocator keeps each block's size in a header and counts every free
 * or resize whose old size is not the block's (an allocator that trusts
 * osize would corrupt its heap there). The script echoes big messages of
 * changing sizes, fills the cache, then lowers the heap's budget so that a
 * big string fits only if the cache gives its blocks back; unused, the cache
 * must step out of the allocator, and come back with the next big message,
 * so the state closes with it holding blocks. After lua_close
 * every byte must be back. Results are "key value" lines; the last is "OK"
 * (exit 0) or "FAIL <why>" (exit 1). */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "sized_alloc.h" /* csrc/test: the size-prefix blocks */

typedef struct {
  size_t live, budget;
  unsigned long mismatches, refusals;
} heap_t;

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  heap_t *h = ud;
  size_t old = sized_size(ptr);
  if (ptr && old != osize) h->mismatches++;
  if (nsize == 0) {
    h->live -= old;
    sized_free(ptr);
    return NULL;
  }
  if (h->live - old + nsize > h->budget) {
    h->refusals++;
    return NULL;
  }
  void *p = sized_realloc(ptr, nsize);
  if (p) h->live = h->live - old + nsize;
  return p;
}

static heap_t heap = {0, (size_t)1 << 40, 0, 0};

/* wrapped() -> whether a layer (the block cache) is on the allocator. */
static int l_wrapped(lua_State *L) {
  lua_pushboolean(L, lua_getallocf(L, NULL) != heap_alloc);
  return 1;
}

static int l_heap(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) heap.budget = (size_t)luaL_checknumber(L, 1);
  lua_pushnumber(L, (lua_Number)heap.live);
  lua_pushnumber(L, (lua_Number)heap.refusals);
  return 2;
}

static const char SCRIPT[] =
    "local wsuv = require 'wsuv'\n"
    "local MiB = 1048576\n"
    "local out = {}\n"
    "wsuv.spawn(function()\n"
    "  local s = assert(wsuv.listen{ host = '127.0.0.1', port = 0,\n"
    "    max_message = 8 * MiB, on_connect = function(c)\n"
    "      while true do\n"
    "        local m, k = c:receive()\n"
    "        if not m then break end\n"
    "        c:send(m, k)\n"
    "      end\n"
    "    end })\n"
    "  local c = assert(wsuv.connect('ws://127.0.0.1:' .. s.port,\n"
    "    { max_message = 8 * MiB }))\n"
    "  local whole = 0\n"
    "  local sizes = { MiB, MiB, MiB - 100, 900000, 2 * MiB, 200000, MiB,\n"
    "                  3 * MiB + 1, 1500000, MiB }\n"
    "  local function echo(i, n)\n"
    "    local m = ('<' .. i .. '>'):rep(n // 3 + 1):sub(1, n)\n"
    "    assert(c:send(m, 'binary'))\n"
    "    return c:receive(10) == m\n"
    "  end\n"
    "  for i, n in ipairs(sizes) do\n"
    "    if echo(i, n) then whole = whole + 1 end\n"
    "    collectgarbage()\n"
    "  end\n"
    "  out.whole = whole .. '/' .. #sizes\n"
    "  local function fill()\n"
    "    local t = {}\n"
    "    for i = 1, 12 do t[i] = ('y'):rep(MiB) .. i end\n"
    "  end\n"
    "  fill()\n"
    "  collectgarbage()\n"
    "  local _, held = wsuv.block_cache()\n"
    "  out.held = held\n"
    /* Room for 4 MiB more: a 10 MiB string.rep (a 10 MiB buffer, then the
     * 10 MiB string) fits only with the cache's blocks given back. */
    "  local live = heap()\n"
    "  heap(live + 4 * MiB)\n"
    "  local ok, big = pcall(string.rep, 'z', 10 * MiB)\n"
    "  out.big = ok and #big or tostring(big)\n"
    "  out.held_after = select(2, wsuv.block_cache())\n"
    "  big = nil\n"
    "  heap(2 ^ 40)\n"
    /* Unused, it empties and steps out of the allocator; the next big
     * message puts it back, and the state closes with it holding blocks. */
    "  out.busy = tostring(wrapped())\n"
    "  for _ = 1, 100 do\n"
    "    if not wrapped() then break end\n"
    "    wsuv.sleep(0.1)\n"
    "  end\n"
    "  out.idle = tostring(wrapped())\n"
    "  assert(echo(0, MiB))\n"
    "  collectgarbage()\n"
    "  out.again = tostring(wrapped())\n"
    "  c:close()\n"
    "  s:close(1)\n"
    "end)\n"
    "wsuv.run()\n"
    "return out.whole, out.held, out.big, out.held_after,\n"
    "  out.busy .. ' ' .. out.idle .. ' ' .. out.again\n";

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: sized_alloc LUA_PATH LUA_CPATH\n");
    return 2;
  }
  lua_State *L = lua_newstate(heap_alloc, &heap);
  if (!L) return 1;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, argv[1]);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, argv[2]);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  lua_register(L, "heap", l_heap);
  lua_register(L, "wrapped", l_wrapped);
  if (luaL_dostring(L, SCRIPT) != LUA_OK) {
    printf("FAIL script: %s\n", lua_tostring(L, -1));
    return 1;
  }
  printf("whole %s\n", lua_tostring(L, -5));
  printf("held %s\n", lua_tostring(L, -4));
  printf("big %s\n", lua_tostring(L, -3));
  printf("held_after %s\n", lua_tostring(L, -2));
  printf("wrapped_busy_idle_again %s\n", lua_tostring(L, -1));
  int wrapped = lua_getallocf(L, NULL) != heap_alloc;
  printf("wrapped %d\n", wrapped);
  lua_close(L);
  printf("mismatches %lu\n", heap.mismatches);
  printf("refusals %lu\n", heap.refusals);
  printf("live_after_close %zu\n", heap.live);
  int ok = heap.mismatches == 0 && heap.live == 0 && wrapped;
  printf(ok ? "OK\n" : "FAIL see above\n");
  return ok ? 0 : 1;
}
