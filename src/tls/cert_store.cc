#include "tls/cert_store.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "conf/parser.h"
#include "http/ascii.h"

namespace tidegate::tls {
namespace {

using nlohmann::json;

std::string sha256Of(X509* cert) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(cert, EVP_sha256(), d, &n) != 1) return {};
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned int i = 0; i < n; i++) {
    out.push_back(kHex[d[i] >> 4]);
    out.push_back(kHex[d[i] & 15]);
  }
  return out;
}

bool validLabel(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  for (char c : label) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return label.front() != '-' && label.back() != '-';
}

bool parseInfo(const json& j, StoredCertInfo* out) {
  if (!j.is_object() || !j.contains("version") || !j["version"].is_number_unsigned()) return false;
  out->version = j["version"].get<uint64_t>();
  out->time_ms = j.value("time", int64_t{0});
  out->sha256 = j.value("sha256", "");
  out->key_type = j.value("key_type", "");
  out->not_after = j.value("not_after", int64_t{0});
  if (j.contains("dns_names") && j["dns_names"].is_array()) {
    for (const json& n : j["dns_names"]) {
      if (n.is_string()) out->dns_names.push_back(n.get<std::string>());
    }
  }
  return true;
}

}  // namespace

StoredCertInfo StoredCertInfo::of(const CertKey& ck, uint64_t version, int64_t time_ms) {
  StoredCertInfo info;
  info.version = version;
  info.time_ms = time_ms;
  info.sha256 = sha256Of(ck.cert());
  info.dns_names = ck.names();
  info.key_type = ck.keyType();
  info.not_after = ck.notAfter();
  return info;
}

std::string CertIndex::toJson() const {
  json certs_json = json::object();
  for (const auto& [name, c] : certs) {
    certs_json[name] = json{{"version", c.version}, {"time", c.time_ms},          {"sha256", c.sha256},
                            {"dns_names", c.dns_names}, {"key_type", c.key_type}, {"not_after", c.not_after}};
  }
  return json{{"version", version}, {"certs", certs_json}}.dump(1) + "\n";
}

std::string StoredCert::toJson() const { return json{{"name", name}, {"cert", cert}, {"key", key}}.dump() + "\n"; }

std::string certDir(const std::string& state_dir) { return state_dir + "/ssl"; }

std::string certFilePath(const std::string& state_dir, uint64_t version) {
  std::string path = certDir(state_dir);
  path.append("/").append(std::to_string(version)).append(".cert");
  return path;
}

bool readCertIndex(const std::string& state_dir, CertIndex* out, std::string* err) {
  *out = CertIndex();
  std::string path = certDir(state_dir) + "/index.json";
  if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) return true;
  std::string text;
  if (!conf::readFile(path, &text, err)) return false;
  json doc = json::parse(text, nullptr, false);
  if (!doc.is_object() || !doc.contains("certs") || !doc["certs"].is_object()) {
    *err = "\"" + path + "\" is not a tidegate certificate index";
    return false;
  }
  out->version = doc.value("version", uint64_t{0});
  for (const auto& [name, j] : doc["certs"].items()) {
    StoredCertInfo info;
    if (!parseInfo(j, &info)) {
      *err = "\"" + path + "\": entry \"" + name + "\" has no version";
      return false;
    }
    out->certs.emplace(name, std::move(info));
  }
  return true;
}

bool readStoredCert(const std::string& state_dir, uint64_t version, StoredCert* out, std::string* err) {
  std::string path = certFilePath(state_dir, version);
  std::string text;
  if (!conf::readFile(path, &text, err)) return false;
  json doc = json::parse(text, nullptr, false);
  if (!doc.is_object() || !doc["name"].is_string() || !doc["cert"].is_string() || !doc["key"].is_string()) {
    *err = "\"" + path + "\" is not a tidegate certificate file";
    return false;
  }
  out->name = doc["name"].get<std::string>();
  out->cert = doc["cert"].get<std::string>();
  out->key = doc["key"].get<std::string>();
  return true;
}

bool normalizeCertName(std::string_view name, std::string* out, std::string* err) {
  out->assign(name);
  for (char& c : *out) c = http::asciiLower(c);
  std::string_view rest = *out;
  bool wildcard = rest.substr(0, 2) == "*.";
  if (wildcard) rest.remove_prefix(2);
  bool ok = !rest.empty() && out->size() <= 253;
  size_t i = 0;
  while (ok && i <= rest.size()) {
    size_t dot = rest.find('.', i);
    if (dot == std::string_view::npos) dot = rest.size();
    ok = validLabel(rest.substr(i, dot - i));
    i = dot + 1;
  }
  if (!ok) {
    *err = "invalid server name \"" + std::string(name) +
           "\" (a host name, or \"*.\" and one: labels of letters, digits, '-' and '_')";
  }
  return ok;
}

std::string wildcardFor(std::string_view host) {
  size_t dot = host.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot + 1 >= host.size()) return {};
  std::string out = "*";
  out.append(host.substr(dot));
  return out;
}

}  // namespace tidegate::tls
