#include <doctest/doctest.h>

#include <cstdint>
#include <ostream>  // doctest prints std::error_code through it
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "citrus/core/error.hpp"
#include "citrus/core/protocol.hpp"

using namespace citrus;
using namespace citrus::protocol;

namespace {

/// The outcome of parsing `text` as a wire code ("ok" on success): readable in failure reports.
std::string outcome(parser& p, std::string_view text) {
  auto r = p.parse(text);
  if (r) return "ok";
  CHECK(r.error().category() == citrus_category());
  return std::string(wire_code(static_cast<errc>(r.error().value())));
}

std::string outcome(std::string_view text, limits lim = {}) {
  parser p(lim);
  return outcome(p, text);
}

std::string code(errc e) { return std::string(wire_code(e)); }

std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (std::size_t i = 0; i < n; ++i) out.append(s);
  return out;
}

/// A command whose payload is `payload` (raw JSON text).
std::string command_with(std::string_view payload) {
  return std::string(R"({"v":1,"type":"command","id":"r1","op":"site.status","payload":)") + std::string(payload) + "}";
}

/// A payload object whose own nesting is `levels` (the payload alone is 1): the message is levels + 1 deep.
std::string nested_objects(std::size_t levels) {
  return "{" + repeat(R"("a":{)", levels - 1) + repeat("}", levels - 1) + "}";
}

/// A payload holding arrays: the payload is 1, so the innermost array is at payload level `levels`.
std::string nested_arrays(std::size_t levels) {
  return R"({"a":)" + repeat("[", levels - 1) + repeat("]", levels - 1) + "}";
}

struct row {
  const char* what;
  std::string text;
  errc expected;
};

void check_rows(const std::vector<row>& rows, limits lim = {}) {
  parser p(lim);  // one parser for the whole table: an error never poisons the next parse
  for (const row& r : rows) {
    INFO(std::string(r.what) << ": " << r.text.substr(0, 200));
    CHECK(outcome(p, r.text) == code(r.expected));
  }
}

}  // namespace

