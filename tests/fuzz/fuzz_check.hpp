#pragma once
// Invariant checks for the fuzz targets: a broken invariant prints what broke (and the related text) and
// aborts, which libFuzzer reports as a crash and saves the input under -artifact_prefix.
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace citrus::fuzz {

[[noreturn]] inline void invariant_failed(const char* file, int line, const char* condition, std::string_view what,
                                          std::string_view detail = {}) {
  std::fprintf(stderr, "\n*** fuzz invariant broken at %s:%d: %s\n*** %.*s\n", file, line, condition,
               static_cast<int>(what.size()), what.data());
  if (!detail.empty())
    std::fprintf(stderr, "*** detail (%zu bytes): %.*s\n", detail.size(),
                 static_cast<int>(detail.size() > 2000 ? 2000 : detail.size()), detail.data());
  std::abort();
}

}  // namespace citrus::fuzz

/// CITRUS_FUZZ_CHECK(condition, what[, detail]): `what` says which invariant, `detail` the text involved.
#define CITRUS_FUZZ_CHECK(condition, ...)                                                   \
  do {                                                                                      \
    if (!(condition)) ::citrus::fuzz::invariant_failed(__FILE__, __LINE__, #condition, __VA_ARGS__); \
  } while (false)
