#include "upstream/peer.h"

namespace tidegate::upstream {

std::string Peer::id() const { return host + ":" + std::to_string(port); }

}  // namespace tidegate::upstream
