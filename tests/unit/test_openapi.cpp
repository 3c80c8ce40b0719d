// docs/openapi.json against the routes the backend serves (rest_routes(), the router's own table):
// the same (path, method) pairs, every $ref resolvable, every path parameter declared, and the
// administration routes documented as such.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <set>
#include <string>
#include <utility>

#include "citrus/backend/rest_api.hpp"

namespace {

using route_key = std::pair<std::string, std::string>;  // ("/api/sites/{id}", "PUT")

/// "/api/sites/:id" as OpenAPI spells it: "/api/sites/{id}".
std::string openapi_path(std::string_view pattern) {
  std::string out;
  std::size_t i = 0;
  while (i < pattern.size()) {
    if (pattern[i] == ':') {
      const std::size_t end = std::min(pattern.find('/', i), pattern.size());
      out += '{';
      out += pattern.substr(i + 1, end - i - 1);
      out += '}';
      i = end;
    } else {
      out += pattern[i++];
    }
  }
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

std::set<route_key> served_routes() {
  std::set<route_key> out;
  for (const citrus::rest_route& r : citrus::rest_routes()) {
    std::string_view methods = r.methods;
    while (!methods.empty()) {
      const std::size_t comma = methods.find(',');
      std::string_view m = methods.substr(0, comma);
      while (!m.empty() && m.front() == ' ') m.remove_prefix(1);
      out.emplace(openapi_path(r.pattern), std::string(m));
      if (comma == std::string_view::npos) break;
      methods.remove_prefix(comma + 1);
    }
  }
  return out;
}

bool is_http_method(std::string_view key) {
  for (std::string_view m : {"get", "put", "post", "delete", "patch", "head", "options", "trace"})
    if (key == m) return true;
  return false;
}

/// The names in "{...}" of an OpenAPI path.
std::set<std::string> template_names(std::string_view path) {
  std::set<std::string> out;
  for (std::size_t open = path.find('{'); open != std::string_view::npos; open = path.find('{', open + 1))
    out.emplace(path.substr(open + 1, path.find('}', open) - open - 1));
  return out;
}

/// Every "$ref" value anywhere under `e`.
void collect_refs(simdjson::dom::element e, std::set<std::string>& out) {
  simdjson::dom::object object;
  simdjson::dom::array array;
  if (e.get(object) == simdjson::SUCCESS) {
    for (auto member : object) {
      std::string_view ref;
      if (member.key == "$ref" && member.value.get(ref) == simdjson::SUCCESS) out.emplace(ref);
      else collect_refs(member.value, out);
    }
  } else if (e.get(array) == simdjson::SUCCESS) {
    for (auto item : array) collect_refs(item, out);
  }
}

/// The parameters named in `list` (an OpenAPI parameters array) that are "in": "path".
void add_path_params(simdjson::dom::element list, std::set<std::string>& out) {
  simdjson::dom::array params;
  if (list.get_array().get(params) != simdjson::SUCCESS) return;
  for (auto p : params) {
    std::string_view in, name;
    if (p["in"].get(in) == simdjson::SUCCESS && in == "path" && p["name"].get(name) == simdjson::SUCCESS)
      out.emplace(name);
  }
}

struct openapi_doc {
  simdjson::dom::parser parser;
  simdjson::padded_string text;
  simdjson::dom::element root;

  openapi_doc() {
    const std::string path = std::string(CITRUS_SOURCE_DIR) + "/docs/openapi.json";
    REQUIRE_MESSAGE(simdjson::padded_string::load(path).get(text) == simdjson::SUCCESS, path);
    REQUIRE(parser.parse(text).get(root) == simdjson::SUCCESS);
  }
};

}  // namespace

TEST_SUITE("openapi") {
  TEST_CASE("docs/openapi.json documents exactly the routes the backend serves, and each one completely") {
    openapi_doc doc;
    std::string_view version;
    REQUIRE(doc.root["openapi"].get(version) == simdjson::SUCCESS);
    CHECK(version.substr(0, 4) == "3.1.");

    simdjson::dom::object paths;
    REQUIRE(doc.root["paths"].get(paths) == simdjson::SUCCESS);
    std::set<route_key> documented;
    std::size_t static_paths = 0;
    for (auto path : paths) {
      const std::string name(path.key);
      CAPTURE(name);
      simdjson::dom::object item;
      REQUIRE(path.value.get(item) == simdjson::SUCCESS);
      bool is_static = false;
      if (auto flag = item["x-citrus-static-files"]; flag.error() == simdjson::SUCCESS) is_static = flag.is_bool() && flag.get_bool().value_unsafe();

      std::set<std::string> declared;
      if (auto params = item["parameters"]; params.error() == simdjson::SUCCESS) add_path_params(params.value_unsafe(), declared);
      for (auto member : item) {
        if (!is_http_method(member.key)) continue;
        const std::string method = upper(member.key);
        CAPTURE(method);
        if (is_static) {  // the dashboard's files (apps/backend), served apart from the REST routes
          CHECK(method == "GET");
          continue;
        }
        documented.emplace(name, method);
        simdjson::dom::object responses;
        REQUIRE(member.value["responses"].get(responses) == simdjson::SUCCESS);
        bool success = false, error = false;
        for (auto answer : responses) {
          success = success || answer.key.front() == '2';
          error = error || answer.key.front() == '4' || answer.key.front() == '5';
        }
        CHECK(success);
        CHECK(error);
        std::set<std::string> in_operation = declared;
        if (auto params = member.value["parameters"]; params.error() == simdjson::SUCCESS) add_path_params(params.value_unsafe(), in_operation);
        CHECK(in_operation == template_names(name));
        if (name.rfind("/api/admin/", 0) == 0) {  // administrators only: a bearer token, and the 403 documented
          simdjson::dom::array security;
          REQUIRE(member.value["security"].get(security) == simdjson::SUCCESS);
          REQUIRE(security.size() == 1);
          CHECK(security.at(0)["bearerAuth"].error() == simdjson::SUCCESS);
          std::string_view refusal;
          REQUIRE(responses["403"]["$ref"].get(refusal) == simdjson::SUCCESS);
          CHECK(refusal == "#/components/responses/AdminOnly");
        }
      }
      if (is_static) ++static_paths;
    }
    CHECK(static_paths == 2);  // "/" and "/{file}"

    const std::set<route_key> served = served_routes();
    REQUIRE(!served.empty());
    for (const route_key& route : served) {
      CAPTURE(route.first);
      CAPTURE(route.second);
      CHECK_MESSAGE(documented.count(route) == 1, "served but not documented");
    }
    for (const route_key& route : documented) {
      CAPTURE(route.first);
      CAPTURE(route.second);
      CHECK_MESSAGE(served.count(route) == 1, "documented but not served");
    }
  }

  TEST_CASE("every $ref of docs/openapi.json names a component that exists, and every error answer is the error body") {
    openapi_doc doc;
    std::set<std::string> refs;
    collect_refs(doc.root, refs);
    REQUIRE(!refs.empty());
    for (const std::string& ref : refs) {
      CAPTURE(ref);
      REQUIRE(ref.rfind("#/components/", 0) == 0);
      const std::string rest = ref.substr(std::string_view("#/components/").size());
      const std::size_t slash = rest.find('/');
      REQUIRE(slash != std::string::npos);
      CHECK(doc.root["components"][rest.substr(0, slash)][rest.substr(slash + 1)].error() == simdjson::SUCCESS);
    }
    simdjson::dom::object responses;
    REQUIRE(doc.root["components"]["responses"].get(responses) == simdjson::SUCCESS);
    for (auto answer : responses) {
      CAPTURE(std::string(answer.key));
      std::string_view schema;
      REQUIRE(answer.value["content"]["application/json"]["schema"]["$ref"].get(schema) == simdjson::SUCCESS);
      CHECK(schema == "#/components/schemas/Error");
    }
    simdjson::dom::array required;
    REQUIRE(doc.root["components"]["schemas"]["Error"]["required"].get(required) == simdjson::SUCCESS);
    CHECK(required.size() == 2);
  }
}
