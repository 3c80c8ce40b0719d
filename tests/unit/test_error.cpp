#include <doctest/doctest.h>

#include <ostream>
#include <set>
#include <string>

#include "citrus/core/error.hpp"
#include "citrus/core/ids.hpp"

using namespace citrus;

TEST_SUITE("error") {
  TEST_CASE("wire codes round-trip and public messages carry no internal words") {
    std::set<std::string_view> seen;
    for (int v = 0; v <= static_cast<int>(errc::internal_error); ++v) {
      const auto e = static_cast<errc>(v);
      const std::string_view wire = wire_code(e);
      if (wire == "internal_error" && e != errc::internal_error) continue;  // not a defined code
      CHECK(seen.insert(wire).second);
      CHECK(errc_from_wire(wire) == e);
      const std::string_view text = public_message(e);
      CHECK_FALSE(text.empty());
      CHECK(text.find("sqlite") == std::string_view::npos);
      CHECK(make_error_code(e).message() == std::string(text));
    }
    CHECK(seen.size() > 35);
    CHECK(errc_from_wire("no_such_code") == errc::internal_error);
    CHECK(public_message(errc::unauthorized_access) == "Unauthorized access");
    CHECK(std::string(citrus_category().name()) == "citrus");
  }

  TEST_CASE("wire ids: 1..128 bytes of [A-Za-z0-9._:-], nothing else") {
    CHECK(is_valid_wire_id("backend-1"));
    CHECK(is_valid_wire_id("a.b_c:d-E9"));
    CHECK(is_valid_wire_id(std::string(128, 'x')));
    CHECK_FALSE(is_valid_wire_id(""));
    CHECK_FALSE(is_valid_wire_id(std::string(129, 'x')));
    for (char c : std::string(" \"\\/\n\t{}[],;'<>@#%&*+=?!`~|$^()")) CHECK_FALSE(is_valid_wire_id(std::string("a") + c));
    CHECK_FALSE(is_valid_wire_id("caf\xc3\xa9"));
    CHECK_FALSE(is_valid_wire_id(std::string("a\0b", 3)));
  }
}
