#include "tls/dynamic_certs.h"

#include <iterator>

#include "core/log.h"
#include "tls/cert_store.h"

namespace tidegate::tls {
namespace {

using core::LogLevel;

}  // namespace

CertKeyPtr DynamicCerts::find(std::string_view server_name) {
  refresh();
  if (entries_.empty() || server_name.empty()) return nullptr;
  auto it = entries_.find(server_name);
  if (it == entries_.end()) {
    std::string wildcard = wildcardFor(server_name);
    if (!wildcard.empty()) it = entries_.find(wildcard);
  }
  return it == entries_.end() ? nullptr : it->second.cert;
}

size_t DynamicCerts::size() {
  refresh();
  return entries_.size();
}

void DynamicCerts::refresh() {
  // The counter is read before the index: a change committed in between is
  // read now and once more at the next find, never missed.
  uint64_t now = counter_();
  if (loaded_ && now == seen_) return;
  loaded_ = true;
  seen_ = now;
  CertIndex index;
  std::string err;
  if (!readCertIndex(dir_, &index, &err)) {
    TG_LOG(LogLevel::kError, "dynamic certificates: %s; the ones loaded before stay", err.c_str());
    return;
  }
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = index.certs.count(it->first) ? std::next(it) : entries_.erase(it);
  }
  for (const auto& [name, info] : index.certs) {
    auto have = entries_.find(name);
    if (have != entries_.end() && have->second.version == info.version) continue;
    StoredCert stored;
    CertKeyPtr ck;
    if (readStoredCert(dir_, info.version, &stored, &err)) ck = CertKey::fromPem(stored.cert, stored.key, &err);
    if (!ck && counter_() != now) {
      // A later change deleted the file the index read here named: the
      // next find reads that change.
      TG_LOG(LogLevel::kInfo, "dynamic certificate \"%s\" changed while it was read: %s", name.c_str(), err.c_str());
      continue;
    }
    if (!ck) {
      TG_LOG(LogLevel::kError, "dynamic certificate \"%s\" version %llu not loaded, %s: %s", name.c_str(),
             static_cast<unsigned long long>(info.version),
             have == entries_.end() ? "none is served for it" : "the previous one stays", err.c_str());
      continue;
    }
    entries_[name] = Entry{info.version, std::move(ck)};
  }
}

}  // namespace tidegate::tls
