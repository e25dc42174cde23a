-- spec/url_spec.lua: wsuv.url.parse (RFC 6455 3).
local H = require "spec.helper"
local wsuv = require "wsuv"
local url = require "wsuv.url"

describe("wsuv.url.parse", function()
  after_each(function()
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  local good = {
    { "ws://example.com", { scheme = "ws", secure = false, host = "example.com", port = 80,
      target = "/", host_header = "example.com" } },
    { "wss://example.com/", { scheme = "wss", secure = true, host = "example.com", port = 443,
      target = "/", host_header = "example.com" } },
    { "ws://example.com:8080/chat", { scheme = "ws", secure = false, host = "example.com",
      port = 8080, target = "/chat", host_header = "example.com:8080" } },
    { "ws://127.0.0.1:9000/a/b?x=1&y=2", { scheme = "ws", secure = false, host = "127.0.0.1",
      port = 9000, target = "/a/b?x=1&y=2", host_header = "127.0.0.1:9000" } },
    { "ws://h?q=1", { scheme = "ws", secure = false, host = "h", port = 80,
      target = "/?q=1", host_header = "h" } },
    { "ws://[::1]:9000/p", { scheme = "ws", secure = false, host = "::1", port = 9000,
      target = "/p", host_header = "[::1]:9000" } },
    { "wss://[::1]/", { scheme = "wss", secure = true, host = "::1", port = 443,
      target = "/", host_header = "[::1]" } },
    { "ws://example.com:80/", { scheme = "ws", secure = false, host = "example.com", port = 80,
      target = "/", host_header = "example.com" } },
    { "wss://example.com:443/", { scheme = "wss", secure = true, host = "example.com",
      port = 443, target = "/", host_header = "example.com" } },
    { "wss://example.com:80/", { scheme = "wss", secure = true, host = "example.com",
      port = 80, target = "/", host_header = "example.com:80" } },
    { "WS://Example.com/", { scheme = "ws", secure = false, host = "Example.com", port = 80,
      target = "/", host_header = "Example.com" } },
    { "ws://h:65535/", { scheme = "ws", secure = false, host = "h", port = 65535,
      target = "/", host_header = "h:65535" } },
  }
  for _, case in ipairs(good) do
    it("parses " .. case[1], function()
      local u, err = url.parse(case[1])
      assert.is_nil(err)
      assert.are.same(case[2], u)
    end)
  end

  local bad = {
    { "ws://example.com/#frag", "fragment" },
    { "ws://example.com/chat#", "fragment" },
    { "ws://user:pw@example.com/", "user information" },
    { "ws://user@example.com/", "user information" },
    { "http://example.com/", "unsupported scheme" },
    { "ftp://example.com/", "unsupported scheme" },
    { "example.com/chat", "invalid URL" },
    { "ws:/example.com", "invalid URL" },
    { "ws://example.com:0/", "port out of range" },
    { "ws://example.com:65536/", "port out of range" },
    { "ws://example.com:99999999/", "port out of range" },
    { "ws:///path", "invalid host" },
    { "ws://:80/", "invalid host" },
    { "ws://example.com:abc/", "invalid host" },
    { "ws://[::1/", "invalid host" },
  }
  for _, case in ipairs(bad) do
    it("rejects " .. case[1], function()
      local u, err = url.parse(case[1])
      assert.is_nil(u)
      assert.are.equal("string", type(err))
      assert.truthy(err:find(case[2], 1, true), err)
    end)
  end

  it("rejects a non-string", function()
    local u, err = url.parse(42)
    assert.is_nil(u)
    assert.truthy(err:find("string", 1, true))
  end)

  it("split_target separates path and query", function()
    assert.are.same({ "/a/b", "x=1" }, { url.split_target("/a/b?x=1") })
    assert.are.same({ "/", "" }, { url.split_target("/") })
    assert.are.same({ "/p", "a?b" }, { url.split_target("/p?a?b") })
  end)

  it("wsuv.connect reports a bad URL as nil, message, EINVAL", function()
    local c, err, code = wsuv.connect("ws://h/#x")
    assert.is_nil(c)
    assert.truthy(err:find("fragment", 1, true))
    assert.are.equal("EINVAL", code)
  end)
end)
