// Certificates pushed through the admin API (PUT /ssl/{name}), as the state
// directory keeps them. The admin API writes, workers only read
// (tls/dynamic_certs.h):
//   ssl/index.json   {"version": N, "certs": {"NAME": {"version": V, "time": ms,
//                     "sha256": "...", "dns_names": [...], "key_type": "EC",
//                     "not_after": seconds}}}
//   ssl/V.cert       {"name": "NAME", "cert": PEM, "key": PEM} (mode 0600)
// `version` counts every change of the store and never goes back; a write
// takes the next value as the entry's version, which also names its file.
// So a change is one rename of the index: the entry's new file is written
// first, the index then names it, and the file the index stopped naming is
// deleted last. A reader that read the index before that finds the old file
// gone and keeps what it had (the counter has moved again by then).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tls/certificate.h"

namespace tidegate::tls {

struct StoredCertInfo {
  uint64_t version = 0;
  int64_t time_ms = 0;                 // wall clock of the write
  std::string sha256;                  // of the leaf's DER, lower-case hex
  std::vector<std::string> dns_names;  // CertKey::names()
  std::string key_type;                // CertKey::keyType()
  int64_t not_after = 0;               // seconds since the epoch

  // The metadata of `ck`, stamped with `version` and `time_ms`.
  static StoredCertInfo of(const CertKey& ck, uint64_t version, int64_t time_ms);
};

struct CertIndex {
  uint64_t version = 0;
  std::map<std::string, StoredCertInfo, std::less<>> certs;

  std::string toJson() const;
};

// One entry's file: the PEM texts as they were pushed.
struct StoredCert {
  std::string name;
  std::string cert;
  std::string key;

  std::string toJson() const;
};

std::string certDir(const std::string& state_dir);
std::string certFilePath(const std::string& state_dir, uint64_t version);
// A missing index is an empty one. False with *err on an unreadable or
// malformed file.
bool readCertIndex(const std::string& state_dir, CertIndex* out, std::string* err);
// False with *err when the file is missing, unreadable or malformed.
bool readStoredCert(const std::string& state_dir, uint64_t version, StoredCert* out, std::string* err);

// A name PUT /ssl/{name} takes: a host name (labels of 1-63 letters,
// digits, '-' or '_', at most 253 bytes) or "*." and one, lower-cased into
// *out. False with *err otherwise.
bool normalizeCertName(std::string_view name, std::string* out, std::string* err);
// The name a one-label wildcard entry for `host` would have ("*.b.c" for
// "a.b.c"); "" when `host` has no parent.
std::string wildcardFor(std::string_view host);

}  // namespace tidegate::tls
