#include "citrus/version.hpp"

namespace citrus {

const char* version() noexcept { return CITRUS_VERSION_STRING; }

}  // namespace citrus
