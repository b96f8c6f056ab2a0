#include "proxy/upstreams.h"

#include "conf/directives.h"
#include "core/log.h"
#include "upstream/upstream_json.h"

namespace tidegate::proxy {
namespace {

using core::LogLevel;

upstream::BalancerOptions optionsOf(const conf::UpstreamConf& uc) {
  upstream::BalancerOptions options;
  options.fail_open = uc.fail_open;
  options.tier_min_healthy = uc.tier_min_healthy;
  return options;
}

}  // namespace

size_t UpstreamRuntime::indexNow(size_t index, uint64_t gen, const std::string& id) const {
  if (gen == generation) return index;
  std::optional<size_t> now = balancer->indexOf(id);
  return now ? *now : std::string::npos;
}

Upstreams::Upstreams(const conf::Config& cfg, shm::UpstreamTable& table) : cfg_(cfg), table_(table) { resync(); }

void Upstreams::build(UpstreamRuntime& rt, std::shared_ptr<const conf::UpstreamConf> uc) {
  std::vector<upstream::Peer> peers;
  std::vector<UpstreamRuntime::PeerInfo> infos;
  for (const conf::UpstreamServer& s : uc->servers) {
    // A name that resolved to several addresses is several peers, as in nginx.
    for (const std::string& a : s.addresses) {
      UpstreamRuntime::PeerInfo info;
      if (!parsePeerAddress(a, &info.addr)) continue;
      info.max_fails = s.max_fails;
      info.fail_timeout_ms = s.fail_timeout_ms;
      info.conf_down = s.down;
      upstream::Peer p;
      size_t colon = a.rfind(':');
      p.host = a.substr(0, colon);
      p.port = static_cast<uint16_t>(std::stoi(a.substr(colon + 1)));
      p.weight = s.weight;
      p.tier = s.tier;
      p.down = s.down;
      peers.push_back(std::move(p));
      infos.push_back(std::move(info));
    }
  }
  // A balancer of the same type and options keeps its servers' state
  // across the rebuild (weights, in-flight counts, latency).
  bool same = rt.balancer && rt.conf && rt.conf->balancer == uc->balancer && rt.conf->fail_open == uc->fail_open &&
              rt.conf->tier_min_healthy == uc->tier_min_healthy;
  if (!same) {
    // A Lua balancer module picks in front of round robin (the fallback).
    rt.balancer = upstream::makeBalancer(uc->balancer == "lua" ? "round_robin" : uc->balancer, optionsOf(*uc));
    if (!rt.balancer) {
      TG_LOG(LogLevel::kError, "upstream \"%s\": unknown balancer \"%s\", using round_robin", rt.name.c_str(),
             uc->balancer.c_str());
      rt.balancer = upstream::makeBalancer("round_robin", optionsOf(*uc));
    }
  }
  if (uc->balancer != "lua") rt.lua_balancer.reset();  // (a lua one is remade on its next pick)
  rt.keepalive = uc->keepalive;
  rt.keepalive_timeout_ms = uc->keepalive_timeout_ms;
  rt.keepalive_requests = uc->keepalive_requests;
  rt.pool_limits.conns = uc->pool_conns;
  rt.pool_limits.wait_ms = uc->pool_wait_ms;
  rt.peers = std::move(infos);
  rt.conf = std::move(uc);
  rt.generation++;
  rt.balancer->rebuild(std::move(peers));
}

void Upstreams::resync() {
  std::vector<shm::UpstreamTable::Entry> entries;
  seen_ = table_.list(&entries, [this](std::string_view name) -> uint64_t {
    auto it = named_.find(conf::lowerCase(std::string(name)));
    return it == named_.end() ? 0 : it->second->version;
  });
  std::unordered_map<std::string, std::shared_ptr<UpstreamRuntime>> next;
  for (shm::UpstreamTable::Entry& e : entries) {
    std::string key = conf::lowerCase(e.name);
    auto it = named_.find(key);
    std::shared_ptr<UpstreamRuntime> rt = it == named_.end() ? nullptr : it->second;
    if (!rt || rt->version != e.version) {
      auto uc = std::make_shared<conf::UpstreamConf>();
      std::string origin, err, field;
      if (!upstream::upstreamFromJson(e.spec, uc.get(), &origin, &cfg_.http.variables, &err, &field)) {
        // Written by us after validation: only a conf whose variables
        // differ from the writer's can get here (a key naming a `set`
        // variable this worker's conf lacks).
        TG_LOG(LogLevel::kError, "upstream \"%s\" ignored by this worker: %s", e.name.c_str(), err.c_str());
        if (rt) next.emplace(key, rt);
        continue;
      }
      if (!rt) {
        rt = std::make_shared<UpstreamRuntime>();
        rt->name = uc->name.empty() ? e.name : uc->name;
      }
      rt->balancer_lua = nullptr;
      for (const auto& c : cfg_.http.upstreams) {
        if (conf::lowerCase(c->name) == key && !c->balancer_lua.empty()) rt->balancer_lua = &c->balancer_lua;
      }
      rt->version = e.version;
      build(*rt, std::move(uc));
    }
    next.emplace(std::move(key), std::move(rt));
  }
  named_ = std::move(next);  // a removed upstream lives on in the tries that hold it
  last_name_.clear();
  last_found_.reset();
  int64_t now = table_.nowMs();
  next_expiry_ = 0;
  for (auto& [k, rt] : named_) applyHealth(*rt, now);
  for (auto& [k, rt] : implicit_) applyHealth(*rt, now);
}

void Upstreams::applyHealth(UpstreamRuntime& rt, int64_t now_ms) {
  ids_.clear();
  for (const UpstreamRuntime::PeerInfo& p : rt.peers) ids_.push_back(p.addr.text);
  table_.health(rt.name, ids_, &health_);
  // set_down works like the `down` flag (never chosen, not even by
  // fail_open), which the balancer holds per peer: a change rebuilds it.
  bool down_changed = false;
  for (size_t i = 0; i < rt.peers.size(); i++) {
    bool down = rt.peers[i].conf_down || health_[i].manual_down;
    down_changed = down_changed || rt.balancer->peer(i).down != down;
  }
  if (down_changed) {
    std::vector<upstream::Peer> peers;
    for (size_t i = 0; i < rt.peers.size(); i++) {
      upstream::Peer p = rt.balancer->peer(i);
      p.down = rt.peers[i].conf_down || health_[i].manual_down;
      peers.push_back(std::move(p));
    }
    rt.balancer->rebuild(std::move(peers));
  }
  for (size_t i = 0; i < rt.peers.size(); i++) {
    const shm::ServerHealth& h = health_[i];
    rt.balancer->markHealthy(i, h.healthy(now_ms));
    if (h.passive_down_until > now_ms && (next_expiry_ == 0 || h.passive_down_until < next_expiry_)) {
      next_expiry_ = h.passive_down_until;
    }
  }
}

std::shared_ptr<UpstreamRuntime> Upstreams::find(std::string_view name) {
  if (last_found_ && name == last_name_) return last_found_;
  auto it = named_.find(conf::lowerCase(std::string(name)));
  if (it == named_.end()) return nullptr;
  last_name_.assign(name);
  last_found_ = it->second;
  return last_found_;
}

std::shared_ptr<UpstreamRuntime> Upstreams::implicit(const std::string& key, const std::vector<std::string>& addresses) {
  auto it = implicit_.find(key);
  if (it != implicit_.end()) return it->second;
  auto uc = std::make_shared<conf::UpstreamConf>();
  uc->name = key;
  conf::UpstreamServer s;
  s.addresses = addresses;
  uc->servers.push_back(std::move(s));
  auto rt = std::make_shared<UpstreamRuntime>();
  rt->name = key;
  rt->is_implicit = true;
  build(*rt, std::move(uc));
  applyHealth(*rt, table_.nowMs());
  implicit_.emplace(key, rt);
  return rt;
}

bool Upstreams::reportFailure(UpstreamRuntime& rt, const std::string& id, std::string_view error) {
  std::optional<size_t> i = rt.balancer->indexOf(id);
  if (!i) return false;
  const UpstreamRuntime::PeerInfo& p = rt.peers[*i];
  if (!table_.reportFailure(rt.name, id, p.max_fails, p.fail_timeout_ms, error)) return false;
  rt.balancer->markHealthy(*i, false);
  int64_t until = table_.nowMs() + static_cast<int64_t>(p.fail_timeout_ms > 0 ? p.fail_timeout_ms : 1);
  if (next_expiry_ == 0 || until < next_expiry_) next_expiry_ = until;
  return true;
}

}  // namespace tidegate::proxy
