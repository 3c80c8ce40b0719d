#pragma once
/// Key files that a rotation rewrites (citrus-agent --key-file, citrus-backend --commander-key-file).
#include <string>
#include <string_view>

#include "citrus/core/result.hpp"

namespace citrus::app {

/// Replaces the file at `path` with `text` and a newline so that a crash or a full disk at any point
/// leaves either the old file or the new one, whole: written to a temporary file beside it (mode 0600),
/// fsync'd, renamed over `path`, then the directory fsync'd. The error is the system's (errno).
result<void> replace_secret_file(const std::string& path, std::string_view text);

}  // namespace citrus::app
