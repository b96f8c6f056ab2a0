#include "proxy/upstreams.h"

#include "conf/directives.h"
#include "core/log.h"

namespace tidegate::proxy {
namespace {

using core::LogLevel;

std::unique_ptr<UpstreamRuntime> build(const std::string& name, std::shared_ptr<const conf::UpstreamConf> uc) {
  auto rt = std::make_unique<UpstreamRuntime>();
  rt->name = name;
  upstream::BalancerOptions options;
  std::vector<upstream::Peer> peers;
  if (uc) {
    options.fail_open = uc->fail_open;
    options.tier_min_healthy = uc->tier_min_healthy;
    rt->keepalive = uc->keepalive;
    rt->keepalive_timeout_ms = uc->keepalive_timeout_ms;
    rt->keepalive_requests = uc->keepalive_requests;
    for (const conf::UpstreamServer& s : uc->servers) {
      // A name that resolved to several addresses is several peers, as in nginx.
      for (const std::string& a : s.addresses) {
        UpstreamRuntime::PeerInfo info;
        if (!parsePeerAddress(a, &info.addr)) continue;
        info.max_fails = s.max_fails;
        info.fail_timeout_ms = s.fail_timeout_ms;
        upstream::Peer p;
        size_t colon = a.rfind(':');
        p.host = a.substr(0, colon);
        p.port = static_cast<uint16_t>(std::stoi(a.substr(colon + 1)));
        p.weight = s.weight;
        p.tier = s.tier != 0 ? s.tier : (s.backup ? 1 : 0);
        p.down = s.down;
        peers.push_back(std::move(p));
        rt->peers.push_back(std::move(info));
      }
    }
  }
  rt->balancer = upstream::makeBalancer(uc ? uc->balancer : "round_robin", options);
  if (!rt->balancer) {
    TG_LOG(LogLevel::kError, "upstream \"%s\": unknown balancer \"%s\", using round_robin", name.c_str(),
           uc->balancer.c_str());
    rt->balancer = upstream::makeBalancer("round_robin", options);
  }
  rt->conf = std::move(uc);
  rt->balancer->rebuild(std::move(peers));
  return rt;
}

}  // namespace

void UpstreamRuntime::refreshHealth(uint64_t now_ms) {
  if (down_count == 0) return;
  for (size_t i = 0; i < peers.size(); i++) {
    PeerInfo& p = peers[i];
    if (p.down_until_ms == 0 || p.down_until_ms > now_ms) continue;
    p.down_until_ms = 0;
    p.fails = 0;
    p.window_start_ms = now_ms;
    down_count--;
    balancer->markHealthy(i, true);
  }
}

bool UpstreamRuntime::reportFailure(size_t i, uint64_t now_ms) {
  if (i >= peers.size()) return false;
  PeerInfo& p = peers[i];
  if (p.max_fails == 0 || p.down_until_ms != 0) return false;
  if (now_ms - p.window_start_ms > p.fail_timeout_ms) {
    p.fails = 0;
    p.window_start_ms = now_ms;
  }
  if (++p.fails < p.max_fails) return false;
  p.down_until_ms = now_ms + (p.fail_timeout_ms > 0 ? p.fail_timeout_ms : 1);
  down_count++;
  balancer->markHealthy(i, false);
  return true;
}

Upstreams::Upstreams(const conf::Config& cfg) {
  for (const auto& uc : cfg.http.upstreams) named_[conf::lowerCase(uc->name)] = build(uc->name, uc);
}

UpstreamRuntime* Upstreams::find(std::string_view name) {
  auto it = named_.find(conf::lowerCase(std::string(name)));
  return it == named_.end() ? nullptr : it->second.get();
}

UpstreamRuntime* Upstreams::implicit(const std::string& key, const std::vector<std::string>& addresses) {
  auto it = implicit_.find(key);
  if (it != implicit_.end()) return it->second.get();
  auto uc = std::make_shared<conf::UpstreamConf>();
  uc->name = key;
  conf::UpstreamServer s;
  s.addresses = addresses;
  uc->servers.push_back(std::move(s));
  auto rt = build(key, std::move(uc));
  UpstreamRuntime* raw = rt.get();
  implicit_.emplace(key, std::move(rt));
  return raw;
}

}  // namespace tidegate::proxy
