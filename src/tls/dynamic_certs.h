// The certificates of the admin API (PUT /ssl/{name}) as one worker serves
// them: the CertificateSource every ServerContext of the worker consults
// first. find() costs one shared integer compare when nothing changed; when
// the machine-wide counter moved (shm::UpstreamTable::certVersion(), which
// the admin API bumps after each committed change) it re-reads the index
// and parses only the entries whose version changed, once per change.
//
// A handshake sees the old certificate or the new one, never none: an entry
// whose file cannot be read or parsed keeps its previous value (logged, and
// tried again at the next change); an index that cannot be read keeps them
// all. Only an entry the index no longer names is dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "tls/server_context.h"

namespace tidegate::tls {

class DynamicCerts final : public CertificateSource {
 public:
  // `counter` reads the machine-wide certificate counter.
  DynamicCerts(std::string state_dir, std::function<uint64_t()> counter)
      : dir_(std::move(state_dir)), counter_(std::move(counter)) {}

  // The entry named `server_name` exactly, else the one-label wildcard
  // ("*.example.com" for "a.example.com", not for "a.b.example.com" nor
  // "example.com"); null when neither exists.
  CertKeyPtr find(std::string_view server_name) override;
  // How many entries this worker holds (after a refresh).
  size_t size();
  // Brings the entries up to date with the store if the counter moved (or
  // on the first call). A worker calls it once at start, so that its first
  // handshake does not parse the whole store.
  void refresh();

 private:
  struct Entry {
    uint64_t version = 0;
    CertKeyPtr cert;
  };

  std::string dir_;
  std::function<uint64_t()> counter_;
  bool loaded_ = false;
  uint64_t seen_ = 0;  // the counter the entries were read at
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace tidegate::tls
