// Configure-time probe (CMakeLists.txt): built with the extension's compiler and flags, then loaded
// into a Python process that has imported torch. A compiler whose libstdc++ code ends up inside the
// extension (statically linked, or a copy other than the one torch loads) breaks number formatting
// there: every op error message, built with ostreams, then comes out truncated or crashes.
#include <sstream>
#include <stdexcept>
#include <string>

extern "C" int deepstock_libstdcxx_probe() {
  try {
    std::ostringstream message;
    message << "lead_time " << 42L << " > " << 3.5;
    throw std::invalid_argument(message.str());
  } catch (const std::invalid_argument& error) {
    return std::string(error.what()) == "lead_time 42 > 3.5" ? 0 : 1;
  }
}