TEST_SUITE("protocol") {
  TEST_CASE("valid messages of every type") {
    parser p;
    SUBCASE("auth with a token") {
      auto r = p.parse(R"({"v":1,"type":"auth","token":"eyJ.abc.def"})");
      REQUIRE(r);
      CHECK((*r)->type == message_type::auth);
      CHECK((*r)->token == "eyJ.abc.def");
      CHECK((*r)->role.empty());
    }
    SUBCASE("auth with role, id and key") {
      auto r = p.parse(R"({"v":1,"type":"auth","role":"agent","id":"agent-7","key":"s3cr3t"})");
      REQUIRE(r);
      CHECK((*r)->role == "agent");
      CHECK((*r)->id == "agent-7");
      CHECK((*r)->key == "s3cr3t");
    }
    SUBCASE("reauth") {
      auto r = p.parse(R"({"v":1,"type":"reauth","token":"t"})");
      REQUIRE(r);
      CHECK((*r)->type == message_type::reauth);
    }
    SUBCASE("reauth of a commander or agent: role, id and key, as auth") {
      auto r = p.parse(R"({"v":1,"type":"reauth","role":"commander","id":"backend-1","key":"s3cr3t"})");
      REQUIRE(r);
      CHECK((*r)->type == message_type::reauth);
      CHECK((*r)->role == "commander");
      CHECK((*r)->id == "backend-1");
      CHECK((*r)->key == "s3cr3t");
    }
    SUBCASE("auth_ok with and without expires_in") {
      auto r = p.parse(R"({"v":1,"type":"auth_ok","expires_in":900})");
      REQUIRE(r);
      CHECK((*r)->type == message_type::auth_ok);
      CHECK((*r)->expires_in == 900);
      r = p.parse(R"({"type":"auth_ok","v":1})");
      REQUIRE(r);
      CHECK_FALSE((*r)->expires_in.has_value());
    }
    SUBCASE("command with every allowed field") {
      auto r = p.parse(
          R"({"v":1,"type":"command","id":"req-1","agent":"agent-1","commanderId":"backend-1","op":"site.deploy",)"
          R"("priority":"low","site":42,"payload":{"site_id":42,"version":"1.2"}})");
      REQUIRE(r);
      const envelope& e = **r;
      CHECK(e.type == message_type::command);
      CHECK(e.id == "req-1");
      CHECK(e.agent == "agent-1");
      CHECK(e.commander == "backend-1");
      CHECK(e.op == "site.deploy");
      CHECK(e.prio == priority::low);
      CHECK(e.site == 42);
      CHECK(e.payload == R"({"site_id":42,"version":"1.2"})");
      REQUIRE(e.fields.size == 2);
      CHECK(e.fields.items[0].key == "site_id");
      CHECK(e.fields.items[0].kind == json_kind::integer);
      CHECK(e.fields.items[0].integer == 42);
      CHECK(e.fields.items[1].key == "version");
      CHECK(e.fields.items[1].text == "1.2");
    }
    SUBCASE("progress") {
      auto r = p.parse(
          R"({"v":1,"type":"progress","id":"r","commanderId":"c","agent":"a","percent":100,"step":"copying","site":1,"op":"site.deploy"})");
      REQUIRE(r);
      CHECK((*r)->percent == 100);
      CHECK((*r)->step == "copying");
    }
    SUBCASE("result") {
      auto r = p.parse(
          R"({"v":1,"type":"result","id":"r","status":"failed","commanderId":"c","agent":"a","message":"disk full","site":3,"op":"site.deploy","payload":{}})");
      REQUIRE(r);
      CHECK((*r)->status == "failed");
      CHECK((*r)->message == "disk full");
      CHECK((*r)->payload == "{}");
      CHECK((*r)->fields.size == 0);
    }
    SUBCASE("error") {
      auto r = p.parse(R"({"v":1,"type":"error","code":"agent_offline","id":"r","message":"Agent is offline","site":9,"op":"site.status"})");
      REQUIRE(r);
      CHECK((*r)->code == "agent_offline");
      r = p.parse(R"({"v":1,"type":"error","code":"malformed_json"})");
      CHECK(r);
    }
    SUBCASE("presence") {
      auto r = p.parse(R"({"v":1,"type":"presence","agent":"a-1","state":"offline"})");
      REQUIRE(r);
      CHECK((*r)->state == "offline");
      CHECK((*r)->agent == "a-1");
    }
    SUBCASE("accepted with every allowed field") {
      auto r = p.parse(
          R"({"v":1,"type":"accepted","id":"u-1","request":"r5f3a-7","op":"site.deploy","site":12,"payload":{"id":12}})");
      REQUIRE(r);
      const envelope& e = **r;
      CHECK(e.type == message_type::accepted);
      CHECK(e.id == "u-1");
      CHECK(e.request == "r5f3a-7");
      CHECK(e.op == "site.deploy");
      CHECK(e.site == 12);
      CHECK(e.payload == R"({"id":12})");
      r = p.parse(R"({"v":1,"type":"accepted","id":"u-1","request":"r1-1"})");
      REQUIRE(r);
      CHECK((*r)->request == "r1-1");
      // The next message of another type has no request left over.
      r = p.parse(R"({"v":1,"type":"result","id":"r1-1","status":"ok"})");
      REQUIRE(r);
      CHECK((*r)->request.empty());
    }
    SUBCASE("cancel: id, agent or commanderId, nothing else; write() gives it back") {
      auto r = p.parse(R"({"v":1,"type":"cancel","id":"r1-9","agent":"agent-7"})");
      REQUIRE(r);
      CHECK((*r)->type == message_type::cancel);
      CHECK((*r)->id == "r1-9");
      CHECK((*r)->agent == "agent-7");
      std::string out;
      write(out, **r);
      CHECK(out == R"({"v":1,"type":"cancel","id":"r1-9","agent":"agent-7"})");
      r = p.parse(R"({"v":1,"type":"cancel","id":"r1-9","commanderId":"backend-1"})");
      REQUIRE(r);
      CHECK((*r)->commander == "backend-1");
      CHECK(p.parse(R"({"v":1,"type":"cancel","agent":"agent-7"})").error() == make_error_code(errc::missing_field));
      CHECK(p.parse(R"({"v":1,"type":"cancel","id":"r1","agent":"a","op":"site.deploy"})").error() ==
            make_error_code(errc::unknown_field));
      CHECK(p.parse(R"({"v":1,"type":"cancel","id":"r1","agent":"a","payload":{}})").error() ==
            make_error_code(errc::unknown_field));
      CHECK(p.parse(R"({"v":1,"type":"cancel","id":"r 1","agent":"a"})").error() == make_error_code(errc::invalid_value));
    }
    SUBCASE("whitespace and escaped keys are fine") {
      auto r = p.parse(" \n\t{ \"v\" : 1 , \"\\u0074ype\" : \"presence\", \"agent\":\"a\",\"state\":\"online\" } \r\n");
      REQUIRE(r);
      CHECK((*r)->type == message_type::presence);
    }
  }

  TEST_CASE("message_too_large is decided before parsing") {
    limits lim;
    lim.max_message_bytes = 64;
    const std::string base = R"({"v":1,"type":"presence","agent":"a","state":"online"})";
    const std::string exact = base + std::string(64 - base.size(), ' ');
    CHECK(outcome(exact, lim) == "ok");
    CHECK(outcome(exact + " ", lim) == code(errc::message_too_large));
    CHECK(outcome(std::string(65, '{'), lim) == code(errc::message_too_large));  // not even JSON
    CHECK(outcome(std::string(64 * 1024 + 1, ' ')) == code(errc::message_too_large));  // the default limit
  }

  TEST_CASE("malformed JSON") {
    check_rows({
        {"empty", "", errc::malformed_json},
        {"blank", "  \n", errc::malformed_json},
        {"not json", "hello", errc::malformed_json},
        {"array", "[1,2]", errc::malformed_json},
        {"string", R"("x")", errc::malformed_json},
        {"number", "1", errc::malformed_json},
        {"null", "null", errc::malformed_json},
        {"unclosed", R"({"v":1,"type":"auth_ok")", errc::malformed_json},
        {"missing comma", R"({"v":1 "type":"auth_ok"})", errc::malformed_json},
        {"missing colon", R"({"v" 1,"type":"auth_ok"})", errc::malformed_json},
        {"trailing comma", R"({"v":1,"type":"auth_ok",})", errc::malformed_json},
        {"unquoted key", R"({v:1,"type":"auth_ok"})", errc::malformed_json},
        {"single quotes", R"({'v':1,"type":"auth_ok"})", errc::malformed_json},
        {"trailing object", R"({"v":1,"type":"auth_ok"}{"v":1,"type":"auth_ok"})", errc::malformed_json},
        {"trailing word", R"({"v":1,"type":"auth_ok"} x)", errc::malformed_json},
        {"trailing bracket", R"({"v":1,"type":"auth_ok"}])", errc::malformed_json},
        {"trailing number", R"({"v":1,"type":"auth_ok"} 1)", errc::malformed_json},
        {"trailing nul byte", std::string(R"({"v":1,"type":"auth_ok"})") + '\0', errc::malformed_json},
        {"unread invalid number at top level", R"({"v":1,"type":"auth_ok","x":1.2.3})", errc::malformed_json},
        {"invalid number in payload", command_with(R"({"x":1.2.3})"), errc::malformed_json},
        {"invalid number deep in payload", command_with(R"({"a":{"b":[1,2,{"c":1.2.3}]}})"), errc::malformed_json},
        {"leading zero", command_with(R"({"x":01})"), errc::malformed_json},
        {"bare minus", command_with(R"({"x":-})"), errc::malformed_json},
        {"dot without digits", command_with(R"({"x":1.})"), errc::malformed_json},
        {"leading dot", command_with(R"({"x":.5})"), errc::malformed_json},
        {"plus sign", command_with(R"({"x":+1})"), errc::malformed_json},
        {"hex", command_with(R"({"x":0x10})"), errc::malformed_json},
        {"NaN", command_with(R"({"x":NaN})"), errc::malformed_json},
        {"tru", command_with(R"({"x":tru})"), errc::malformed_json},
        {"truex", command_with(R"({"x":truex})"), errc::malformed_json},
        {"nul", command_with(R"({"x":nul})"), errc::malformed_json},
        {"nullx", command_with(R"({"x":nullx})"), errc::malformed_json},
        {"bad escape", command_with(R"({"x":"\x"})"), errc::malformed_json},
        {"lone surrogate escape", command_with(R"({"x":"\ud800"})"), errc::malformed_json},
        {"raw control character", command_with("{\"x\":\"a\tb\"}"), errc::malformed_json},
        {"array trailing comma", command_with(R"({"x":[1,]})"), errc::malformed_json},
        {"array missing comma", command_with(R"({"x":[1 2]})"), errc::malformed_json},
        {"mismatched brackets", command_with(R"({"x":[1}})"), errc::malformed_json},
        {"extra closing bracket", command_with(R"({"x":[[]]]})"), errc::malformed_json},
        {"missing value", command_with(R"({"x":})"), errc::malformed_json},
        {"invalid value for an unknown envelope key", R"({"v":1,"type":"auth_ok","zzz":[tru]})", errc::malformed_json},
    });
  }

  TEST_CASE("depth limit: max_depth is fine, max_depth + 1 is too_deep") {
    const limits lim;  // max_depth 16: the envelope is 1, the payload 2
    parser p(lim);
    CHECK(outcome(p, command_with(nested_objects(lim.max_depth - 1))) == "ok");
    CHECK(outcome(p, command_with(nested_objects(lim.max_depth))) == code(errc::too_deep));
    CHECK(outcome(p, command_with(nested_arrays(lim.max_depth - 1))) == "ok");
    CHECK(outcome(p, command_with(nested_arrays(lim.max_depth))) == code(errc::too_deep));
    // Containers under an unknown or mistyped envelope key count too (and are walked, not skipped).
    CHECK(outcome(p, R"({"v":1,"type":"auth_ok","x":)" + nested_objects(lim.max_depth) + "}") ==
          code(errc::too_deep));

    limits shallow;
    shallow.max_depth = 2;
    CHECK(outcome(command_with(R"({"a":1})"), shallow) == "ok");
    CHECK(outcome(command_with(R"({"a":{}})"), shallow) == code(errc::too_deep));
    CHECK(outcome(command_with(R"({"a":[]})"), shallow) == code(errc::too_deep));
    shallow.max_depth = 1;
    CHECK(outcome(command_with("{}"), shallow) == code(errc::too_deep));
    CHECK(outcome(R"({"v":1,"type":"auth_ok"})", shallow) == "ok");
  }

  TEST_CASE("100000 levels of nesting are rejected without a crash") {
    limits lim;
    lim.max_message_bytes = 1024 * 1024;
    parser p(lim);
    const std::size_t n = 100000;
    CHECK(outcome(p, command_with(R"({"a":)" + repeat("[", n) + repeat("]", n) + "}")) == code(errc::too_deep));
    CHECK(outcome(p, command_with(nested_objects(n))) == code(errc::too_deep));
    CHECK(outcome(p, command_with(R"({"a":)" + repeat("[", n) + "}")) != "ok");  // unbalanced as well
    CHECK(outcome(p, repeat("[", n) + repeat("]", n)) == code(errc::malformed_json));
    CHECK(outcome(p, repeat("{\"a\":", n) + "1" + repeat("}", n)) == code(errc::too_deep));

    // The walk is iterative: even with the limit lifted, 100000 levels parse without a stack overflow.
    lim.max_depth = 1000000;
    parser deep(lim);
    CHECK(outcome(deep, command_with(R"({"a":)" + repeat("[", n) + repeat("]", n) + "}")) == "ok");
    CHECK(outcome(deep, command_with(nested_objects(n))) == "ok");
  }

  TEST_CASE("duplicate keys at any depth") {
    check_rows({
        {"envelope", R"({"v":1,"type":"auth_ok","v":1})", errc::duplicate_key},
        {"envelope, same value", R"({"v":1,"type":"presence","agent":"a","agent":"a","state":"online"})",
         errc::duplicate_key},
        {"envelope, escaped spelling", R"({"v":1,"type":"auth_ok","\u0076":1})", errc::duplicate_key},
        {"unknown envelope key twice", R"({"v":1,"type":"auth_ok","x":1,"x":2})", errc::duplicate_key},
        {"payload top level", command_with(R"({"site_id":1,"site_id":2})"), errc::duplicate_key},
        {"payload nested", command_with(R"({"a":{"b":1,"c":2,"b":3}})"), errc::duplicate_key},
        {"payload in array", command_with(R"({"a":[{"k":1},{"k":1,"k":2}]})"), errc::duplicate_key},
        {"payload deep", command_with(R"({"a":{"b":{"c":{"d":1,"d":1}}}})"), errc::duplicate_key},
        {"payload escaped spelling", command_with(R"({"ab":1,"a\u0062":2})"), errc::duplicate_key},
        {"same key in sibling objects is fine", command_with(R"({"a":{"k":1},"b":{"k":1},"c":[{"k":1},{"k":1}]})"),
         errc::ok},
        {"same key in parent and child is fine", command_with(R"({"k":{"k":{"k":1}}})"), errc::ok},
        {"payload key equal to an envelope key is fine", command_with(R"({"v":2,"type":"x"})"), errc::ok},
    });
  }

  TEST_CASE("invalid UTF-8") {
    check_rows({
        {"in a value", "{\"v\":1,\"type\":\"error\",\"code\":\"x\",\"message\":\"a\xff\"}", errc::invalid_utf8},
        {"in a key", "{\"v\":1,\"type\":\"auth_ok\",\"\xc3\x28\":1}", errc::invalid_utf8},
        {"in a payload key", command_with("{\"k\xe2\x28\xa1\":1}"), errc::invalid_utf8},
        {"in a payload value", command_with("{\"k\":\"\xf0\x28\x8c\xbc\"}"), errc::invalid_utf8},
        {"overlong encoding", command_with("{\"k\":\"\xc0\xaf\"}"), errc::invalid_utf8},
        {"encoded surrogate", command_with("{\"k\":\"\xed\xa0\x80\"}"), errc::invalid_utf8},
        {"above U+10FFFF", command_with("{\"k\":\"\xf4\x90\x80\x80\"}"), errc::invalid_utf8},
        {"truncated sequence", command_with("{\"k\":\"\xe2\x82\"}"), errc::invalid_utf8},
        {"outside any string", "{\"v\":1,\"type\":\"auth_ok\"}\xff", errc::invalid_utf8},
        {"valid multibyte is fine", command_with("{\"k\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}"), errc::ok},
    });
  }

  TEST_CASE("field_too_long: strings, arrays, objects, payload fields and envelope strings") {
    const limits lim;
    const std::string max_string(lim.max_string_bytes, 'x');
    std::string items = "0";
    for (std::size_t i = 1; i < lim.max_array_items; ++i) items += ",0";
    std::string keys;
    for (std::size_t i = 0; i < lim.max_keys_per_object; ++i) keys += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":0";
    std::string fields;
    for (std::size_t i = 0; i < max_payload_fields; ++i) fields += (i ? ",\"f" : "\"f") + std::to_string(i) + "\":0";
    check_rows({
        {"payload string at the limit", command_with(R"({"s":")" + max_string + "\"}"), errc::ok},
        {"payload string over the limit", command_with(R"({"s":")" + max_string + "x\"}"), errc::field_too_long},
        {"nested string over the limit", command_with(R"({"a":[")" + max_string + "x\"]}"), errc::field_too_long},
        {"escapes count unescaped", command_with(R"({"s":")" + std::string(lim.max_string_bytes - 1, 'x') + R"(\n"})"),
         errc::ok},
        {"payload key over the limit", command_with("{\"" + max_string + "x\":1}"), errc::field_too_long},
        {"array at the limit", command_with(R"({"a":[)" + items + "]}"), errc::ok},
        {"array over the limit", command_with(R"({"a":[)" + items + ",0]}"), errc::field_too_long},
        {"object at the key limit", command_with(R"({"a":{)" + keys + "}}"), errc::ok},
        {"object over the key limit", command_with(R"({"a":{)" + keys + R"(,"x":0}})"), errc::field_too_long},
        {"payload with 32 fields", command_with("{" + fields + "}"), errc::ok},
        {"payload with 33 fields", command_with("{" + fields + R"(,"x":0})"), errc::field_too_long},
        {"token over max_token_bytes",
         R"({"v":1,"type":"reauth","token":")" + std::string(lim.max_token_bytes + 1, 't') + "\"}",
         errc::field_too_long},
        {"token at max_token_bytes",
         R"({"v":1,"type":"reauth","token":")" + std::string(lim.max_token_bytes, 't') + "\"}", errc::ok},
        {"key over 256", R"({"v":1,"type":"auth","role":"agent","id":"a","key":")" + std::string(257, 'k') + "\"}",
         errc::field_too_long},
        {"key at 256", R"({"v":1,"type":"auth","role":"agent","id":"a","key":")" + std::string(256, 'k') + "\"}",
         errc::ok},
        {"step over 256", R"({"v":1,"type":"progress","id":"r","step":")" + std::string(257, 's') + "\"}",
         errc::field_too_long},
        {"code over 64", R"({"v":1,"type":"error","code":")" + std::string(65, 'c') + "\"}", errc::field_too_long},
        {"message over 512", R"({"v":1,"type":"error","code":"x","message":")" + std::string(513, 'm') + "\"}",
         errc::field_too_long},
        {"message at 512", R"({"v":1,"type":"error","code":"x","message":")" + std::string(512, 'm') + "\"}",
         errc::ok},
        {"op over 64", R"({"v":1,"type":"command","id":"r","op":")" + std::string(65, 'o') + "\"}",
         errc::field_too_long},
        {"op at 64", R"({"v":1,"type":"command","id":"r","op":")" + std::string(64, 'o') + "\"}", errc::ok},
    });
  }

  TEST_CASE("huge strings and arrays within a raised message limit") {
    limits lim;
    lim.max_message_bytes = 4 * 1024 * 1024;
    parser p(lim);
    CHECK(outcome(p, command_with(R"({"s":")" + std::string(3 * 1024 * 1024, 'x') + "\"}")) ==
          code(errc::field_too_long));
    CHECK(outcome(p, command_with(R"({"a":[)" + repeat("1,", 1000000) + "1]}")) == code(errc::field_too_long));
    CHECK(outcome(p, R"({"v":1,"type":"reauth","token":")" + std::string(1024 * 1024, 't') + "\"}") ==
          code(errc::field_too_long));
  }

  TEST_CASE("unknown_field: keys outside the protocol and keys the type does not allow") {
    check_rows({
        {"unknown envelope key", R"({"v":1,"type":"auth_ok","x":1})", errc::unknown_field},
        {"unknown envelope key holding an object", R"({"v":1,"type":"auth_ok","x":{"a":1}})", errc::unknown_field},
        {"keys are case-sensitive", R"({"v":1,"type":"auth_ok","Expires_in":1})", errc::unknown_field},
        {"commanderid spelled wrong", R"({"v":1,"type":"command","id":"r","op":"a","commanderid":"c"})",
         errc::unknown_field},
        {"auth with payload", R"({"v":1,"type":"auth","token":"t","payload":{}})", errc::unknown_field},
        {"reauth with payload", R"({"v":1,"type":"reauth","token":"t","payload":{}})", errc::unknown_field},
        {"auth_ok with id", R"({"v":1,"type":"auth_ok","id":"x"})", errc::unknown_field},
        {"command with token", R"({"v":1,"type":"command","id":"r","op":"a","token":"t"})", errc::unknown_field},
        {"command with status", R"({"v":1,"type":"command","id":"r","op":"a","status":"ok"})", errc::unknown_field},
        {"progress with payload", R"({"v":1,"type":"progress","id":"r","payload":{}})", errc::unknown_field},
        {"progress with priority", R"({"v":1,"type":"progress","id":"r","priority":"high"})", errc::unknown_field},
        {"result with percent", R"({"v":1,"type":"result","id":"r","status":"ok","percent":5})", errc::unknown_field},
        {"error with status", R"({"v":1,"type":"error","code":"x","status":"failed"})", errc::unknown_field},
        {"error with routing fields is fine", R"({"v":1,"type":"error","code":"x","id":"r","agent":"a","commanderId":"c"})",
         errc::ok},
        {"result with code is fine", R"({"v":1,"type":"result","id":"r","status":"failed","code":"agent_offline"})",
         errc::ok},
        {"error with payload", R"({"v":1,"type":"error","code":"x","payload":{}})", errc::unknown_field},
        {"presence with id", R"({"v":1,"type":"presence","agent":"a","state":"online","id":"r"})",
         errc::unknown_field},
        {"presence with site", R"({"v":1,"type":"presence","agent":"a","state":"online","site":1})",
         errc::unknown_field},
        {"accepted with status", R"({"v":1,"type":"accepted","id":"u","request":"r","status":"ok"})", errc::unknown_field},
        {"accepted with code", R"({"v":1,"type":"accepted","id":"u","request":"r","code":"x"})", errc::unknown_field},
        {"accepted with agent", R"({"v":1,"type":"accepted","id":"u","request":"r","agent":"a"})", errc::unknown_field},
        {"accepted with commanderId", R"({"v":1,"type":"accepted","id":"u","request":"r","commanderId":"c"})",
         errc::unknown_field},
        {"accepted with percent", R"({"v":1,"type":"accepted","id":"u","request":"r","percent":1})", errc::unknown_field},
        {"accepted with an unknown key", R"({"v":1,"type":"accepted","id":"u","request":"r","eta":5})", errc::unknown_field},
        {"request outside accepted: result", R"({"v":1,"type":"result","id":"r","status":"ok","request":"r"})",
         errc::unknown_field},
        {"request outside accepted: command", R"({"v":1,"type":"command","id":"r","op":"a","request":"r"})",
         errc::unknown_field},
        {"request outside accepted: error", R"({"v":1,"type":"error","code":"x","request":"r"})", errc::unknown_field},
        {"request outside accepted: progress", R"({"v":1,"type":"progress","id":"r","request":"r"})", errc::unknown_field},
    });
  }

  TEST_CASE("missing_field: v, type and the required fields of each type") {
    check_rows({
        {"no v", R"({"type":"auth_ok"})", errc::missing_field},
        {"no type", R"({"v":1})", errc::missing_field},
        {"empty object", "{}", errc::missing_field},
        {"auth with nothing", R"({"v":1,"type":"auth"})", errc::missing_field},
        {"auth without key", R"({"v":1,"type":"auth","role":"agent","id":"a"})", errc::missing_field},
        {"auth without role", R"({"v":1,"type":"auth","id":"a","key":"k"})", errc::missing_field},
        {"auth without id", R"({"v":1,"type":"auth","role":"commander","key":"k"})", errc::missing_field},
        {"reauth without token", R"({"v":1,"type":"reauth"})", errc::missing_field},
        {"reauth without key", R"({"v":1,"type":"reauth","role":"agent","id":"a"})", errc::missing_field},
        {"command without id", R"({"v":1,"type":"command","op":"site.status"})", errc::missing_field},
        {"command without op", R"({"v":1,"type":"command","id":"r"})", errc::missing_field},
        {"progress without id", R"({"v":1,"type":"progress","percent":1})", errc::missing_field},
        {"result without id", R"({"v":1,"type":"result","status":"ok"})", errc::missing_field},
        {"result without status", R"({"v":1,"type":"result","id":"r"})", errc::missing_field},
        {"error without code", R"({"v":1,"type":"error","id":"r"})", errc::missing_field},
        {"presence without state", R"({"v":1,"type":"presence","agent":"a"})", errc::missing_field},
        {"presence without agent", R"({"v":1,"type":"presence","state":"online"})", errc::missing_field},
        {"accepted without request", R"({"v":1,"type":"accepted","id":"u"})", errc::missing_field},
        {"accepted without id", R"({"v":1,"type":"accepted","request":"r"})", errc::missing_field},
        // Minimal valid forms, for contrast.
        {"auth_ok minimal", R"({"v":1,"type":"auth_ok"})", errc::ok},
        {"command minimal", R"({"v":1,"type":"command","id":"r","op":"x"})", errc::ok},
        {"progress minimal", R"({"v":1,"type":"progress","id":"r"})", errc::ok},
        {"result minimal", R"({"v":1,"type":"result","id":"r","status":"ok"})", errc::ok},
        {"error minimal", R"({"v":1,"type":"error","code":"x"})", errc::ok},
        {"accepted minimal", R"({"v":1,"type":"accepted","id":"u","request":"r"})", errc::ok},
    });
  }

  TEST_CASE("wrong_type") {
    check_rows({
        {"v as string", R"({"v":"1","type":"auth_ok"})", errc::wrong_type},
        {"v as float", R"({"v":1.0,"type":"auth_ok"})", errc::wrong_type},
        {"v with exponent", R"({"v":1e0,"type":"auth_ok"})", errc::wrong_type},
        {"v as object", R"({"v":{},"type":"auth_ok"})", errc::wrong_type},
        {"v as null", R"({"v":null,"type":"auth_ok"})", errc::wrong_type},
        {"type as number", R"({"v":1,"type":3})", errc::wrong_type},
        {"id as number", R"({"v":1,"type":"progress","id":5})", errc::wrong_type},
        {"agent as array", R"({"v":1,"type":"presence","agent":["a"],"state":"online"})", errc::wrong_type},
        {"op as null", R"({"v":1,"type":"command","id":"r","op":null})", errc::wrong_type},
        {"priority as number", R"({"v":1,"type":"command","id":"r","op":"a","priority":0})", errc::wrong_type},
        {"payload as array", R"({"v":1,"type":"command","id":"r","op":"a","payload":[]})", errc::wrong_type},
        {"payload as string", R"({"v":1,"type":"command","id":"r","op":"a","payload":"{}"})", errc::wrong_type},
        {"payload as null", R"({"v":1,"type":"command","id":"r","op":"a","payload":null})", errc::wrong_type},
        {"token as object", R"({"v":1,"type":"reauth","token":{}})", errc::wrong_type},
        {"percent as string", R"({"v":1,"type":"progress","id":"r","percent":"5"})", errc::wrong_type},
        {"percent as float", R"({"v":1,"type":"progress","id":"r","percent":50.5})", errc::wrong_type},
        {"site as bool", R"({"v":1,"type":"command","id":"r","op":"a","site":true})", errc::wrong_type},
        {"expires_in as float", R"({"v":1,"type":"auth_ok","expires_in":1.5})", errc::wrong_type},
        {"status as bool", R"({"v":1,"type":"result","id":"r","status":true})", errc::wrong_type},
        {"message as number", R"({"v":1,"type":"error","code":"x","message":1})", errc::wrong_type},
        {"request as number", R"({"v":1,"type":"accepted","id":"u","request":7})", errc::wrong_type},
    });
  }

  TEST_CASE("invalid_value") {
    check_rows({
        {"id with a space", R"({"v":1,"type":"progress","id":"a b"})", errc::invalid_value},
        {"id with a quote", R"({"v":1,"type":"progress","id":"a\"b"})", errc::invalid_value},
        {"id empty", R"({"v":1,"type":"progress","id":""})", errc::invalid_value},
        {"id of 129 bytes", R"({"v":1,"type":"progress","id":")" + std::string(129, 'i') + "\"}", errc::invalid_value},
        {"id of 128 bytes", R"({"v":1,"type":"progress","id":")" + std::string(128, 'i') + "\"}", errc::ok},
        {"agent with slash", R"({"v":1,"type":"presence","agent":"a/b","state":"online"})", errc::invalid_value},
        {"request empty", R"({"v":1,"type":"accepted","id":"u","request":""})", errc::invalid_value},
        {"request with a space", R"({"v":1,"type":"accepted","id":"u","request":"r 1"})", errc::invalid_value},
        {"request of 129 bytes", R"({"v":1,"type":"accepted","id":"u","request":")" + std::string(129, 'r') + "\"}",
         errc::invalid_value},
        {"commanderId non-ASCII", "{\"v\":1,\"type\":\"progress\",\"id\":\"r\",\"commanderId\":\"c\xc3\xa9\"}",
         errc::invalid_value},
        {"op empty", R"({"v":1,"type":"command","id":"r","op":""})", errc::invalid_value},
        {"op uppercase", R"({"v":1,"type":"command","id":"r","op":"Site.status"})", errc::invalid_value},
        {"op with dash", R"({"v":1,"type":"command","id":"r","op":"site-status"})", errc::invalid_value},
        {"priority unknown", R"({"v":1,"type":"command","id":"r","op":"a","priority":"urgent"})", errc::invalid_value},
        {"role user", R"({"v":1,"type":"auth","role":"user","id":"a","key":"k"})", errc::invalid_value},
        {"status unknown", R"({"v":1,"type":"result","id":"r","status":"maybe"})", errc::invalid_value},
        {"state unknown", R"({"v":1,"type":"presence","agent":"a","state":"away"})", errc::invalid_value},
        {"percent 101", R"({"v":1,"type":"progress","id":"r","percent":101})", errc::invalid_value},
        {"percent -1", R"({"v":1,"type":"progress","id":"r","percent":-1})", errc::invalid_value},
        {"percent 0", R"({"v":1,"type":"progress","id":"r","percent":0})", errc::ok},
        {"expires_in -1", R"({"v":1,"type":"auth_ok","expires_in":-1})", errc::invalid_value},
        {"expires_in 0", R"({"v":1,"type":"auth_ok","expires_in":0})", errc::ok},
        {"site 0", R"({"v":1,"type":"command","id":"r","op":"a","site":0})", errc::invalid_value},
        {"site 2^63", R"({"v":1,"type":"command","id":"r","op":"a","site":9223372036854775808})", errc::invalid_value},
        {"site INT64_MAX", R"({"v":1,"type":"command","id":"r","op":"a","site":9223372036854775807})", errc::ok},
        {"site 1e400", R"({"v":1,"type":"command","id":"r","op":"a","site":1e400})", errc::invalid_value},
        {"percent beyond uint64", R"({"v":1,"type":"progress","id":"r","percent":123456789012345678901234567890})",
         errc::invalid_value},
        {"empty token", R"({"v":1,"type":"reauth","token":""})", errc::invalid_value},
        {"empty key", R"({"v":1,"type":"auth","role":"agent","id":"a","key":""})", errc::invalid_value},
        {"empty code", R"({"v":1,"type":"error","code":""})", errc::invalid_value},
        {"auth with token and role", R"({"v":1,"type":"auth","token":"t","role":"agent"})", errc::invalid_value},
        {"reauth with token and id", R"({"v":1,"type":"reauth","token":"t","id":"x"})", errc::invalid_value},
        {"auth with token and all credentials", R"({"v":1,"type":"auth","token":"t","role":"agent","id":"a","key":"k"})",
         errc::invalid_value},
        {"payload number beyond double", command_with(R"({"x":1e400})"), errc::invalid_value},
        {"payload integer beyond uint64", command_with(R"({"x":123456789012345678901234567890})"), errc::invalid_value},
        {"payload integer below int64", command_with(R"({"x":[-9223372036854775809]})"), errc::invalid_value},
        {"payload uint64 is fine", command_with(R"({"x":18446744073709551615})"), errc::ok},
        {"payload INT64_MIN is fine", command_with(R"({"x":-9223372036854775808})"), errc::ok},
    });
  }

  TEST_CASE("unsupported_version and unknown_type") {
    check_rows({
        {"v 2", R"({"v":2,"type":"auth_ok"})", errc::unsupported_version},
        {"v 0", R"({"v":0,"type":"auth_ok"})", errc::unsupported_version},
        {"v -1", R"({"v":-1,"type":"auth_ok"})", errc::unsupported_version},
        {"v beyond int64", R"({"v":9223372036854775808,"type":"auth_ok"})", errc::invalid_value},
        {"unknown type", R"({"v":1,"type":"hello"})", errc::unknown_type},
        {"type is case-sensitive", R"({"v":1,"type":"Auth","token":"t"})", errc::unknown_type},
        {"empty type", R"({"v":1,"type":""})", errc::unknown_type},
        {"accepted is case-sensitive", R"({"v":1,"type":"Accepted","id":"u","request":"r"})", errc::unknown_type},
    });
  }

  TEST_CASE("error precedence: structure, then version, then fields in order, then the type's rules") {
    check_rows({
        {"duplicate beats version", R"({"v":2,"type":"auth_ok","x":1,"x":1})", errc::duplicate_key},
        {"malformed beats version", R"({"v":2,"type":"auth_ok","x":1.2.3})", errc::malformed_json},
        {"too_deep beats version", R"({"v":2,"x":)" + nested_objects(20) + "}", errc::too_deep},
        {"version beats unknown fields (a v2 peer gets a clear answer)", R"({"type":"auth_ok","new":1,"v":2})",
         errc::unsupported_version},
        {"version beats unknown type", R"({"type":"v2thing","v":2})", errc::unsupported_version},
        {"missing v beats everything semantic", R"({"type":"bogus","x":1})", errc::missing_field},
        {"first field error in document order (unknown_type)", R"({"v":1,"type":"bogus","x":1})", errc::unknown_type},
        {"first field error in document order (unknown_field)", R"({"v":1,"x":1,"type":"bogus"})",
         errc::unknown_field},
        {"field errors beat type rules", R"({"v":1,"type":"command","percent":500})", errc::invalid_value},
        {"not allowed beats missing", R"({"v":1,"type":"command","status":"ok"})", errc::unknown_field},
    });
  }

  TEST_CASE("the payload's raw text is preserved byte for byte") {
    parser p;
    const std::string payload =
        "{ \"site_id\" : 7 ,\n\t\"s\":\"a\\\"b\\\\\\u0041\\n\\u00e9\" , \"arr\":[ 1, {\"x\":null} , -0.5e+2 ] ,"
        "\"o\":{ } , \"t\":true, \"f\" : false,\"n\":null , \"big\":18446744073709551615 }";
    auto r = p.parse(R"({"v":1,"type":"command","id":"r1","op":"site.status","payload":)" + payload + "  \n }");
    REQUIRE(r);
    const envelope& e = **r;
    CHECK(e.payload == payload);
    REQUIRE(e.fields.size == 8);

    const payload_field* f = e.fields.find("site_id");
    REQUIRE(f);
    CHECK(f->kind == json_kind::integer);
    CHECK(f->integer == 7);
    CHECK(f->text == "7");

    f = e.fields.find("s");
    REQUIRE(f);
    CHECK(f->kind == json_kind::string);
    CHECK(f->text == "a\"b\\A\n\xc3\xa9");  // unescaped

    f = e.fields.find("arr");
    REQUIRE(f);
    CHECK(f->kind == json_kind::array);
    CHECK(f->text == "[ 1, {\"x\":null} , -0.5e+2 ]");

    f = e.fields.find("o");
    REQUIRE(f);
    CHECK(f->kind == json_kind::object);
    CHECK(f->text == "{ }");

    f = e.fields.find("t");
    REQUIRE(f);
    CHECK(f->kind == json_kind::boolean);
    CHECK(f->boolean);
    CHECK(f->text == "true");
    f = e.fields.find("f");
    REQUIRE(f);
    CHECK_FALSE(f->boolean);

    f = e.fields.find("n");
    REQUIRE(f);
    CHECK(f->kind == json_kind::null);
    CHECK(f->text == "null");

    f = e.fields.find("big");
    REQUIRE(f);
    CHECK(f->kind == json_kind::number);
    CHECK(f->text == "18446744073709551615");

    CHECK(e.fields.find("nope") == nullptr);
    CHECK(e.fields.find("") == nullptr);
  }

  TEST_CASE("the payload's raw text when the payload is not the last field, and for numbers") {
    parser p;
    auto r = p.parse(R"({"payload" : {"a":[[]],"b":{"c":{}}} ,"v":1,"type":"result","id":"r","status":"ok"})");
    REQUIRE(r);
    CHECK((*r)->payload == R"({"a":[[]],"b":{"c":{}}})");
    CHECK((*r)->fields.find("a")->text == "[[]]");
    CHECK((*r)->fields.find("b")->text == R"({"c":{}})");

    r = p.parse(command_with(R"({"x":-1.25E-3 , "y":-42})"));
    REQUIRE(r);
    CHECK((*r)->fields.find("x")->kind == json_kind::number);
    CHECK((*r)->fields.find("x")->text == "-1.25E-3");
    CHECK((*r)->fields.find("y")->kind == json_kind::integer);
    CHECK((*r)->fields.find("y")->integer == -42);
  }

  TEST_CASE("views stay valid until the next parse, independent of the caller's buffer") {
    parser p;
    std::string input = R"({"v":1,"type":"command","id":"req-\u0031","op":"site.deploy",)"
                        R"("payload":{"site_id":5,"version":"v\u00312"}})";
    auto r = p.parse(input);
    REQUIRE(r);
    const envelope* e = *r;
    std::fill(input.begin(), input.end(), 'X');  // the parser copied the text
    input.clear();
    input.shrink_to_fit();
    CHECK(e->id == "req-1");
    CHECK(e->op == "site.deploy");
    CHECK(e->payload == R"({"site_id":5,"version":"v\u00312"})");
    CHECK(e->fields.find("version")->text == "v12");

    // A failed parse in between: the envelope is reset, the same object is reused.
    CHECK_FALSE(p.parse("{"));
    auto r2 = p.parse(R"({"v":1,"type":"presence","agent":"a2","state":"online"})");
    REQUIRE(r2);
    CHECK(*r2 == e);
    CHECK(e->type == message_type::presence);
    CHECK(e->id.empty());
    CHECK(e->op.empty());
    CHECK(e->payload.empty());
    CHECK(e->fields.size == 0);
  }

  TEST_CASE("one parser across many messages of different sizes") {
    limits lim;
    lim.max_message_bytes = 1024 * 1024;
    parser p(lim);
    for (int round = 0; round < 3; ++round) {
      for (std::size_t size : {0u, 10u, 1000u, 60000u, 500000u, 5u, 900000u, 100u}) {
        const std::size_t strings = size / 1000 + 1;
        std::string payload = "{";
        for (std::size_t i = 0; i < std::min<std::size_t>(strings, 32); ++i) {
          if (i) payload += ",";
          const std::size_t length = std::min<std::size_t>(size / strings, 8000);
          payload += "\"k" + std::to_string(i) + "\":\"" + std::string(length, static_cast<char>('a' + i % 26)) + "\"";
        }
        payload += "}";
        const std::string text = command_with(payload);
        auto r = p.parse(text);
        REQUIRE(r);
        CHECK((*r)->payload == payload);
        CHECK((*r)->fields.size == std::min<std::size_t>(strings, 32));
        // Errors interleaved with successes.
        CHECK(outcome(p, text.substr(0, text.size() - 1)) == code(errc::malformed_json));
        CHECK(outcome(p, std::string(lim.max_message_bytes + 1, ' ')) == code(errc::message_too_large));
      }
    }
    parser moved = std::move(p);
    CHECK(outcome(moved, R"({"v":1,"type":"auth_ok"})") == "ok");
    CHECK(moved.get_limits().max_message_bytes == lim.max_message_bytes);
  }

  TEST_CASE("append_json_string escapes quotes, backslashes and control characters") {
    std::string out = "prefix:";
    append_json_string(out, "a\"b\\c/d\n\r\t\b\f\x01\x1f\x7f");
    CHECK(out == "prefix:\"a\\\"b\\\\c/d\\u000a\\u000d\\u0009\\u0008\\u000c\\u0001\\u001f\x7f\"");

    out.clear();
    append_json_string(out, std::string_view("nul\0byte", 8));
    CHECK(out == "\"nul\\u0000byte\"");

    out.clear();
    append_json_string(out, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");  // valid UTF-8 passes through
    CHECK(out == "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");

    out.clear();
    append_json_string(out, "a\xff" "b\xc3" "\xed\xa0\x80" "\xe2\x82");  // ill-formed UTF-8 never leaks out
    CHECK(out == "\"a\\ufffdb\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"");

    out.clear();
    append_json_string(out, "");
    CHECK(out == "\"\"");
  }

  TEST_CASE("escaped strings parse back to the original text") {
    std::string all;
    for (int c = 1; c < 128; ++c) all.push_back(static_cast<char>(c));
    all += "\xc3\xa9\xf0\x9f\x98\x80";
    std::string text = R"({"v":1,"type":"error","code":"x","message":)";
    append_json_string(text, all.substr(0, 127));
    text += R"(,"op":"a"})";
    parser p;
    auto r = p.parse(text);
    REQUIRE(r);
    CHECK((*r)->message == all.substr(0, 127));

    std::string payload = "{\"s\":";
    append_json_string(payload, all);
    payload += "}";
    r = p.parse(command_with(payload));
    REQUIRE(r);
    CHECK((*r)->fields.find("s")->text == all);
  }

  TEST_CASE("write: fixed field order, absent fields omitted, never key or token") {
    envelope e;
    e.type = message_type::command;
    e.id = "r1";
    e.request = "q1";
    e.commander = "c1";
    e.agent = "a1";
    e.op = "site.deploy";
    e.prio = priority::high;
    e.site = 12;
    e.role = "agent";
    e.status = "ok";
    e.percent = 50;
    e.step = "step \"one\"";
    e.code = "x";
    e.message = "m";
    e.state = "online";
    e.expires_in = 60;
    e.key = "secret-key";
    e.token = "secret-token";
    e.payload = R"({ "site_id" : 12 })";
    std::string out;
    write(out, e);
    CHECK(out ==
          R"({"v":1,"type":"command","id":"r1","request":"q1","commanderId":"c1","agent":"a1","op":"site.deploy","priority":"high",)"
          R"("site":12,"role":"agent","status":"ok","percent":50,"step":"step \"one\"","code":"x","message":"m",)"
          R"("state":"online","expires_in":60,"payload":{ "site_id" : 12 }})");
    CHECK(out.find("secret") == std::string::npos);

    envelope minimal;
    minimal.type = message_type::auth_ok;
    write(out, minimal);  // `out` is cleared first
    CHECK(out == R"({"v":1,"type":"auth_ok"})");

    envelope negative;
    negative.type = message_type::auth_ok;
    negative.expires_in = 0;
    write(out, negative);
    CHECK(out == R"({"v":1,"type":"auth_ok","expires_in":0})");
  }

  TEST_CASE("write reuses the capacity of `out`") {
    envelope e;
    e.type = message_type::result;
    e.id = "request-with-a-long-id";
    e.status = "ok";
    e.message = "done";
    e.payload = R"({"site_id":1,"name":"a site with a name long enough to defeat small-string storage"})";
    std::string out;
    out.reserve(1024);
    const char* data = out.data();
    const std::size_t capacity = out.capacity();
    for (int i = 0; i < 100; ++i) {
      write(out, e);
      write_error(out, "r", errc::agent_offline);
    }
    CHECK(out.data() == data);
    CHECK(out.capacity() == capacity);
  }

  TEST_CASE("write_error uses the wire code and the public message only") {
    std::string out;
    write_error(out, "req-9", errc::unauthorized_access);
    CHECK(out == R"({"v":1,"type":"error","id":"req-9","code":"unauthorized_access","message":"Unauthorized access"})");
    write_error(out, "", errc::malformed_json);
    CHECK(out == R"({"v":1,"type":"error","code":"malformed_json","message":"Message is not valid JSON"})");
    write_error(out, "bad\"id", errc::internal_error);  // escaped, even though wire ids never need it
    CHECK(out == R"({"v":1,"type":"error","id":"bad\"id","code":"internal_error","message":"Internal error"})");
    parser p;
    write_error(out, "r", errc::storage_full);
    auto r = p.parse(out);
    REQUIRE(r);
    CHECK((*r)->code == "storage_full");
    CHECK((*r)->message == public_message(errc::storage_full));
  }

  TEST_CASE("retry_after: written on a rate_limited error, parsed back, on errors only and never below 1") {
    std::string out;
    write_error(out, "d11", errc::rate_limited, 2);
    CHECK(out == R"({"v":1,"type":"error","id":"d11","code":"rate_limited","message":"Too many requests, slow down","retry_after":2})");
    parser p;
    auto r = p.parse(out);
    REQUIRE(r);
    CHECK((*r)->retry_after == 2);
    auto without = p.parse(R"({"v":1,"type":"error","code":"rate_limited"})");
    REQUIRE(without);
    CHECK_FALSE((*without)->retry_after.has_value());
    CHECK(p.parse(R"({"v":1,"type":"error","code":"rate_limited","retry_after":0})").error() == errc::invalid_value);
    CHECK(p.parse(R"({"v":1,"type":"error","code":"rate_limited","retry_after":"2"})").error() == errc::wrong_type);
    CHECK(p.parse(R"({"v":1,"type":"result","id":"r","status":"ok","retry_after":2})").error() == errc::unknown_field);
  }

  TEST_CASE("field: written after the code on a field error, parsed back, on errors only, 1..128 bytes") {
    std::string out;
    write_field_error(out, "d12", errc::invalid_payload, payload_field_path("version"));
    CHECK(out ==
          R"({"v":1,"type":"error","id":"d12","code":"invalid_payload","field":"payload.version","message":"Invalid payload for this operation"})");
    write_field_error(out, "", errc::missing_field, "agent");
    CHECK(out == R"({"v":1,"type":"error","code":"missing_field","field":"agent","message":"Message lacks a required field"})");
    write_field_error(out, "d13", errc::invalid_payload, {});  // no field given: none written
    CHECK(out == R"({"v":1,"type":"error","id":"d13","code":"invalid_payload","message":"Invalid payload for this operation"})");
    CHECK(payload_field_path("") == "payload");
    CHECK(payload_field_path("site_id") == "payload.site_id");

    parser p;
    write_field_error(out, "d12", errc::invalid_payload, "payload.site_id");
    auto r = p.parse(out);
    REQUIRE(r);
    CHECK((*r)->field == "payload.site_id");
    envelope copy;
    copy_header(copy, **r);  // a forwarded error keeps it
    CHECK(copy.field == "payload.site_id");
    auto without = p.parse(R"({"v":1,"type":"error","code":"invalid_payload"})");
    REQUIRE(without);
    CHECK((*without)->field.empty());
    const std::string longest(128, 'f');
    auto at_limit = p.parse(R"({"v":1,"type":"error","code":"x","field":")" + longest + R"("})");
    REQUIRE(at_limit);
    CHECK((*at_limit)->field == longest);
    CHECK(p.parse(R"({"v":1,"type":"error","code":"x","field":")" + longest + R"(f"})").error() == errc::field_too_long);
    CHECK(p.parse(R"({"v":1,"type":"error","code":"x","field":""})").error() == errc::invalid_value);
    CHECK(p.parse(R"({"v":1,"type":"error","code":"x","field":1})").error() == errc::wrong_type);
    CHECK(p.parse(R"({"v":1,"type":"error","code":"x","field":"a","field":"b"})").error() == errc::duplicate_key);
    CHECK(p.parse(R"({"v":1,"type":"result","id":"r","status":"ok","field":"payload"})").error() == errc::unknown_field);
    CHECK(p.parse(R"({"v":1,"type":"command","id":"r","op":"site.status","field":"x"})").error() == errc::unknown_field);
  }

  TEST_CASE("round trips: parse(write(e)) gives back the same fields") {
    parser p;
    std::string out;
    std::vector<envelope> cases;
    {
      envelope e;
      e.type = message_type::command;
      e.id = "r-1";
      e.agent = "agent.1";
      e.commander = "backend:1";
      e.op = "site.update";
      e.prio = priority::low;
      e.site = 77;
      e.payload = R"({"site_id":77,"name":"n\u00e9w","url":"https://x.example/a?b=c&d=\"e\""})";
      cases.push_back(e);
    }
    {
      envelope e;
      e.type = message_type::progress;
      e.id = "r-1";
      e.agent = "a";
      e.commander = "c";
      e.percent = 0;
      e.step = "tab\there \"quoted\" \xe2\x9c\x93";
      e.site = 1;
      e.op = "site.deploy";
      cases.push_back(e);
    }
    {
      envelope e;
      e.type = message_type::result;
      e.id = "r-2";
      e.status = "failed";
      e.message = "line1\nline2\\";
      e.payload = "{}";
      cases.push_back(e);
    }
    {
      envelope e;
      e.type = message_type::error;
      e.id = "r-3";
      e.code = "agent_offline";
      e.message = "Agent is offline";
      e.op = "site.status";
      cases.push_back(e);
    }
    {
      envelope e;
      e.type = message_type::error;
      e.id = "r-4";
      e.code = "invalid_payload";
      e.field = "payload.version";
      e.message = "Invalid payload for this operation";
      cases.push_back(e);
    }
    {
      envelope e;
      e.type = message_type::presence;
      e.agent = "a-9";
      e.state = "online";
      cases.push_back(e);
    }
    {
      envelope e;
      e.type = message_type::auth_ok;
      e.expires_in = 3600;
      cases.push_back(e);
    }
    {
      envelope e;
      e.type = message_type::accepted;
      e.id = "u-1";
      e.request = "r9-12";
      e.op = "site.create";
      e.site = 5;
      e.payload = R"({"id":5,"name":"x"})";
      cases.push_back(e);
    }
    for (const envelope& e : cases) {
      write(out, e);
      INFO(out);
      auto r = p.parse(out);
      REQUIRE(r);
      const envelope& back = **r;
      CHECK(back.type == e.type);
      CHECK(back.id == e.id);
      CHECK(back.request == e.request);
      CHECK(back.agent == e.agent);
      CHECK(back.commander == e.commander);
      CHECK(back.op == e.op);
      CHECK(back.prio == e.prio);
      CHECK(back.site == e.site);
      CHECK(back.payload == e.payload);
      CHECK(back.status == e.status);
      CHECK(back.percent == e.percent);
      CHECK(back.step == e.step);
      CHECK(back.code == e.code);
      CHECK(back.field == e.field);
      CHECK(back.message == e.message);
      CHECK(back.state == e.state);
      CHECK(back.expires_in == e.expires_in);
      // And writing the parsed envelope again gives the same bytes.
      std::string again;
      write(again, back);
      CHECK(again == out);
    }
  }

  TEST_CASE("auth credentials are parsed but never written") {
    parser p;
    auto r = p.parse(R"({"v":1,"type":"auth","role":"commander","id":"backend-1","key":"k3y"})");
    REQUIRE(r);
    std::string out;
    write(out, **r);
    CHECK(out == R"({"v":1,"type":"auth","id":"backend-1","role":"commander"})");
  }

  TEST_CASE("every errc has a distinct wire code that maps back to it") {
    const errc all[] = {
        errc::ok,
        errc::malformed_json, errc::message_too_large, errc::too_deep, errc::invalid_utf8, errc::duplicate_key,
        errc::unknown_field, errc::missing_field, errc::wrong_type, errc::field_too_long, errc::invalid_value,
        errc::unsupported_version, errc::unknown_type,
        errc::unknown_operation, errc::invalid_payload, errc::forbidden_operation,
        errc::auth_required, errc::auth_failed, errc::token_expired, errc::account_locked, errc::identity_in_use,
        errc::unauthorized_access, errc::agent_not_granted, errc::agent_offline, errc::agent_disconnected,
        errc::unknown_request, errc::duplicate_request, errc::request_timeout, errc::too_many_in_flight,
        errc::rate_limited, errc::untrusted_commander, errc::hub_unavailable,
        errc::cancelled, errc::cancel_too_late, errc::interrupted,
        errc::not_found, errc::conflict, errc::storage_unavailable, errc::storage_full,
        errc::invalid_request, errc::shutting_down, errc::internal_error,
    };
    std::set<std::string_view> wires;
    for (errc e : all) {
      const std::string_view wire = wire_code(e);
      INFO(static_cast<int>(e) << " -> " << std::string(wire));
      CHECK((wire != "internal_error" || e == errc::internal_error));
      CHECK(wires.insert(wire).second);
      CHECK(errc_from_wire(wire) == e);
      CHECK_FALSE(public_message(e).empty());
      CHECK(make_error_code(e).message() == public_message(e));
      for (char c : wire) CHECK(((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'));
    }
    // Codes added later: each block's values are contiguous and every defined one is distinct too.
    for (int block = 0; block <= 500; block += 100) {
      bool ended = false;
      for (int v = block == 0 ? 1 : block; v < block + 100; ++v) {
        const errc e = static_cast<errc>(v);
        const bool defined = wire_code(e) != "internal_error" || e == errc::internal_error;
        INFO("errc value " << v);
        if (!defined) {
          ended = true;
          continue;
        }
        CHECK_FALSE(ended);  // a gap means an enum value without a row in the table
        CHECK(errc_from_wire(wire_code(e)) == e);
        wires.insert(wire_code(e));
      }
    }
    CHECK(errc_from_wire("no_such_code") == errc::internal_error);
  }
}
