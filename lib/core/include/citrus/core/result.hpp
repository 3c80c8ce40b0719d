#pragma once
/// result<T>: a value or a std::error_code, in the spirit of simdjson_result / std::expected (C++23).
/// Check with `if (!r)`, read with `*r` / `r->`, get the failure with `r.error()`.
#include <cassert>
#include <optional>
#include <system_error>
#include <utility>

#include "citrus/core/error.hpp"

namespace citrus {

template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  result(std::error_code error) : error_(error) { assert(error); }  // NOLINT
  result(errc error) : error_(make_error_code(error)) {}  // NOLINT

  explicit operator bool() const noexcept { return value_.has_value(); }
  bool has_value() const noexcept { return value_.has_value(); }
  std::error_code error() const noexcept { return error_; }

  T& operator*() & { assert(value_); return *value_; }
  const T& operator*() const& { assert(value_); return *value_; }
  T&& operator*() && { assert(value_); return std::move(*value_); }
  T* operator->() { assert(value_); return &*value_; }
  const T* operator->() const { assert(value_); return &*value_; }

 private:
  std::optional<T> value_;
  std::error_code error_;
};

/// result<void>: success or an error.
template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(std::error_code error) : error_(error) {}  // NOLINT
  result(errc error) : error_(make_error_code(error)) {}  // NOLINT
  explicit operator bool() const noexcept { return !error_; }
  bool has_value() const noexcept { return !error_; }
  std::error_code error() const noexcept { return error_; }

 private:
  std::error_code error_;
};

}  // namespace citrus
