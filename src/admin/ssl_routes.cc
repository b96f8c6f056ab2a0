// /ssl routes: certificates by server name (see routes.h and
// tls/cert_store.h for how they are kept, tls/dynamic_certs.h for how the
// workers serve them).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "admin/routes.h"
#include "admin/state_store.h"
#include "core/clock.h"
#include "core/log.h"
#include "tls/cert_store.h"

namespace tidegate::admin {
namespace {

using core::LogLevel;

// "2026-12-31T23:59:59Z"
std::string isoUtc(int64_t seconds) {
  time_t t = static_cast<time_t>(seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// What every read and write answers about an entry: never the key.
json entryJson(const std::string& name, const tls::StoredCertInfo& info) {
  return json{{"name", name},
              {"dns_names", info.dns_names},
              {"key_type", info.key_type},
              {"not_after", info.not_after},
              {"not_after_iso", isoUtc(info.not_after)},
              {"fingerprint_sha256", info.sha256},
              {"version", info.version},
              {"time", localTimeText(info.time_ms)}};
}

Reply entryReply(int status, const std::string& name, const tls::StoredCertInfo& info) {
  Reply reply;
  reply.status = status;
  reply.body = entryJson(name, info);
  reply.headers.emplace_back("ETag", etagOf(info.version));
  return reply;
}

// The PUT body: {"cert": PEM, "key": PEM}, nothing else. False with *err.
bool parseCertBody(const AdminRequest& r, tls::StoredCert* out, Reply* err) {
  json body;
  if (!parseJsonBody(r, &body, err)) return false;
  if (!body.is_object()) {
    *err = errorReply(400, "the body must be a JSON object {\"cert\": PEM, \"key\": PEM}");
    return false;
  }
  for (const auto& [field, value] : body.items()) {
    if (field != "cert" && field != "key") {
      *err = errorReply(400, "unknown field \"" + field + "\"", field);
      return false;
    }
  }
  for (const char* field : {"cert", "key"}) {
    if (!body.contains(field) || !body[field].is_string() || body[field].get<std::string>().empty()) {
      *err = errorReply(400, std::string(field) + ": a PEM string is required", field);
      return false;
    }
  }
  out->cert = body["cert"].get<std::string>();
  out->key = body["key"].get<std::string>();
  return true;
}

// One change of the certificate index.
class IndexChange : public LockedIndex<tls::CertIndex> {
 public:
  explicit IndexChange(const std::string& dir) : LockedIndex(dir, tls::readCertIndex) {}
  // Writes the index (the one moment the change happens), deletes the
  // file of the version it replaced (0: none) and tells every worker.
  // False with *err (nothing changed then).
  bool commit(shm::UpstreamTable& table, uint64_t replaced, std::string* err) {
    if (!writeFileAtomic(tls::certDir(dir()) + "/index.json", index().toJson(), err)) return false;
    if (replaced) unlink(tls::certFilePath(dir(), replaced).c_str());
    table.bumpCertVersion();
    return true;
  }
};

}  // namespace

Reply SslRoutes::handle(const AdminRequest& r) {
  if (r.segments.size() == 1) return list();
  std::string name, err;
  if (!tls::normalizeCertName(r.segments[1], &name, &err)) return errorReply(400, err, "name");
  if (r.method == "GET") return get(name);
  if (r.method == "PUT") return put(r, name);
  return remove(r, name);
}

Reply SslRoutes::list() {
  tls::CertIndex index;
  std::string err;
  if (!tls::readCertIndex(cfg_.http.admin.state_dir, &index, &err)) return errorReply(500, err);
  json certs = json::array();
  for (const auto& [name, info] : index.certs) certs.push_back(entryJson(name, info));
  Reply reply;
  reply.body = json{{"version", index.version}, {"certs", std::move(certs)}};
  reply.headers.emplace_back("ETag", etagOf(index.version));
  return reply;
}

Reply SslRoutes::get(const std::string& name) {
  tls::CertIndex index;
  std::string err;
  if (!tls::readCertIndex(cfg_.http.admin.state_dir, &index, &err)) return errorReply(500, err);
  auto it = index.certs.find(name);
  if (it == index.certs.end()) return errorReply(404, "no certificate for \"" + name + "\"");
  return entryReply(200, name, it->second);
}

Reply SslRoutes::put(const AdminRequest& r, const std::string& name) {
  tls::StoredCert stored;
  Reply bad;
  if (!parseCertBody(r, &stored, &bad)) return bad;
  stored.name = name;
  std::string err;
  tls::CertKeyPtr ck = tls::CertKey::fromPem(stored.cert, stored.key, &err);
  if (!ck) return errorReply(400, err, err.rfind("no certificate", 0) == 0 ? "cert" : "key");

  const std::string& dir = cfg_.http.admin.state_dir;
  IndexChange change(dir);
  if (!change.ok()) return errorReply(500, change.error());
  tls::CertIndex& index = change.index();
  auto it = index.certs.find(name);
  bool existed = it != index.certs.end();
  uint64_t replaced = existed ? it->second.version : 0;
  if (!ifMatchAllows(r.if_match, existed, replaced)) {
    return errorReply(409, "the certificate changed (If-Match does not match its ETag)");
  }
  tls::StoredCert current;
  if (existed && tls::readStoredCert(dir, replaced, &current, &err) && current.cert == stored.cert &&
      current.key == stored.key) {
    return entryReply(200, name, it->second);  // the same pair: nothing changes
  }
  uint64_t version = ++index.version;
  index.certs[name] = tls::StoredCertInfo::of(*ck, version, static_cast<int64_t>(core::wallMs()));
  std::string path = tls::certFilePath(dir, version);
  if (::mkdir(tls::certDir(dir).c_str(), 0700) != 0 && errno != EEXIST) {
    return errorReply(500, "mkdir() \"" + tls::certDir(dir) + "\" failed (" + strerror(errno) + ")");
  }
  if (!writeFileAtomic(path, stored.toJson(), &err)) return errorReply(500, "cannot persist the certificate: " + err);
  if (!change.commit(table_, replaced, &err)) {
    unlink(path.c_str());
    return errorReply(500, "cannot persist the certificate: " + err);
  }
  TG_LOG(LogLevel::kNotice, "admin: certificate for \"%s\" %s (version %llu, %s, sha256 %s)", name.c_str(),
         existed ? "replaced" : "added", static_cast<unsigned long long>(version), ck->keyType().c_str(),
         index.certs[name].sha256.c_str());
  return entryReply(existed ? 200 : 201, name, index.certs[name]);
}

Reply SslRoutes::remove(const AdminRequest& r, const std::string& name) {
  IndexChange change(cfg_.http.admin.state_dir);
  if (!change.ok()) return errorReply(500, change.error());
  tls::CertIndex& index = change.index();
  auto it = index.certs.find(name);
  if (it == index.certs.end()) return errorReply(404, "no certificate for \"" + name + "\"");
  uint64_t replaced = it->second.version;
  if (!ifMatchAllows(r.if_match, true, replaced)) {
    return errorReply(409, "the certificate changed (If-Match does not match its ETag)");
  }
  index.certs.erase(it);
  index.version++;
  std::string err;
  if (!change.commit(table_, replaced, &err)) return errorReply(500, "cannot persist the delete: " + err);
  TG_LOG(LogLevel::kNotice, "admin: certificate for \"%s\" deleted", name.c_str());
  Reply reply;
  reply.body = json{{"deleted", name}};
  return reply;
}

}  // namespace tidegate::admin
