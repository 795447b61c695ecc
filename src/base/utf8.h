// UTF-8 validity (as YAML and JSON text require).
#pragma once

#include <string_view>

namespace prewarm {

// Well-formed UTF-8: no overlong forms, surrogates or code points beyond U+10FFFF.
bool valid_utf8(std::string_view s);

}  // namespace prewarm
