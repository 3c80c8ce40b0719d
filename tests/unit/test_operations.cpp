#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "citrus/core/operations.hpp"
#include "citrus/core/protocol.hpp"

using namespace citrus;

namespace {

std::string code_of(const std::error_code& ec) {
  if (!ec) return "ok";
  return std::string(wire_code(static_cast<errc>(ec.value())));
}
std::string code(errc e) { return std::string(wire_code(e)); }

/// Parses a command with the given op and payload (raw JSON, or empty for none) and validates it.
struct checker {
  protocol::parser parser;
  operation_registry registry = operation_registry::defaults();

  std::string validate(std::string_view op, std::string_view payload, role sender = role::user) {
    std::string text = R"({"v":1,"type":"command","id":"r1","op":")" + std::string(op) + "\"";
    if (!payload.empty()) text += ",\"payload\":" + std::string(payload);
    text += "}";
    auto parsed = parser.parse(text);
    REQUIRE_MESSAGE(parsed, text);
    auto r = registry.validate(**parsed, sender);
    if (!r) return code_of(r.error());
    CHECK((*r)->name == op);
    return "ok";
  }
};

}  // namespace

TEST_SUITE("operations") {
  TEST_CASE("the default table") {
    const auto reg = operation_registry::defaults();
    REQUIRE(reg.all().size() == 5);
    const char* names[] = {"site.create", "site.update", "site.delete", "site.deploy", "site.status"};
    for (const char* name : names) {
      const operation* op = reg.find(name);
      REQUIRE_MESSAGE(op, name);
      CHECK(op->allows(role::user));
      CHECK(op->allows(role::commander));
      CHECK_FALSE(op->allows(role::agent));
      CHECK(op->owner_check == (std::string_view(name) == "site.create" ? ownership::none : ownership::site_owner));
      CHECK(op->default_priority ==
            (std::string_view(name) == "site.status" ? protocol::priority::high : protocol::priority::normal));
    }
    CHECK(reg.find("site.destroy") == nullptr);
    CHECK(reg.find("") == nullptr);

    const operation* create = reg.find("site.create");
    REQUIRE(create->payload.size() == 3);
    CHECK(create->payload[0].name == "site_id");
    CHECK_FALSE(create->payload[0].required);
    CHECK(create->payload[0].kind == protocol::json_kind::integer);
    CHECK(create->payload[0].min == 1);
    CHECK(create->payload[1].name == "name");
    CHECK(create->payload[1].required);
    CHECK(create->payload[1].min_length == 1);
    CHECK(create->payload[1].max_length == 100);
    CHECK(create->payload[2].name == "url");
    CHECK(create->payload[2].max_length == 255);
  }

  TEST_CASE("add rejects duplicates and names the parser could never accept") {
    auto reg = operation_registry::defaults();
    operation dup;
    dup.name = "site.create";
    auto r = reg.add(dup);
    CHECK(code_of(r.error()) == code(errc::conflict));
    CHECK(reg.all().size() == 5);

    operation extra;
    extra.name = "site.backup";
    extra.allowed_roles = static_cast<std::uint8_t>(role::commander);
    CHECK(reg.add(extra));
    CHECK(reg.find("site.backup") != nullptr);
    CHECK(code_of(reg.add(extra).error()) == code(errc::conflict));

    for (const char* bad : {"", "Site.backup", "site-backup", "site backup"}) {
      operation op;
      op.name = bad;
      CHECK_MESSAGE(code_of(reg.add(op).error()) == code(errc::invalid_value), bad);
    }
    operation longest;
    longest.name = std::string(64, 'a');
    CHECK(reg.add(longest));
    longest.name = std::string(65, 'a');
    CHECK(code_of(reg.add(longest).error()) == code(errc::invalid_value));
  }

  TEST_CASE("validate: unknown operation and forbidden roles") {
    checker c;
    CHECK(c.validate("site.destroy", R"({"site_id":1})") == code(errc::unknown_operation));
    CHECK(c.validate("site", "") == code(errc::unknown_operation));
    CHECK(c.validate("site.status", R"({"site_id":1})", role::agent) == code(errc::forbidden_operation));
    CHECK(c.validate("site.create", R"({"name":"a","url":"b"})", role::agent) == code(errc::forbidden_operation));
    CHECK(c.validate("site.status", R"({"site_id":1})", role::commander) == "ok");
    CHECK(c.validate("site.status", R"({"site_id":1})", role::user) == "ok");
    // unknown operation wins over a bad payload; the role is checked before the payload
    CHECK(c.validate("nope", R"({"x":1})") == code(errc::unknown_operation));
    CHECK(c.validate("site.status", R"({"x":1})", role::agent) == code(errc::forbidden_operation));

    protocol::envelope empty_op;
    empty_op.type = protocol::message_type::command;
    CHECK(code_of(c.registry.validate(empty_op, role::user).error()) == code(errc::unknown_operation));

    // Only commands run operations: any other message naming one (as updates echo their op) is refused.
    auto parsed = c.parser.parse(R"({"v":1,"type":"result","id":"r1","status":"ok","op":"site.status"})");
    REQUIRE(parsed);
    for (role r : {role::user, role::commander, role::agent})
      CHECK(code_of(c.registry.validate(**parsed, r).error()) == code(errc::forbidden_operation));
  }

  TEST_CASE("validate: a missing payload is invalid when the operation has required fields") {
    checker c;
    for (const char* op : {"site.create", "site.update", "site.delete", "site.deploy", "site.status"})
      CHECK_MESSAGE(c.validate(op, "") == code(errc::invalid_payload), op);

    operation ping;
    ping.name = "hub.ping";
    ping.allowed_roles = static_cast<std::uint8_t>(role::commander);
    REQUIRE(c.registry.add(ping));
    CHECK(c.validate("hub.ping", "", role::commander) == "ok");
    CHECK(c.validate("hub.ping", "{}", role::commander) == "ok");
    CHECK(c.validate("hub.ping", R"({"x":1})", role::commander) == code(errc::invalid_payload));
  }

  TEST_CASE("site.create") {
    checker c;
    CHECK(c.validate("site.create", R"({"name":"blog","url":"https://blog.example"})") == "ok");
    CHECK(c.validate("site.create", R"({"site_id":5,"name":"blog","url":"u"})") == "ok");  // assigned by the backend
    CHECK(c.validate("site.create", R"({"site_id":0,"name":"blog","url":"u"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"url":"u"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":"n"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":"","url":"u"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":")" + std::string(100, 'n') + R"(","url":"u"})") == "ok");
    CHECK(c.validate("site.create", R"({"name":")" + std::string(101, 'n') + R"(","url":"u"})") ==
          code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":"n","url":")" + std::string(255, 'u') + "\"}") == "ok");
    CHECK(c.validate("site.create", R"({"name":"n","url":")" + std::string(256, 'u') + "\"}") ==
          code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":"n","url":""})") == code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":5,"url":"u"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":"n","url":"u","owner":1})") == code(errc::invalid_payload));
    CHECK(c.validate("site.create", R"({"name":"n","url":"u","site_id":"5"})") == code(errc::invalid_payload));
  }

  TEST_CASE("site.update, site.delete, site.deploy, site.status") {
    checker c;
    CHECK(c.validate("site.update", R"({"site_id":1})") == "ok");
    CHECK(c.validate("site.update", R"({"site_id":1,"name":"n","url":"u"})") == "ok");
    CHECK(c.validate("site.update", R"({"name":"n"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.update", R"({"site_id":1,"name":""})") == code(errc::invalid_payload));
    CHECK(c.validate("site.update", R"({"site_id":1,"name":null})") == code(errc::invalid_payload));
    CHECK(c.validate("site.update", R"({"site_id":1,"version":"1"})") == code(errc::invalid_payload));

    CHECK(c.validate("site.delete", R"({"site_id":9223372036854775807})") == "ok");
    CHECK(c.validate("site.delete", R"({"site_id":0})") == code(errc::invalid_payload));
    CHECK(c.validate("site.delete", R"({"site_id":-1})") == code(errc::invalid_payload));
    CHECK(c.validate("site.delete", R"({"site_id":1.0})") == code(errc::invalid_payload));
    CHECK(c.validate("site.delete", R"({"site_id":9223372036854775808})") == code(errc::invalid_payload));
    CHECK(c.validate("site.delete", R"({"site_id":"1"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.delete", R"({"site_id":[1]})") == code(errc::invalid_payload));
    CHECK(c.validate("site.delete", R"({"site_id":1,"name":"n"})") == code(errc::invalid_payload));
    CHECK(c.validate("site.delete", "{}") == code(errc::invalid_payload));

    CHECK(c.validate("site.deploy", R"({"site_id":3})") == "ok");
    CHECK(c.validate("site.deploy", R"({"site_id":3,"version":"2024.1"})") == "ok");
    CHECK(c.validate("site.deploy", R"({"site_id":3,"version":")" + std::string(64, 'v') + "\"}") == "ok");
    CHECK(c.validate("site.deploy", R"({"site_id":3,"version":")" + std::string(65, 'v') + "\"}") ==
          code(errc::invalid_payload));
    CHECK(c.validate("site.deploy", R"({"site_id":3,"version":""})") == code(errc::invalid_payload));

    CHECK(c.validate("site.status", R"({"site_id":3})") == "ok");
    CHECK(c.validate("site.status", R"({"site_id":3,"verbose":true})") == code(errc::invalid_payload));
  }

  TEST_CASE("validate_payload: kinds, lengths, ranges, exact field set") {
    std::vector<field_rule> rules(4);
    rules[0].name = "n";
    rules[0].kind = protocol::json_kind::number;
    rules[0].required = false;
    rules[1].name = "i";
    rules[1].kind = protocol::json_kind::integer;
    rules[1].min = -5;
    rules[1].max = 5;
    rules[2].name = "b";
    rules[2].kind = protocol::json_kind::boolean;
    rules[2].required = false;
    rules[3].name = "o";
    rules[3].kind = protocol::json_kind::object;
    rules[3].required = false;

    protocol::parser p;
    auto check = [&](std::string_view payload) {
      auto r = p.parse(R"({"v":1,"type":"command","id":"r","op":"x","payload":)" + std::string(payload) + "}");
      REQUIRE(r);
      const payload_check v = validate_payload(rules, (*r)->fields);
      if (v) return std::string("ok");
      return code(v.code) + ":" + std::string(v.field);
    };
    const std::string bad = code(errc::invalid_payload) + ":";
    CHECK(check(R"({"i":0})") == "ok");
    CHECK(check(R"({"i":-5,"n":1.5,"b":false,"o":{"x":[1]}})") == "ok");
    CHECK(check(R"({"i":5,"n":7})") == "ok");  // an integer is a number
    CHECK(check(R"({"i":-6})") == bad + "i");
    CHECK(check(R"({"i":6})") == bad + "i");
    CHECK(check(R"({"i":1,"n":"1"})") == bad + "n");
    CHECK(check(R"({"i":1,"b":1})") == bad + "b");
    CHECK(check(R"({"i":1,"o":[]})") == bad + "o");
    CHECK(check(R"({"n":1})") == bad + "i");  // i is required
    CHECK(check(R"({"i":1,"extra":null})") == bad + "extra");
    CHECK(check(R"({"i":99,"b":1})") == bad + "i");  // the first member at fault, in payload order
    CHECK(check(R"({"b":1})") == bad + "b");         // a wrong member before a missing one
    // An unknown key is repeated only when it is a short plain name.
    CHECK(check(R"({"i":1,"a b":1})") == bad);
    CHECK(check(R"({"i":1,"x\"y":1})") == bad);
    CHECK(check(R"({"i":1,")" + std::string(65, 'k') + R"(":1})") == bad);
    CHECK(check(R"({"i":1,")" + std::string(64, 'k') + R"(":1})") == bad + std::string(64, 'k'));

    protocol::payload_fields none;
    CHECK(validate_payload(rules, none).code == errc::invalid_payload);
    CHECK(validate_payload(rules, none).field == "i");
    CHECK(validate_payload({}, none));
  }

  TEST_CASE("check: the same verdicts as validate, with the payload member at fault") {
    checker c;
    auto check = [&](std::string_view op, std::string_view payload, role sender = role::user) {
      std::string text = R"({"v":1,"type":"command","id":"r1","op":")" + std::string(op) + "\"";
      if (!payload.empty()) text += ",\"payload\":" + std::string(payload);
      text += "}";
      auto parsed = c.parser.parse(text);
      REQUIRE_MESSAGE(parsed, text);
      const command_check v = c.registry.check(**parsed, sender);
      if (v) {
        CHECK(v.code == errc::ok);
        CHECK(v.field.empty());
        return "ok:" + v.op->name;
      }
      CHECK(v.op == nullptr);
      return code(v.code) + ":" + std::string(v.field);
    };
    CHECK(check("site.deploy", R"({"site_id":3,"version":"1.2"})") == "ok:site.deploy");
    CHECK(check("site.deploy", R"({"site_id":3,"version":""})") == "invalid_payload:version");
    CHECK(check("site.deploy", R"({"version":"1"})") == "invalid_payload:site_id");
    CHECK(check("site.deploy", "") == "invalid_payload:site_id");  // no payload: the first required member
    CHECK(check("site.create", R"({"name":"n","url":"u","owner":1})") == "invalid_payload:owner");
    CHECK(check("site.create", R"({"name":"","url":"u"})") == "invalid_payload:name");
    CHECK(check("site.update", R"({"site_id":"1"})") == "invalid_payload:site_id");
    CHECK(check("site.destroy", R"({"site_id":1})") == "unknown_operation:");
    CHECK(check("site.status", R"({"site_id":1})", role::agent) == "forbidden_operation:");
  }

  TEST_CASE("payload_fields::find") {
    protocol::payload_fields fields;
    CHECK(fields.find("a") == nullptr);
    fields.items[0].key = "a";
    fields.items[1].key = "b";
    fields.size = 1;
    CHECK(fields.find("a") == &fields.items[0]);
    CHECK(fields.find("b") == nullptr);  // beyond size
    fields.size = 2;
    CHECK(fields.find("b") == &fields.items[1]);
  }

  TEST_CASE("role names") {
    CHECK(to_string(role::user) == "user");
    CHECK(to_string(role::commander) == "commander");
    CHECK(to_string(role::agent) == "agent");
  }
}
